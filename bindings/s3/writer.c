/*
 * writer.c: the s3.writer sink. Bytes fill a part buffer; a full part is
 * sent as UploadPart (Content-MD5, ETag checked) while the next one fills,
 * up to `parallel` parts in flight through the client's curl multi handle,
 * so memory stays at (parallel + 1) x part size. finish() completes the
 * multipart upload (or sends one PutObject for a small object); abort()
 * aborts it, so nothing appears under the final name. With if_none_match
 * an existing object is never replaced (conditional.c).
 */
#include "s3int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MiB (1024u * 1024u)
#define MIN_PART (5u * MiB)
#define MAX_PART (5ull * 1024 * MiB)
#define MAX_PARTS 10000

typedef struct {
    uint8_t *buf;
    size_t cap, len;
    int number;
    uint8_t md5[16];
    s3_req *req;
} part_slot;

typedef struct {
    int number;
    uint8_t md5[16];
    char etag[128];
} part_done;

typedef struct {
    pv_stage base;
    s3_client client;
    bool client_ready;
    char *bucket, *key, *content_type;
    size_t part_size;
    long long expected;
    int parallel;
    part_slot *slots;
    int nslots;
    part_slot *filling;
    char *upload_id;
    int next_number;
    part_done *done;
    int ndone, capdone;
    bool completed, single;
    bool if_none_match; /* never replace an existing object */
    char etag[128];
    double t0, seconds;
} s3_writer;

/* Part size for part `number`: fixed when the size is known, doubling every
 * 1,000 parts for streams of unknown length (10,000 parts then reach
 * 1,023 x 1,000 first parts: 8 TiB with 8 MiB parts). */
size_t s3_part_size_for(size_t base, long long expected, int number)
{
    size_t size = base;
    if (expected < 0)
        for (int k = (number - 1) / 1000; k > 0 && size < MAX_PART; k--)
            size *= 2;
    return size > MAX_PART ? MAX_PART : size;
}

static size_t part_size_for(const s3_writer *w, int number)
{
    return s3_part_size_for(w->part_size, w->expected, number);
}

size_t s3_choose_part_size(long long expected, size_t wanted)
{
    size_t size = wanted < MIN_PART ? MIN_PART : wanted;
    if (expected > 0) {
        unsigned long long need = ((unsigned long long)expected + MAX_PARTS - 1) / MAX_PARTS;
        need = (need + MiB - 1) / MiB * MiB;
        if (need > size) size = need;
    }
    return size > MAX_PART ? MAX_PART : size;
}

static void where(const s3_writer *w, char *out, size_t outsz)
{
    snprintf(out, outsz, "s3://%s/%s", w->bucket, w->key);
}

static int record_part(s3_writer *w, part_slot *s, pv_err *err)
{
    s3_req *r = s->req;
    char url[1200];
    where(w, url, sizeof url);
    if (r->err.set) {
        *err = r->err;
        return -1;
    }
    char want[33], got[128];
    pv_hex(s->md5, 16, want);
    const char *e = r->etag;
    size_t n = strlen(e);
    if (n >= 2 && e[0] == '"' && e[n - 1] == '"') e++, n -= 2;
    snprintf(got, sizeof got, "%.*s", (int)n, e);
    if (n == 32 && strspn(got, "0123456789abcdefABCDEF") == 32 && strcasecmp(got, want) != 0) {
        pv_err_set(err, "s3",
                   "part %d of %s was stored with MD5 %s but %s was sent: the data was damaged "
                   "in transit",
                   s->number, url, got, want);
        return -1;
    }
    if (w->ndone == w->capdone) {
        int cap = w->capdone ? w->capdone * 2 : 64;
        part_done *v = realloc(w->done, (size_t)cap * sizeof *v);
        if (!v) abort();
        w->done = v;
        w->capdone = cap;
    }
    part_done *d = &w->done[w->ndone++];
    d->number = s->number;
    memcpy(d->md5, s->md5, 16);
    snprintf(d->etag, sizeof d->etag, "%s", r->etag[0] ? r->etag : "");
    s3_req_free(r);
    s->req = NULL;
    s->len = 0;
    return 0;
}

static part_slot *slot_of(s3_writer *w, s3_req *r)
{
    for (int i = 0; i < w->nslots; i++)
        if (w->slots[i].req == r) return &w->slots[i];
    return NULL;
}

/* Collects finished parts; blocks until one finishes when `block`. */
static int harvest(s3_writer *w, bool block, pv_err *err)
{
    for (;;) {
        pv_err werr;
        pv_err_clear(&werr);
        s3_req *r = s3_wait(&w->client, block, &werr);
        if (!r) {
            if (werr.set) {
                *err = werr;
                return -1;
            }
            return 0;
        }
        part_slot *s = slot_of(w, r);
        if (!s) continue;
        if (record_part(w, s, err) < 0) return -1;
        if (block) return 0;
    }
}

static int in_flight(const s3_writer *w)
{
    int n = 0;
    for (int i = 0; i < w->nslots; i++)
        if (w->slots[i].req) n++;
    return n;
}

static int send_part(s3_writer *w, part_slot *s, pv_err *err)
{
    if (s->number > MAX_PARTS) {
        pv_err_set(err, "s3", "more than %d parts: the object is too large for part size %zu",
                   MAX_PARTS, w->part_size);
        return -1;
    }
    char q[700];
    s3_buf id = {0};
    s3_uri_encode(&id, w->upload_id, strlen(w->upload_id), false);
    snprintf(q, sizeof q, "partNumber=%d&uploadId=%s", s->number, s3_buf_str(&id));
    s3_buf_free(&id);
    s->req = s3_req_new("PUT", "UploadPart", w->bucket, w->key, q);
    s3_req_body(s->req, s->buf, s->len, true);
    memcpy(s->md5, s->req->md5, sizeof s->md5);
    s3_submit(&w->client, s->req);
    (void)err;
    return 0;
}

static part_slot *free_slot(s3_writer *w, pv_err *err)
{
    for (;;) {
        for (int i = 0; i < w->nslots; i++)
            if (!w->slots[i].req && &w->slots[i] != w->filling) return &w->slots[i];
        if (harvest(w, true, err) < 0) return NULL;
    }
}

static int create_upload(s3_writer *w, pv_err *err)
{
    s3_req *r = s3_req_new("POST", "CreateMultipartUpload", w->bucket, w->key, "uploads=");
    if (w->content_type) s3_headers_add(&r->extra, "Content-Type", w->content_type);
    int rc = s3_exec(&w->client, r, err);
    if (rc == 0) {
        s3_xml *x = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, err);
        const char *id = x ? s3_xml_text(x, "UploadId") : NULL;
        if (id && *id) {
            w->upload_id = s3_xstrdup(id);
            pv_log(PV_LOG_DEBUG, "s3: multipart upload %s started for s3://%s/%s", id, w->bucket,
                   w->key);
        } else {
            if (x) pv_err_set(err, "s3", "CreateMultipartUpload answered without an UploadId");
            rc = -1;
        }
        s3_xml_free(x);
    }
    s3_req_free(r);
    return rc;
}

static int writer_start(pv_stage *st, pv_err *err)
{
    s3_writer *w = (s3_writer *)st;
    w->t0 = pv_now();
    w->nslots = w->parallel + 1;
    w->slots = calloc((size_t)w->nslots, sizeof *w->slots);
    if (!w->slots) abort();
    w->filling = &w->slots[0];
    w->next_number = 1;
    w->single = w->expected >= 0 && (unsigned long long)w->expected <= w->part_size;
    /* The multipart upload is created when the first part is full: an
     * object smaller than one part is a single PutObject. A taken name
     * fails now, before anything is sent (and again at the final write). */
    if (w->if_none_match) return s3_check_free(&w->client, w->bucket, w->key, err);
    return 0;
}

static int writer_write(pv_stage *st, const uint8_t *data, size_t len, pv_err *err)
{
    s3_writer *w = (s3_writer *)st;
    while (len > 0) {
        part_slot *s = w->filling;
        size_t size = part_size_for(w, w->next_number);
        if (s->cap < size) {
            uint8_t *nb = realloc(s->buf, size);
            if (!nb) {
                pv_err_set(err, "s3", "out of memory for a %zu-byte part", size);
                return -1;
            }
            s->buf = nb;
            s->cap = size;
        }
        size_t n = size - s->len < len ? size - s->len : len;
        memcpy(s->buf + s->len, data, n);
        s->len += n;
        data += n;
        len -= n;
        if (s->len == size && !w->single) {
            if (!w->upload_id && create_upload(w, err) < 0) return -1;
            /* never more than `parallel` parts in flight */
            while (in_flight(w) >= w->parallel)
                if (harvest(w, true, err) < 0) return -1;
            s->number = w->next_number++;
            if (send_part(w, s, err) < 0) return -1;
            part_slot *next = free_slot(w, err);
            if (!next) return -1;
            w->filling = next;
        } else if (s->len == size && w->single) {
            pv_err_set(err, "s3", "more bytes than the expected size of %lld", w->expected);
            return -1;
        }
    }
    if (in_flight(w) > 0 && harvest(w, false, err) < 0) return -1;
    return 0;
}

static int compare_parts(const void *a, const void *b)
{
    return ((const part_done *)a)->number - ((const part_done *)b)->number;
}

static int put_single(s3_writer *w, pv_err *err)
{
    part_slot *s = w->filling;
    s3_req *r = s3_req_new("PUT", "PutObject", w->bucket, w->key, NULL);
    if (w->content_type) s3_headers_add(&r->extra, "Content-Type", w->content_type);
    s3_req_body(r, s->buf, s->len, true);
    int rc = s3_final_write(&w->client, r, w->if_none_match, err);
    if (rc == 0) {
        char want[33];
        pv_hex(r->md5, 16, want);
        snprintf(w->etag, sizeof w->etag, "%s", r->etag);
        char got[128];
        snprintf(got, sizeof got, "%s", r->etag[0] == '"' ? r->etag + 1 : r->etag);
        got[strcspn(got, "\"")] = '\0';
        if (strlen(got) == 32 && strcasecmp(got, want) != 0) {
            pv_err_set(err, "s3", "s3://%s/%s was stored with MD5 %s but %s was sent", w->bucket,
                       w->key, got, want);
            rc = -1;
        }
    }
    s3_req_free(r);
    return rc;
}

/* Deletes what a completed upload left under the final name when it
 * turned out wrong: nothing bad may stay where a good backup is expected. */
static void remove_object(s3_writer *w)
{
    s3_req *r = s3_req_new("DELETE", "DeleteObject", w->bucket, w->key, NULL);
    r->no_interrupt = true;
    r->ok_status[0] = 404;
    pv_err derr;
    pv_err_clear(&derr);
    if (s3_exec(&w->client, r, &derr) < 0)
        pv_log(PV_LOG_ERROR,
               "s3: could not remove the damaged object s3://%s/%s: %s; delete it by hand",
               w->bucket, w->key, derr.message);
    s3_req_free(r);
}

/* The ETag of the object under the final name. */
static int head_etag(s3_writer *w, char *out, size_t outsz, pv_err *err)
{
    s3_req *r = s3_req_new("HEAD", "HeadObject", w->bucket, w->key, NULL);
    int rc = s3_exec(&w->client, r, err);
    if (rc == 0) snprintf(out, outsz, "%s", r->etag);
    s3_req_free(r);
    return rc;
}

static int complete_upload(s3_writer *w, pv_err *err)
{
    qsort(w->done, (size_t)w->ndone, sizeof *w->done, compare_parts);
    s3_buf body = {0};
    s3_buf_adds(&body,
                "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    uint8_t *all = s3_xmalloc((size_t)w->ndone * 16);
    for (int i = 0; i < w->ndone; i++) {
        s3_buf_addf(&body, "<Part><PartNumber>%d</PartNumber><ETag>", w->done[i].number);
        s3_xml_escape(&body, w->done[i].etag);
        s3_buf_adds(&body, "</ETag></Part>");
        memcpy(all + 16 * i, w->done[i].md5, 16);
    }
    s3_buf_adds(&body, "</CompleteMultipartUpload>");
    uint8_t md5[16];
    s3_md5(all, (size_t)w->ndone * 16, md5);
    free(all);
    char want[48];
    pv_hex(md5, 16, want);
    snprintf(want + 32, sizeof want - 32, "-%d", w->ndone);

    s3_buf id = {0}, q = {0};
    s3_uri_encode(&id, w->upload_id, strlen(w->upload_id), false);
    s3_buf_addf(&q, "uploadId=%s", s3_buf_str(&id));
    s3_req *r = s3_req_new("POST", "CompleteMultipartUpload", w->bucket, w->key, s3_buf_str(&q));
    s3_headers_add(&r->extra, "Content-Type", "application/xml");
    s3_req_body(r, (const uint8_t *)body.p, body.len, true);
    int rc = s3_final_write(&w->client, r, w->if_none_match, err);
    if (rc == 0) {
        /* Completed: there is no upload left to abort, whatever follows. */
        free(w->upload_id);
        w->upload_id = NULL;
        s3_xml *x = s3_xml_parse(r->resp.p ? r->resp.p : "", r->resp.len, err);
        const char *etag = x ? s3_xml_text(x, "ETag") : NULL;
        char stored[128] = "";
        if (!x) rc = -1;
        if (x && (!etag || !*etag)) {
            /* RGW answers with an empty ETag; the object's own has it. */
            if (head_etag(w, stored, sizeof stored, err) < 0) rc = -1;
            etag = rc == 0 ? stored : NULL;
        }
        if (etag) {
            snprintf(w->etag, sizeof w->etag, "%s", etag);
            char got[128];
            snprintf(got, sizeof got, "%s", etag[0] == '"' ? etag + 1 : etag);
            got[strcspn(got, "\"")] = '\0';
            if (strchr(got, '-') && strcasecmp(got, want) != 0) {
                pv_err_set(err, "s3",
                           "s3://%s/%s was assembled as %s, but the parts sent make %s: the "
                           "server combined other parts; the object was removed",
                           w->bucket, w->key, got, want);
                rc = -1;
                remove_object(w);
            }
        }
        s3_xml_free(x);
    }
    s3_req_free(r);
    s3_buf_free(&body);
    s3_buf_free(&id);
    s3_buf_free(&q);
    return rc;
}

static int abort_upload(s3_writer *w)
{
    if (!w->upload_id) return 0;
    s3_buf id = {0}, q = {0};
    s3_uri_encode(&id, w->upload_id, strlen(w->upload_id), false);
    s3_buf_addf(&q, "uploadId=%s", s3_buf_str(&id));
    s3_req *r = s3_req_new("DELETE", "AbortMultipartUpload", w->bucket, w->key, s3_buf_str(&q));
    r->no_interrupt = true;
    r->ok_status[0] = 404; /* already gone */
    pv_err err;
    pv_err_clear(&err);
    int rc = s3_exec(&w->client, r, &err);
    if (rc < 0)
        pv_log(PV_LOG_ERROR,
               "s3: could not abort multipart upload %s of s3://%s/%s: %s; remove it with "
               "'pgvault s3 cleanup s3://%s/'",
               w->upload_id, w->bucket, w->key, err.message, w->bucket);
    else
        pv_log(PV_LOG_INFO, "s3: aborted multipart upload of s3://%s/%s", w->bucket, w->key);
    s3_req_free(r);
    s3_buf_free(&id);
    s3_buf_free(&q);
    free(w->upload_id);
    w->upload_id = NULL;
    return rc;
}

static int writer_finish(pv_stage *st, pv_err *err)
{
    s3_writer *w = (s3_writer *)st;
    part_slot *s = w->filling;
    if (w->single || (w->ndone == 0 && in_flight(w) == 0)) {
        /* Everything fits in one request: no multipart upload needed. */
        if (w->upload_id && abort_upload(w) < 0) {
            pv_err_set(err, "s3", "could not abort the unneeded multipart upload");
            return -1;
        }
        if (put_single(w, err) < 0) return -1;
    } else {
        if (s->len > 0) {
            while (in_flight(w) >= w->parallel)
                if (harvest(w, true, err) < 0) return -1;
            s->number = w->next_number++;
            if (send_part(w, s, err) < 0) return -1;
            w->filling = NULL;
        }
        while (in_flight(w) > 0)
            if (harvest(w, true, err) < 0) return -1;
        if (complete_upload(w, err) < 0) return -1;
        free(w->upload_id);
        w->upload_id = NULL;
    }
    w->completed = true;
    w->seconds = pv_now() - w->t0;
    return 0;
}

static void writer_abort(pv_stage *st)
{
    s3_writer *w = (s3_writer *)st;
    if (!w->client_ready || w->completed) return;
    s3_cancel_all(&w->client);
    for (int i = 0; i < w->nslots; i++) {
        s3_req_free(w->slots[i].req);
        w->slots[i].req = NULL;
    }
    abort_upload(w);
    w->seconds = pv_now() - w->t0;
}

static int writer_report(pv_stage *st, lua_State *L)
{
    s3_writer *w = (s3_writer *)st;
    lua_createtable(L, 0, 8);
    char url[1200];
    where(w, url, sizeof url);
    pv_set_str(L, "url", url);
    pv_set_int(L, "bytes", (lua_Integer)st->bytes_in);
    pv_set_int(L, "parts", w->completed && !w->ndone ? 1 : w->ndone);
    pv_set_bool(L, "multipart", w->ndone > 0);
    pv_set_int(L, "part_size", (lua_Integer)w->part_size);
    pv_set_str(L, "etag", w->etag);
    pv_set_bool(L, "committed", w->completed);
    pv_set_num(L, "seconds", w->seconds);
    return 1;
}

static void writer_release(pv_stage *st)
{
    s3_writer *w = (s3_writer *)st;
    if (w->client_ready) {
        writer_abort(st);
        s3_client_close(&w->client);
        w->client_ready = false;
    }
    for (int i = 0; i < w->nslots; i++)
        free(w->slots[i].buf);
    free(w->slots);
    w->slots = NULL;
    w->nslots = 0;
    free(w->done);
    w->done = NULL;
    free(w->bucket);
    free(w->key);
    free(w->content_type);
    free(w->upload_id);
    w->bucket = w->key = w->content_type = w->upload_id = NULL;
}

static const pv_stage_ops writer_ops = {.name = "s3",
                                        .start = writer_start,
                                        .write = writer_write,
                                        .finish = writer_finish,
                                        .abort = writer_abort,
                                        .report = writer_report,
                                        .release = writer_release};

/* writer{url=, part_size=, parallel=, expected_size=, content_type=,
 * if_none_match=} on the settings of a client */
int s3_push_writer(lua_State *L, s3_settings *set)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *url = pv_opt_str(L, 1, "url", NULL);
    if (!url) return luaL_argerror(L, 1, "url = \"s3://bucket/key\" is required");
    lua_Integer part = pv_opt_int(L, 1, "part_size", 8 * MiB);
    lua_Integer parallel = pv_opt_int(L, 1, "parallel", 4);
    lua_Integer expected = pv_opt_int(L, 1, "expected_size", -1);
    if (part < (lua_Integer)MIN_PART || (unsigned long long)part > MAX_PART)
        return luaL_argerror(L, 1, "part_size must be between 5 MiB and 5 GiB");
    if (parallel < 1 || parallel > 64) return luaL_argerror(L, 1, "parallel must be 1 to 64");
    const char *ctype = pv_opt_str(L, 1, "content_type", NULL);
    bool if_none_match = pv_opt_bool(L, 1, "if_none_match", false);
    s3_writer *w = pv_stage_new(L, &writer_ops, sizeof *w, 1);
    w->if_none_match = if_none_match;
    pv_err err;
    pv_err_clear(&err);
    if (s3_parse_url(url, &w->bucket, &w->key, &err) < 0) return pv_err_raise(L, &err);
    const char *key = w->key;
    if (!key[0] || key[strlen(key) - 1] == '/')
        return luaL_argerror(L, 1, "the url must name an object: s3://bucket/key");
    w->expected = expected;
    w->part_size = s3_choose_part_size(expected, (size_t)part);
    w->parallel = (int)parallel;
    if (ctype) w->content_type = s3_xstrdup(ctype);
    if (s3_client_init(&w->client, set, &err) < 0) return pv_err_raise(L, &err);
    w->client_ready = true;
    return 1;
}
