/*
 * session.h: the jobs of archive.restorer as its sessions load them
 * (session.c): what a job's bytes are, and the records of a large
 * objects' job.
 */
#ifndef PGVAULT_ARCHIVE_SESSION_H
#define PGVAULT_ARCHIVE_SESSION_H

#include "../pg/load.h"
#include "spill.h"

/* What a job's bytes are: COPY text (the job names its COPY statement),
 * SQL statements, or large objects' records. */
enum { JOB_COPY, JOB_SQL, JOB_LO };
/* A large objects' job: records of a tag, then (but for close) a 32-bit
 * little-endian OID or byte count; a write's bytes follow it. */
enum { LO_OPEN = 'O', LO_WRITE = 'W', LO_CLOSE = 'C' };
/* The most bytes of a large object in one write record. */
#define LO_PIECE ((size_t)1 << 20)

/* Feeds job j into the session's connection as its bytes arrive (l NULL:
 * a session that drops them); std_strings: the archive's
 * standard_conforming_strings. -1 with err set on a failure (naming the
 * job), -1 alone once the spill is stopped. */
int ar_load_job(sp_spill *sp, pg_load *l, sp_job *j, bool std_strings, pv_err *err);
/* "what: " before err's message. */
void ar_err_prefix(pv_err *err, const char *what);

#endif
