/*
 * pgvault.h: the C contract between the host and every binding.
 *
 * Errors (pv_err and the Lua error object), logging with redaction, the
 * interruption flag, pipeline stages (pv_stage) and child processes
 * (pv_child). Bindings include only this header from the host.
 */
#ifndef PGVAULT_H
#define PGVAULT_H

#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PGVAULT_VERSION "0.1.0"

#if defined(__GNUC__)
#define PV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PV_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/*
 * One convention for every binding and script:
 *
 * - Misuse of an API (a wrong argument type or value, an unknown option
 *   value passed by a script) is a Lua string error raised with
 *   luaL_argerror / luaL_typeerror, naming the function, the argument and,
 *   for an options table, the field ("bad argument #2 to 'file_writer'
 *   (field 'mode': integer expected, got string)"). The pv_opt_* helpers
 *   below do this. A workflow checks what a user typed before it calls a
 *   binding, and reports that as kind "usage".
 *
 * - Everything else is an error object: a table with `kind`, `message` and
 *   fields (path, url, sqlstate, http_status, retryable, ...), whose
 *   metatable gives it a __tostring. From C: record it in a pv_err (on code
 *   paths that must not raise: inside a pipeline, a libcurl or libpq
 *   callback) and raise it with pv_err_raise after every C resource is
 *   released, or call pv_raise / pv_raise_errno. From Lua:
 *   pgvault.raise(kind, message [, fields]) or
 *   error(pgvault.error(kind, message, fields)).
 *
 * - A message is one line: what failed, on what, what to do next. Nothing
 *   secret: every message and string field passes through pv_redact.
 *
 * The kinds (PV_ERROR_KINDS; pgvault.error_kinds in Lua). Any other kind
 * given to pv_err_set becomes "internal"; pgvault.error refuses it.
 *   io           the local file system (field path)
 *   exists       the target name is taken: a file, an S3 key, a database
 *                (field path or url); nothing was overwritten
 *   pg           PostgreSQL (fields sqlstate, retryable)
 *   child        a child process failed to start or exited badly
 *   s3           an S3 request (fields http_status, retryable, url)
 *   http         an HTTP API request (fields http_status, retryable,
 *                request_id, method, url)
 *   crypto       encryption, decryption, keys
 *   archive      a pg_dump archive is malformed or unsupported
 *   verify       content does not match what it should be (digest, size,
 *                row counts)
 *   trust        a signature is missing, bad or from an untrusted key; the
 *                manifest does not name this object
 *   config       the configuration (file, profile, environment) is wrong
 *   usage        the command line is wrong: exit code 2
 *   interrupted  SIGINT or SIGTERM: exit code 130
 *   internal     a bug in pgvault (an invariant broke)
 * Every other kind exits 1.
 */
#define PV_ERROR_KINDS                                                                             \
    "io", "exists", "pg", "child", "s3", "http", "crypto", "archive", "verify", "trust", "config", \
        "usage", "interrupted", "internal"

/* Whether `kind` is one of PV_ERROR_KINDS. */
bool pv_error_kind_known(const char *kind);

/*
 * A failure recorded in C and raised later as a Lua error object (see
 * above): kind, message and up to PV_ERR_MAX_FIELDS fields.
 */
#define PV_ERR_MAX_FIELDS 8

typedef struct pv_err_field {
    char key[24];
    char str[512];
    long long num;
    int type; /* 0 unused, 1 string, 2 integer, 3 boolean */
} pv_err_field;

typedef struct pv_err {
    bool set;
    char kind[24];
    char message[1024];
    int nfields;
    pv_err_field fields[PV_ERR_MAX_FIELDS];
} pv_err;

/* Records an error unless one is already recorded: the first failure of a
 * pipeline is the cause, later ones are consequences of aborting it. */
void pv_err_set(pv_err *e, const char *kind, const char *fmt, ...) PV_PRINTF(3, 4);
void pv_err_setv(pv_err *e, const char *kind, const char *fmt, va_list ap);
/* Same, appending ": strerror(errnum)". */
void pv_err_errno(pv_err *e, int errnum, const char *fmt, ...) PV_PRINTF(3, 4);
void pv_err_str(pv_err *e, const char *key, const char *value);
void pv_err_int(pv_err *e, const char *key, long long value);
void pv_err_bool(pv_err *e, const char *key, bool value);
void pv_err_clear(pv_err *e);

/* Pushes the error object for `e`. */
void pv_err_push(lua_State *L, const pv_err *e);
/* Raises the error object for `e`. Clean up every C resource first. */
int pv_err_raise(lua_State *L, const pv_err *e);
/* Shorthand: build and raise in one go. */
int pv_raise(lua_State *L, const char *kind, const char *fmt, ...) PV_PRINTF(3, 4);
/* Raises kind "io" with "<what> <path>: strerror(errnum)" and field path. */
int pv_raise_errno(lua_State *L, int errnum, const char *what, const char *path);

/* ------------------------------------------------------------------ */
/* Logging                                                             */
/* ------------------------------------------------------------------ */

enum { PV_LOG_DEBUG = 0, PV_LOG_INFO = 1, PV_LOG_WARN = 2, PV_LOG_ERROR = 3, PV_LOG_OFF = 4 };

/* Thread-safe; every line is redacted before it is written. */
void pv_log(int level, const char *fmt, ...) PV_PRINTF(2, 3);
void pv_logv(int level, const char *fmt, va_list ap);
int pv_log_level(void);
void pv_log_set_level(int level);
/* Registers a literal secret (a password, a key): it is masked wherever
 * it appears in a log line or an error message from then on. */
void pv_log_add_secret(const char *secret);
/* Writes a redacted copy of `in` into `out` (always NUL-terminated):
 * registered secrets, URL passwords, age identities, authorization
 * headers and tokens, key=value secrets (see host/redact.c). */
void pv_redact(const char *in, char *out, size_t outsz);
/* Whether redaction would mask anything in `in`. */
bool pv_redacts(const char *in);
/* Keeps the last n lines written (redacted) for log.tail(); 0 stops. */
void pv_log_capture(size_t n);

/* ------------------------------------------------------------------ */
/* Interruption                                                        */
/* ------------------------------------------------------------------ */

/* Set by SIGINT/SIGTERM. Long C loops check it and stop with an
 * "interrupted" error; Lua code is stopped by a hook at the next safe point. */
bool pv_interrupted(void);
void pv_interrupt_clear(void);
/* Called as an "interrupted" error is raised: the signal has reached the
 * Lua code as that error, so the hook that would stop the next Lua
 * instruction is disarmed, letting error handlers clean up. */
void pv_interrupt_delivered(void);
/* The signal that interrupted us (SIGINT or SIGTERM), 0 if none. */
int pv_interrupt_signal(void);

/* ------------------------------------------------------------------ */
/* Pipeline stages                                                     */
/* ------------------------------------------------------------------ */

/*
 * A pipeline is a source, zero or more filters/taps, and a sink. Bytes are
 * pushed: the source's run() calls pv_emit() which hands them to the next
 * stage's write(); filters transform and pv_emit() in turn. The engine
 * (pgvault.stream.run) calls, in this order:
 *   start()  sink first, source last (a sink's file exists before a child runs)
 *   run()    the source, until end of input
 *   finish() source first, then each stage downstream: flush what is held,
 *            validate (a verifier checks the archive is whole), and for the
 *            sink commit (rename, complete the upload, wait for the child)
 *   abort()  on any failure, every stage: undo (remove temp files, abort the
 *            multipart upload, kill the child). Must be idempotent and safe
 *            on a stage that never started.
 *   report() after the run, success or failure: push one table describing
 *            what the stage saw (or push nothing and return 0).
 * All hooks but run/write are optional (NULL). Each returns 0 on success or
 * -1 with `err` set. A stage object is a full userdata created by
 * pv_stage_new(); release() frees what it owns and runs exactly once (on
 * __gc/__close, or after its pipeline ran). A stage runs in one pipeline only.
 */
typedef struct pv_stage pv_stage;

typedef struct pv_stage_ops {
    const char *name; /* "zstd", "sha256", "file" ...: default result key */
    int (*start)(pv_stage *st, pv_err *err);
    int (*run)(pv_stage *st, pv_err *err); /* sources only */
    int (*write)(pv_stage *st, const uint8_t *data, size_t len, pv_err *err);
    int (*finish)(pv_stage *st, pv_err *err);
    void (*abort)(pv_stage *st);
    int (*report)(pv_stage *st, lua_State *L);
    void (*release)(pv_stage *st);
} pv_stage_ops;

enum { PV_STAGE_NEW, PV_STAGE_STARTED, PV_STAGE_FINISHED, PV_STAGE_ABORTED, PV_STAGE_USED };

struct pv_stage {
    const pv_stage_ops *ops;
    pv_stage *next; /* downstream stage; NULL for the sink */
    char label[32]; /* key of its report in the result table */
    int state;
    bool released;
    uint64_t bytes_in;  /* bytes written into this stage */
    uint64_t bytes_out; /* bytes it emitted downstream */
};

/* Creates a zeroed stage of `size` bytes (>= sizeof(pv_stage)) as a full
 * userdata with one user value, pushes it and returns it. If the table at
 * `opts` (0 for none) has a string `label`, it becomes the result key. */
void *pv_stage_new(lua_State *L, const pv_stage_ops *ops, size_t size, int opts);
pv_stage *pv_stage_check(lua_State *L, int idx);
/* The stage at idx, or NULL if it is not one. */
pv_stage *pv_stage_test(lua_State *L, int idx);

/* stream.run{source, ..., sink}: the pipeline engine (host/pipeline.c). */
int pv_pipeline_run(lua_State *L);

/* Hands bytes downstream. Fails with an "interrupted" error once a signal
 * arrived, so every source and filter stops promptly. */
int pv_emit(pv_stage *st, const uint8_t *data, size_t len, pv_err *err);

/* ------------------------------------------------------------------ */
/* Child processes                                                     */
/* ------------------------------------------------------------------ */

enum { PV_PIPE_IN = 1, PV_PIPE_OUT = 2, PV_PIPE_ERR = 4, PV_ERR_TO_OUT = 8, PV_NULL_IN = 16 };

typedef struct pv_child {
    pid_t pid;                 /* 0 when not running */
    int in_fd, out_fd, err_fd; /* -1 unless piped */
    int status;                /* raw wait status once reaped */
    bool reaped;
} pv_child;

/* Starts argv[0] (looked up on PATH). Its environment is the allowed part
 * of ours (pv_child_env_allowed: PATH, HOME, locale, TZ, TMPDIR, TERM,
 * libpq's PG* settings but PGPASSWORD ...) plus `env` ("KEY=VALUE"
 * entries, NULL-terminated, may be NULL; "KEY" without '=' removes KEY):
 * a credential reaches a child only when its caller passes it. Pipes per
 * `flags`; all pipe ends in the parent are close-on-exec. Never put
 * secrets in argv: use env. */
int pv_child_spawn(pv_child *c, const char *const *argv, const char *const *env, const char *cwd,
                   int flags, pv_err *err);
/* Whether a child inherits the variable named by name[0..len). */
bool pv_child_env_allowed(const char *name, size_t len);
/* Waits for the child; returns the raw status (also in c->status). */
int pv_child_wait(pv_child *c);
/* SIGTERM, then SIGKILL after `grace_ms`; reaps it. Safe on a reaped child. */
void pv_child_kill(pv_child *c, int grace_ms);
/* Closes any open pipe ends. */
void pv_child_close_fds(pv_child *c);
/* "exited with status 2", "killed by signal 9 (Killed)". */
void pv_child_describe(int status, char *out, size_t outsz);

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* Writes all of buf, retrying on EINTR and short writes. */
int pv_write_all(int fd, const void *buf, size_t len);
/* Reads up to len bytes, retrying on EINTR unless interrupted. Returns bytes
 * read, 0 at end of file, -1 on error (errno set; EINTR when interrupted). */
ssize_t pv_read_some(int fd, void *buf, size_t len);
/* Seconds since an arbitrary point, monotonic. */
double pv_now(void);
/* Lower-case hex of `len` bytes into out (2*len+1 bytes). */
void pv_hex(const uint8_t *in, size_t len, char *out);
/*
 * Optional field `key` of the options table at `idx` (0 or a nil/none
 * argument: no table, the default). A present field of the wrong type is
 * an argument error naming the function, the argument and the field.
 * Options are typed: pv_opt_int takes numbers with an integer value (not
 * "0600", not 1.5), pv_opt_num numbers, pv_opt_str strings (the result
 * stays valid while the table holds it), pv_opt_bool booleans. An argument at `idx`
 * that is neither nil nor a table is an argument error too.
 */
lua_Integer pv_opt_int(lua_State *L, int idx, const char *key, lua_Integer dflt);
lua_Number pv_opt_num(lua_State *L, int idx, const char *key, lua_Number dflt);
const char *pv_opt_str(lua_State *L, int idx, const char *key, const char *dflt);
bool pv_opt_bool(lua_State *L, int idx, const char *key, bool dflt);
/* A key of the options table at idx not in `known` (NULL-terminated) is an
 * argument error: "unknown option 'levle' (known: level, threads ...)".
 * Integer keys (an array part) are allowed. */
void pv_opt_only(lua_State *L, int idx, const char *const *known);

/* Report tables: t[key] = value for the table on top of the stack.
 * pv_set_str sets nothing when value is NULL. */
void pv_set_int(lua_State *L, const char *key, lua_Integer value);
void pv_set_num(lua_State *L, const char *key, lua_Number value);
void pv_set_str(lua_State *L, const char *key, const char *value);
void pv_set_lstr(lua_State *L, const char *key, const char *value, size_t len);
void pv_set_bool(lua_State *L, const char *key, bool value);

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

/*
 * A file being written under its final name `path`, the one way pgvault
 * creates files (stream.file_writer, fs.write_file; use it for any other).
 *
 * A regular target (or none) is written to a new temporary file
 * ".<name>.<random>.partial" in the target's directory, created with
 * O_CREAT|O_EXCL|O_NOFOLLOW (a name planted there, or a symbolic link, is
 * never opened); commit sets the mode (fchmod, checked), fsyncs, and puts
 * it in place: with no_clobber by link() (a taken name fails with kind
 * "exists" and the existing file is untouched), else by rename() over a
 * regular file or nothing. Abort removes the temporary file.
 *
 * A target that exists and is not a regular file (/dev/null, a FIFO, or a
 * symbolic link to one, such as /dev/stdout) is written through and never
 * replaced. A directory, or a symbolic link to anything else, is refused.
 */
typedef struct pv_file {
    int fd;       /* -1 when closed */
    bool through; /* written in place (device, FIFO) */
    bool no_clobber;
    bool committed;
    mode_t mode;
    char path[4096];
    char temp[4096]; /* "" unless a temporary file exists */
} pv_file;

/* A closed pv_file (fd -1): pv_file_abort is safe on it. */
void pv_file_init(pv_file *f);
/* Opens `path` for writing as above; on failure sets err (field path)
 * and leaves nothing behind. */
int pv_file_open(pv_file *f, const char *path, mode_t mode, bool no_clobber, pv_err *err);
int pv_file_write(pv_file *f, const void *data, size_t len, pv_err *err);
/* Puts the file in place (or just closes a written-through one). */
int pv_file_commit(pv_file *f, pv_err *err);
/* Closes and removes the temporary file; idempotent, safe after commit. */
void pv_file_abort(pv_file *f);

#endif
