/*
 * session.c: what a session of archive.restorer does with a job (session.h):
 * a table's COPY text into COPY ... FROM STDIN, INSERT statements run as
 * they complete, large objects' records into lo_open / lo_write / lo_close
 * in a transaction, each through the session's libpq connection
 * (bindings/pg/load.c) as the bytes arrive in the spill.
 */
#include "session.h"

#include <stdio.h>
#include <string.h>

/* Where a session is in a large objects' job. */
typedef struct {
    uint8_t head[5];
    int have;
    uint32_t left; /* bytes of the current write still to come */
} lo_reader;

void ar_err_prefix(pv_err *err, const char *what)
{
    char msg[sizeof err->message];
    size_t k = (size_t)snprintf(msg, sizeof msg, "%s: ", what);
    if (k < sizeof msg)
        snprintf(msg + k, sizeof msg - k, "%.*s", (int)(sizeof msg - k - 1), err->message);
    memcpy(err->message, msg, sizeof msg);
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Large objects' records as they arrive, cut anywhere. */
static int lo_feed(pg_load *l, lo_reader *lr, const uint8_t *d, size_t n, pv_err *err)
{
    while (n > 0) {
        if (lr->left > 0) {
            size_t k = n < lr->left ? n : lr->left;
            if (pg_load_lo_write(l, d, k, err) < 0) return -1;
            d += k;
            n -= k;
            lr->left -= (uint32_t)k;
            continue;
        }
        lr->head[lr->have++] = *d++;
        n--;
        if (lr->have < (lr->head[0] == LO_CLOSE ? 1 : 5)) continue;
        lr->have = 0;
        int rc = 0;
        if (lr->head[0] == LO_OPEN) {
            rc = pg_load_lo_open(l, le32(lr->head + 1), err);
        } else if (lr->head[0] == LO_WRITE) {
            lr->left = le32(lr->head + 1);
        } else {
            rc = pg_load_lo_close(l, err);
        }
        if (rc < 0) return -1;
    }
    return 0;
}

static int begin_job(pg_load *l, sp_job *j, pv_err *err)
{
    if (j->kind == JOB_COPY) return pg_load_copy_begin(l, j->sql, err);
    return j->kind == JOB_LO ? pg_load_exec(l, "BEGIN", err) : 0;
}

static int feed_job(pg_load *l, sp_job *j, bool std_strings, lo_reader *lr, const uint8_t *d,
                    size_t n, pv_err *err)
{
    if (j->kind == JOB_COPY) return pg_load_copy_data(l, d, n, err);
    if (j->kind == JOB_SQL) return pg_load_sql(l, d, n, std_strings, err);
    return lo_feed(l, lr, d, n, err);
}

static int end_job(pg_load *l, sp_job *j, pv_err *err)
{
    if (j->kind == JOB_COPY) return pg_load_copy_end(l, NULL, err);
    if (j->kind == JOB_SQL) return pg_load_sql_end(l, err);
    return pg_load_exec(l, "COMMIT", err);
}

int ar_load_job(sp_spill *sp, pg_load *l, sp_job *j, bool std_strings, pv_err *err)
{
    lo_reader lr = {{0}, 0, 0};
    int rc = l ? begin_job(l, j, err) : 0;
    while (rc == 0) {
        const uint8_t *data;
        size_t len;
        int k = sp_peek(sp, j, &data, &len);
        if (k < 0) return -1;
        if (k == 0) {
            rc = l ? end_job(l, j, err) : 0;
            break;
        }
        if (l) rc = feed_job(l, j, std_strings, &lr, data, len, err);
        sp_consumed(sp, j, len);
    }
    if (rc < 0 && err->set) {
        char what[200];
        snprintf(what, sizeof what, "loading %s", j->name);
        ar_err_prefix(err, what);
    }
    return rc;
}
