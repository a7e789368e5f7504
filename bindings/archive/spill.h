/*
 * spill.h: the bounded store between an archive arriving and the sessions
 * that load it (archive.restorer). The bytes of each job (one table's COPY
 * statement and data, one block of INSERT statements, one block of large
 * objects as SQL) are appended as they arrive into slots of SP_SLOT bytes
 * taken from a fixed budget; a worker takes the oldest job nobody has
 * taken and reads its bytes as they come, each slot going back to the
 * budget once read. When the budget is spent the writer waits: memory is
 * bounded, and a slow table holds up the stream only once the spill is
 * full. Jobs are loaded in parallel, each by one worker, in the order
 * they started to arrive.
 */
#ifndef PGVAULT_ARCHIVE_SPILL_H
#define PGVAULT_ARCHIVE_SPILL_H

#include "archive.h"

#include <pthread.h>

#define SP_SLOT ((size_t)1 << 20)
/* A reader waiting for a job's bytes is woken once this many have
 * arrived (or its slot is full, or the job complete): fewer wake-ups, and
 * larger writes to the server. */
#define SP_WAKE ((uint64_t)256 << 10)

typedef struct sp_job {
    struct sp_job *next; /* the queue of jobs not yet taken */
    int head, tail;      /* its slots, first and last (-1: none) */
    size_t read;         /* bytes read of the head slot */
    bool complete;       /* every byte has arrived */
    uint64_t bytes;
    uint64_t woke;   /* bytes when its reader was last woken */
    int kind;        /* what the bytes are, for the one who loads them */
    const char *sql; /* the statement they go with (COPY ... FROM stdin), or NULL */
    char name[160];  /* "entry 3363 (TABLE DATA public.t1)" */
} sp_job;

typedef struct sp_spill {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a slot freed, bytes or a job added, the end, a failure */
    uint8_t **slot;    /* allocated as first used, freed when given back */
    size_t *fill;
    int *next_slot;
    int nslots, free_head, used, peak;
    sp_job *queue_head, *queue_tail;
    bool ended;    /* no job will be added any more */
    bool stopped;  /* a failure: everyone gives up */
    double waited; /* seconds the writer waited for a free slot */
} sp_spill;

int sp_init(sp_spill *s, size_t budget);
void sp_free(sp_spill *s);
/* A new job (kind and sql as the loader reads them), queued at once so
 * that a worker may start loading it while its bytes arrive. NULL when out
 * of memory. */
sp_job *sp_job_new(sp_spill *s, const char *name, int kind, const char *sql);
/* Appends bytes to a job, waiting for free slots. -1 once stopped. */
int sp_append(sp_spill *s, sp_job *j, const uint8_t *data, size_t len);
void sp_job_done(sp_spill *s, sp_job *j);
/* The next job for a worker, waiting for one; NULL at the end or once
 * stopped. */
sp_job *sp_take(sp_spill *s);
/* The next readable bytes of a taken job (pointer into its head slot,
 * valid until sp_consumed), waiting for them: 0 at the job's end, -1 once
 * stopped. */
int sp_peek(sp_spill *s, sp_job *j, const uint8_t **data, size_t *len);
void sp_consumed(sp_spill *s, sp_job *j, size_t len);
/* Marks the end of input, or a failure that stops everyone. */
void sp_end(sp_spill *s);
void sp_stop(sp_spill *s);
bool sp_stopped(sp_spill *s);

#endif
