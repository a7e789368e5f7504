/*
 * conditional.c: writes that never replace an object. S3 (since 2024),
 * RGW and others refuse a PutObject carrying If-None-Match: * when the key
 * exists (412 PreconditionFailed); AWS also honours it on
 * CompleteMultipartUpload, RGW 16 ignores it there, and some servers
 * answer it with 501 NotImplemented. So a final write is preceded by a
 * HEAD, and carries the header unless the server refused it once: the
 * HEAD covers servers that ignore the header, the header covers a race
 * with another writer after the HEAD.
 */
#include "s3int.h"

#include <stdio.h>
#include <string.h>

static void taken(pv_err *err, const char *bucket, const char *key)
{
    char url[1200];
    snprintf(url, sizeof url, "s3://%s/%s", bucket, key);
    pv_err_set(err, "exists",
               "%s already exists: nothing was overwritten; choose another name or remove it first",
               url);
    pv_err_str(err, "url", url);
}

int s3_check_free(s3_client *c, const char *bucket, const char *key, pv_err *err)
{
    s3_req *r = s3_req_new("HEAD", "HeadObject", bucket, key, NULL);
    r->ok_status[0] = 404;
    int rc = s3_exec(c, r, err);
    if (rc == 0 && r->status != 404) {
        taken(err, bucket, key);
        rc = -1;
    }
    s3_req_free(r);
    return rc;
}

int s3_final_write(s3_client *c, s3_req *r, bool if_none_match, pv_err *err)
{
    if (!if_none_match) return s3_exec(c, r, err);
    if (s3_check_free(c, r->bucket, r->key, err) < 0) return -1;
    if (c->set->no_conditional) return s3_exec(c, r, err);
    s3_headers_add(&r->extra, "If-None-Match", "*");
    r->ok_status[0] = 412;
    r->ok_status[1] = 501;
    int rc = s3_exec(c, r, err);
    r->ok_status[0] = r->ok_status[1] = 0;
    s3_headers_del(&r->extra, "If-None-Match");
    if (rc < 0) return -1;
    if (r->status == 412) {
        taken(err, r->bucket, r->key);
        return -1;
    }
    if (r->status == 501) {
        pv_log(PV_LOG_INFO,
               "s3: %s does not support If-None-Match; relying on a HEAD before each write",
               c->set->cfg.endpoint);
        c->set->no_conditional = true;
        return s3_exec(c, r, err);
    }
    return 0;
}
