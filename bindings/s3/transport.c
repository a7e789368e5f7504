/*
 * transport.c: the transfer engine of a client or a stage: requests on one
 * curl multi handle, attempts started when their backoff has passed,
 * finished ones sorted (outcome.c) and handed back in completion order.
 * Interruption (SIGINT, SIGTERM) stops every request but clean-up ones.
 */
#include "s3int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int s3_client_init(s3_client *c, s3_settings *set, pv_err *err)
{
    static bool global_done;
    if (!global_done) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        global_done = true;
    }
    memset(c, 0, sizeof *c);
    c->multi = curl_multi_init();
    if (!c->multi) {
        pv_err_set(err, "s3", "cannot create a libcurl multi handle");
        return -1;
    }
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 32L);
    c->set = s3_settings_ref(set);
    return 0;
}

void s3_client_close(s3_client *c)
{
    s3_cancel_all(c);
    if (c->multi) curl_multi_cleanup(c->multi);
    c->multi = NULL;
    free(c->live);
    c->live = NULL;
    c->nlive = c->caplive = 0;
    s3_settings_unref(c->set);
    c->set = NULL;
}

static void start_attempt(s3_client *c, s3_req *r)
{
    s3_attempt_prepare(c, r);
    curl_multi_add_handle(c->multi, r->easy);
    r->active = true;
}

void s3_submit(s3_client *c, s3_req *r)
{
    r->done = false;
    r->attempt = 0;
    r->not_before = 0;
    pv_err_clear(&r->err);
    if (c->nlive == c->caplive) {
        int cap = c->caplive ? c->caplive * 2 : 16;
        s3_req **v = realloc(c->live, (size_t)cap * sizeof *v);
        if (!v) abort();
        c->live = v;
        c->caplive = cap;
    }
    c->live[c->nlive++] = r;
    start_attempt(c, r);
}

static void unlive(s3_client *c, s3_req *r)
{
    for (int i = 0; i < c->nlive; i++) {
        if (c->live[i] == r) {
            c->live[i] = c->live[--c->nlive];
            return;
        }
    }
}

static void finish(s3_client *c, s3_req *r)
{
    r->done = true;
    unlive(c, r);
    r->next_done = NULL;
    s3_req **tail = &c->queue;
    while (*tail)
        tail = &(*tail)->next_done;
    *tail = r;
}

void s3_cancel_all(s3_client *c)
{
    for (int i = 0; i < c->nlive; i++) {
        s3_req *r = c->live[i];
        if (r->active && c->multi) curl_multi_remove_handle(c->multi, r->easy);
        r->active = false;
        r->done = true;
    }
    c->nlive = 0;
    c->queue = NULL;
}

/* A transfer finished: the request is done or waits for its next attempt. */
static void settle(s3_client *c, s3_req *r, CURLcode rc)
{
    r->active = false;
    curl_multi_remove_handle(c->multi, r->easy);
    bool retry;
    s3_outcome(c, r, rc, &retry);
    if (!retry) finish(c, r);
}

s3_req *s3_wait(s3_client *c, bool block, pv_err *err)
{
    for (;;) {
        if (c->queue) {
            s3_req *r = c->queue;
            c->queue = r->next_done;
            r->next_done = NULL;
            return r;
        }
        if (pv_interrupted()) {
            bool all_cleanup = true;
            for (int i = 0; i < c->nlive; i++)
                if (!c->live[i]->no_interrupt) all_cleanup = false;
            if (!all_cleanup || c->nlive == 0) {
                pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
                return NULL;
            }
        }
        double now = pv_now(), next = now + 0.1;
        for (int i = 0; i < c->nlive; i++) {
            s3_req *r = c->live[i];
            if (r->active) continue;
            if (r->not_before <= now)
                start_attempt(c, r);
            else if (r->not_before < next)
                next = r->not_before;
        }
        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            s3_req *r = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            if (r) settle(c, r, m->data.result);
        }
        if (c->queue) continue;
        if (!block) return NULL;
        if (c->nlive == 0) {
            pv_err_set(err, "internal", "s3: waiting with no request pending");
            return NULL;
        }
        int ms = (int)((next - pv_now()) * 1000);
        if (ms < 0) ms = 0;
        if (ms > 100) ms = 100;
        curl_multi_poll(c->multi, NULL, 0, ms, NULL);
    }
}

int s3_exec(s3_client *c, s3_req *r, pv_err *err)
{
    s3_submit(c, r);
    for (;;) {
        s3_req *d = s3_wait(c, true, err);
        if (!d) {
            s3_cancel_all(c);
            return -1;
        }
        if (d == r) break;
    }
    if (r->err.set) {
        *err = r->err;
        return -1;
    }
    return 0;
}

int s3_parse_url(const char *url, char **bucket, char **key, pv_err *err)
{
    *bucket = *key = NULL;
    if (strncmp(url, "s3://", 5) != 0) {
        pv_err_set(err, "usage", "'%s' is not an S3 address: write s3://BUCKET/KEY", url);
        return -1;
    }
    const char *b = url + 5;
    size_t n = strcspn(b, "/");
    if (n == 0 || n > 63) {
        pv_err_set(err, "usage", "'%s' has no valid bucket name: write s3://BUCKET/KEY", url);
        return -1;
    }
    *bucket = s3_xmalloc(n + 1);
    memcpy(*bucket, b, n);
    (*bucket)[n] = '\0';
    *key = s3_xstrdup(b[n] == '/' ? b + n + 1 : "");
    return 0;
}
