/*
 * handoff.c: stream.handoff{buffers=32, size=64 KiB}, a thread boundary in a
 * pipeline. The stages before it run on the caller's thread; the stages
 * after it run on a thread of their own, fed through a ring of `buffers`
 * buffers of `size` bytes. Memory stays bounded (the ring), and the two
 * sides use two cores at once: a decompressor before it, a digest and the
 * archive parser after it, say. A failure after it reaches the writer at
 * its next write, as the same error.
 *
 * An abort stops the thread between buffers and joins it before the stages
 * after it are aborted; a write already under way downstream finishes
 * first (a child's input: when the child reads it, or at Ctrl-C).
 *
 * The report says how long each side waited for the other (`waited_in`:
 * the writer for a free buffer, the downstream is slower; `waited_out`:
 * the thread for a full one, the upstream is slower) and how often the
 * thread was woken (`wakeups`). A side that has to wait sleeps until a
 * quarter of the ring is ready for it, not one buffer: woken for each
 * 64 KiB, the thread of verify's decompressed side was woken ~11,000 times
 * for 0.5 GB, and those switches cost more CPU than the copy.
 *
 * Many small buffers rather than a few big ones (2 MiB in all by default):
 * on a busy machine a thread waits its turn for a core after each wake-up,
 * and with a few 1 MiB buffers the two sides took turns more than they ran
 * together (measured: verify of a 223 MiB .zst under a load of 10 on two
 * cores, 3.6-6.9 s with 4 x 1 MiB, 1.7-4.1 s with 32 x 64 KiB, for the
 * same CPU time).
 */
#include "stages.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pv_stage base;
    size_t nbuf, size;
    uint8_t *mem;       /* nbuf buffers of size bytes */
    size_t *used;       /* bytes in each full buffer */
    size_t head, count; /* the oldest full buffer, how many are full */
    size_t fill;        /* bytes in the buffer being filled: (head + count) % nbuf */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sync_ready, started;
    pthread_t thread;
    bool ending, stopping, failed;
    pv_err werr; /* the downstream's failure */
    double waited_in, waited_out;
    /* Wake-ups in batches: a side that had to wait sleeps until `batch`
     * buffers are full (the thread) or free (the writer), not one. */
    size_t batch;
    bool thread_asleep, writer_asleep;
    long long wakeups;
} handoff_stage;

static void *handoff_main(void *arg)
{
    handoff_stage *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        if (h->count == 0 && !h->ending && !h->stopping) {
            double t0 = pv_now();
            h->thread_asleep = true;
            while (h->count < h->batch && !h->ending && !h->stopping)
                pthread_cond_wait(&h->cv, &h->mu);
            h->thread_asleep = false;
            h->waited_out += pv_now() - t0;
            h->wakeups++;
        }
        /* what is left after the end is passed on, not after a stop */
        if (h->stopping || h->count == 0) break;
        size_t idx = h->head, n = h->used[idx];
        pthread_mutex_unlock(&h->mu);
        /* the writer never touches a full buffer: no lock while emitting */
        int rc = pv_emit(&h->base, h->mem + idx * h->size, n, &h->werr);
        pthread_mutex_lock(&h->mu);
        if (rc < 0) {
            h->failed = true;
            pthread_cond_broadcast(&h->cv);
            break;
        }
        h->head = (h->head + 1) % h->nbuf;
        h->count--;
        if (h->writer_asleep && h->count + h->batch <= h->nbuf) pthread_cond_broadcast(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static int handoff_start(pv_stage *s, pv_err *err)
{
    handoff_stage *h = (handoff_stage *)s;
    h->mem = malloc(h->nbuf * h->size);
    h->used = calloc(h->nbuf, sizeof *h->used);
    if (!h->mem || !h->used) {
        pv_err_set(err, "internal", "out of memory for the hand-off's %zu buffers", h->nbuf);
        return -1;
    }
    if (pthread_mutex_init(&h->mu, NULL) != 0) goto no_thread;
    if (pthread_cond_init(&h->cv, NULL) != 0) {
        pthread_mutex_destroy(&h->mu);
        goto no_thread;
    }
    h->sync_ready = true;
    if (pthread_create(&h->thread, NULL, handoff_main, h) != 0) goto no_thread;
    h->started = true;
    return 0;
no_thread:
    pv_err_set(err, "internal", "cannot start the hand-off's thread");
    return -1;
}

/* The writer failed or must stop: the downstream's error, once. */
static int downstream_failed(handoff_stage *h, pv_err *err)
{
    if (!err->set) *err = h->werr;
    return -1;
}

/* Publishes the buffer being filled; waits for a free one to fill next. */
static int publish(handoff_stage *h, pv_err *err)
{
    pthread_mutex_lock(&h->mu);
    size_t idx = (h->head + h->count) % h->nbuf;
    h->used[idx] = h->fill;
    h->count++;
    h->fill = 0;
    if (h->thread_asleep && h->count >= h->batch) pthread_cond_broadcast(&h->cv);
    if (h->count == h->nbuf && !h->failed) {
        double t0 = pv_now();
        h->writer_asleep = true;
        pthread_cond_broadcast(&h->cv); /* the thread takes what there is */
        while (h->count + h->batch > h->nbuf && !h->failed)
            pthread_cond_wait(&h->cv, &h->mu);
        h->writer_asleep = false;
        h->waited_in += pv_now() - t0;
    }
    bool failed = h->failed;
    pthread_mutex_unlock(&h->mu);
    return failed ? downstream_failed(h, err) : 0;
}

static int handoff_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    handoff_stage *h = (handoff_stage *)s;
    pthread_mutex_lock(&h->mu);
    bool failed = h->failed;
    size_t idx = (h->head + h->count) % h->nbuf; /* never full: publish waits for that */
    pthread_mutex_unlock(&h->mu);
    if (failed) return downstream_failed(h, err);
    while (len > 0) {
        size_t n = h->size - h->fill < len ? h->size - h->fill : len;
        memcpy(h->mem + idx * h->size + h->fill, data, n);
        h->fill += n;
        data += n;
        len -= n;
        if (h->fill < h->size) break;
        if (publish(h, err) < 0) return -1;
        pthread_mutex_lock(&h->mu);
        idx = (h->head + h->count) % h->nbuf;
        pthread_mutex_unlock(&h->mu);
    }
    return 0;
}

static void join(handoff_stage *h)
{
    if (!h->started) return;
    pthread_join(h->thread, NULL);
    h->started = false;
}

static int handoff_finish(pv_stage *s, pv_err *err)
{
    handoff_stage *h = (handoff_stage *)s;
    if (h->fill > 0 && publish(h, err) < 0) return -1;
    pthread_mutex_lock(&h->mu);
    h->ending = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    join(h);
    return h->failed ? downstream_failed(h, err) : 0;
}

static void handoff_abort(pv_stage *s)
{
    handoff_stage *h = (handoff_stage *)s;
    if (!h->sync_ready) return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    join(h);
}

static void handoff_release(pv_stage *s)
{
    handoff_stage *h = (handoff_stage *)s;
    handoff_abort(s);
    if (h->sync_ready) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        h->sync_ready = false;
    }
    free(h->mem);
    free(h->used);
    h->mem = NULL;
    h->used = NULL;
}

static int handoff_report(pv_stage *s, lua_State *L)
{
    handoff_stage *h = (handoff_stage *)s;
    lua_createtable(L, 0, 6);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    pv_set_int(L, "buffers", (lua_Integer)h->nbuf);
    pv_set_int(L, "size", (lua_Integer)h->size);
    pv_set_num(L, "waited_in", h->waited_in);
    pv_set_num(L, "waited_out", h->waited_out);
    pv_set_int(L, "wakeups", (lua_Integer)h->wakeups);
    return 1;
}

static const pv_stage_ops handoff_ops = {.name = "handoff",
                                         .start = handoff_start,
                                         .write = handoff_write,
                                         .finish = handoff_finish,
                                         .abort = handoff_abort,
                                         .report = handoff_report,
                                         .release = handoff_release};

int pv_stream_handoff(lua_State *L)
{
    int opts = lua_istable(L, 1) ? 1 : 0;
    lua_Integer nbuf = pv_opt_int(L, opts, "buffers", 32);
    lua_Integer size = pv_opt_int(L, opts, "size", 64 << 10);
    if (nbuf < 2 || nbuf > 64) return luaL_argerror(L, 1, "buffers must be 2 to 64");
    if (size < 4096 || size > (64 << 20))
        return luaL_argerror(L, 1, "size must be 4 KiB to 64 MiB");
    handoff_stage *h = pv_stage_new(L, &handoff_ops, sizeof *h, opts);
    h->nbuf = (size_t)nbuf;
    h->size = (size_t)size;
    h->batch = h->nbuf / 4 > 0 ? h->nbuf / 4 : 1;
    return 1;
}
