/*
 * spill.c: the bounded store of archive.restorer (spill.h): slots of 1 MiB
 * from a fixed budget, chained per job, a queue of jobs nobody has taken.
 * One mutex guards the chains and counters; the bytes themselves are
 * copied outside it (a slot's filled part does not move, and only the
 * writer writes past it).
 */
#include "spill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sp_init(sp_spill *s, size_t budget)
{
    memset(s, 0, sizeof *s);
    s->nslots = (int)(budget / SP_SLOT);
    if (s->nslots < 2) s->nslots = 2;
    s->slot = calloc((size_t)s->nslots, sizeof *s->slot);
    s->fill = calloc((size_t)s->nslots, sizeof *s->fill);
    s->next_slot = calloc((size_t)s->nslots, sizeof *s->next_slot);
    if (!s->slot || !s->fill || !s->next_slot) return -1;
    for (int i = 0; i < s->nslots; i++)
        s->next_slot[i] = i + 1 < s->nslots ? i + 1 : -1;
    s->free_head = 0;
    if (pthread_mutex_init(&s->mu, NULL) != 0) return -1;
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        return -1;
    }
    return 0;
}

void sp_free(sp_spill *s)
{
    if (s->slot)
        for (int i = 0; i < s->nslots; i++)
            free(s->slot[i]);
    free(s->slot);
    free(s->fill);
    free(s->next_slot);
    while (s->queue_head) {
        sp_job *j = s->queue_head;
        s->queue_head = j->next;
        free(j);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    memset(s, 0, sizeof *s);
}

sp_job *sp_job_new(sp_spill *s, const char *name, int kind, const char *sql)
{
    sp_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->head = j->tail = -1;
    j->kind = kind;
    j->sql = sql;
    snprintf(j->name, sizeof j->name, "%s", name);
    pthread_mutex_lock(&s->mu);
    if (s->queue_tail)
        s->queue_tail->next = j;
    else
        s->queue_head = j;
    s->queue_tail = j;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return j;
}

/* Takes a free slot for the job (under the lock), waiting for one. */
static int grab_slot(sp_spill *s, sp_job *j)
{
    double t0 = pv_now();
    while (s->free_head < 0 && !s->stopped)
        pthread_cond_wait(&s->cv, &s->mu);
    s->waited += pv_now() - t0;
    if (s->stopped) return -1;
    int k = s->free_head;
    s->free_head = s->next_slot[k];
    if (!s->slot[k] && !(s->slot[k] = malloc(SP_SLOT))) {
        s->next_slot[k] = s->free_head;
        s->free_head = k;
        return -1;
    }
    s->fill[k] = 0;
    s->next_slot[k] = -1;
    if (j->tail >= 0)
        s->next_slot[j->tail] = k;
    else
        j->head = k;
    j->tail = k;
    if (++s->used > s->peak) s->peak = s->used;
    return k;
}

int sp_append(sp_spill *s, sp_job *j, const uint8_t *data, size_t len)
{
    while (len > 0) {
        pthread_mutex_lock(&s->mu);
        int k = j->tail;
        if (k < 0 || s->fill[k] == SP_SLOT) k = grab_slot(s, j);
        size_t at = k >= 0 ? s->fill[k] : 0;
        pthread_mutex_unlock(&s->mu);
        if (k < 0) return -1;
        size_t n = SP_SLOT - at < len ? SP_SLOT - at : len;
        memcpy(s->slot[k] + at, data, n);
        pthread_mutex_lock(&s->mu);
        s->fill[k] = at + n;
        j->bytes += n;
        if (s->fill[k] == SP_SLOT || j->bytes - j->woke >= SP_WAKE) {
            j->woke = j->bytes;
            pthread_cond_broadcast(&s->cv);
        }
        pthread_mutex_unlock(&s->mu);
        data += n;
        len -= n;
    }
    return 0;
}

void sp_job_done(sp_spill *s, sp_job *j)
{
    pthread_mutex_lock(&s->mu);
    j->complete = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

sp_job *sp_take(sp_spill *s)
{
    pthread_mutex_lock(&s->mu);
    while (!s->queue_head && !s->ended && !s->stopped)
        pthread_cond_wait(&s->cv, &s->mu);
    sp_job *j = s->stopped ? NULL : s->queue_head;
    if (j) {
        s->queue_head = j->next;
        if (!s->queue_head) s->queue_tail = NULL;
        j->next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return j;
}

int sp_peek(sp_spill *s, sp_job *j, const uint8_t **data, size_t *len)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stopped) {
            pthread_mutex_unlock(&s->mu);
            return -1;
        }
        int k = j->head;
        if (k >= 0 && s->fill[k] > j->read) {
            *data = s->slot[k] + j->read;
            *len = s->fill[k] - j->read;
            pthread_mutex_unlock(&s->mu);
            return 1;
        }
        if (k >= 0 && s->fill[k] == SP_SLOT && s->next_slot[k] >= 0) {
            /* the head slot is read to its end and the next one started */
            j->head = s->next_slot[k];
            j->read = 0;
            s->next_slot[k] = s->free_head;
            s->free_head = k;
            s->used--;
            pthread_cond_broadcast(&s->cv);
            continue;
        }
        if (j->complete) break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    /* the job's end: its last slot goes back */
    if (j->head >= 0) {
        s->next_slot[j->head] = s->free_head;
        s->free_head = j->head;
        s->used--;
        j->head = j->tail = -1;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void sp_consumed(sp_spill *s, sp_job *j, size_t len)
{
    pthread_mutex_lock(&s->mu);
    j->read += len;
    pthread_mutex_unlock(&s->mu);
}

void sp_end(sp_spill *s)
{
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sp_stop(sp_spill *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopped = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

bool sp_stopped(sp_spill *s)
{
    pthread_mutex_lock(&s->mu);
    bool stopped = s->stopped;
    pthread_mutex_unlock(&s->mu);
    return stopped;
}
