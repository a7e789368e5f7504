/*
 * child.c: starting, waiting for and stopping child processes (pg_dump,
 * pg_restore, psql, test tools) with pipes whose parent ends never leak
 * into other children, and an environment built from an allow-list.
 */
#include "pgvault.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

void pv_child_close_fds(pv_child *c)
{
    close_fd(&c->in_fd);
    close_fd(&c->out_fd);
    close_fd(&c->err_fd);
}

/* What a child inherits from our environment: where programs and
 * libraries are, the user's home and locale, the terminal, sanitizer
 * settings, and libpq's connection settings (pg_dump, pg_restore and psql
 * read them). Never a credential: PGPASSWORD, AWS_*, tokens and anything
 * else reach a child only as an explicit entry from its caller. */
static const char *const allowed_names[] = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "LD_LIBRARY_PATH", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS",
    /* libpq's environment variables (all but PGPASSWORD) */
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSFILE", "PGREQUIREAUTH",
    "PGCHANNELBINDING", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE",
    "PGREQUIRESSL", "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY", "PGSSLCERTMODE", "PGSSLROOTCERT",
    "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGSSLNEGOTIATION", "PGREQUIREPEER",
    "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME",
    "PGGSSLIB", "PGGSSDELEGATION", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR", NULL};

bool pv_child_env_allowed(const char *name, size_t len)
{
    if (len > 3 && strncmp(name, "LC_", 3) == 0) return true;
    for (int i = 0; allowed_names[i]; i++)
        if (strlen(allowed_names[i]) == len && strncmp(allowed_names[i], name, len) == 0)
            return true;
    return false;
}

static size_t name_len(const char *entry)
{
    const char *eq = strchr(entry, '=');
    return eq ? (size_t)(eq - entry) : strlen(entry);
}

/* The child's environment: the allowed part of ours, then `extra` on top
 * ("KEY=VALUE" sets, "KEY" alone removes). The strings stay owned by
 * environ and the caller. */
static char **build_env(const char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **env = calloc(n + m + 1, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = name_len(environ[i]);
        bool keep = pv_child_env_allowed(environ[i], len);
        for (size_t j = 0; keep && j < m; j++)
            if (name_len(extra[j]) == len && strncmp(extra[j], environ[i], len) == 0) keep = false;
        if (keep) env[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        if (strchr(extra[j], '=')) env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

typedef struct {
    int in[2], out[2], err[2];
    int report[2]; /* tells the parent why exec failed; closed by exec */
} child_pipes;

static void close_pair(int p[2])
{
    for (int i = 0; i < 2; i++)
        if (p[i] >= 0) {
            close(p[i]);
            p[i] = -1;
        }
}

static void close_pipes(child_pipes *p)
{
    close_pair(p->in);
    close_pair(p->out);
    close_pair(p->err);
    close_pair(p->report);
}

static int open_pipes(child_pipes *p, int flags)
{
    if ((flags & PV_PIPE_IN) && pipe2(p->in, O_CLOEXEC) < 0) return -1;
    if ((flags & PV_PIPE_OUT) && pipe2(p->out, O_CLOEXEC) < 0) return -1;
    if ((flags & PV_PIPE_ERR) && pipe2(p->err, O_CLOEXEC) < 0) return -1;
    return pipe2(p->report, O_CLOEXEC);
}

static void report_errno_and_exit(int fd)
{
    int e = errno;
    ssize_t w = write(fd, &e, sizeof e);
    (void)w;
    _exit(127);
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void exec_child(const child_pipes *p, const char *const *argv, char **env, const char *cwd,
                       int flags)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (flags & PV_PIPE_IN) dup2(p->in[0], 0);
    if (flags & PV_NULL_IN) {
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
    }
    if (flags & PV_PIPE_OUT) dup2(p->out[1], 1);
    if (flags & PV_PIPE_ERR) dup2(p->err[1], 2);
    if (flags & PV_ERR_TO_OUT) dup2(1, 2);
    if (cwd && chdir(cwd) < 0) report_errno_and_exit(p->report[1]);
    execvpe(argv[0], (char *const *)argv, env);
    report_errno_and_exit(p->report[1]);
}

/* In the parent: keeps our pipe ends, and learns whether exec worked. */
static int adopt_child(pv_child *c, pid_t pid, child_pipes *p, const char *program, pv_err *err)
{
    close(p->report[1]);
    p->report[1] = -1;
    int child_errno = 0;
    ssize_t got;
    do {
        got = read(p->report[0], &child_errno, sizeof child_errno);
    } while (got < 0 && errno == EINTR);
    c->pid = pid;
    c->in_fd = p->in[1];
    c->out_fd = p->out[0];
    c->err_fd = p->err[0];
    p->in[1] = p->out[0] = p->err[0] = -1;
    close_pipes(p);
    if (got != (ssize_t)sizeof child_errno) return 0;
    pv_child_wait(c);
    pv_child_close_fds(c);
    pv_err_set(err, "child", "cannot run %s: %s%s", program, strerror(child_errno),
               child_errno == ENOENT ? " (is it installed and on PATH?)" : "");
    pv_err_str(err, "program", program);
    return -1;
}

int pv_child_spawn(pv_child *c, const char *const *argv, const char *const *env, const char *cwd,
                   int flags, pv_err *err)
{
    child_pipes p = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
    c->pid = 0;
    c->in_fd = c->out_fd = c->err_fd = -1;
    c->reaped = false;
    c->status = 0;
    char **child_env = build_env(env);
    if (!child_env) {
        pv_err_set(err, "child", "cannot start %s: out of memory", argv[0]);
        return -1;
    }
    int rc = -1;
    pid_t pid = -1;
    if (open_pipes(&p, flags) < 0)
        pv_err_errno(err, errno, "cannot create a pipe for %s", argv[0]);
    else if ((pid = fork()) < 0)
        pv_err_errno(err, errno, "cannot start %s", argv[0]);
    else if (pid == 0)
        exec_child(&p, argv, child_env, cwd, flags);
    else
        rc = adopt_child(c, pid, &p, argv[0], err);
    close_pipes(&p);
    free(child_env);
    return rc;
}

int pv_child_wait(pv_child *c)
{
    if (c->pid <= 0 || c->reaped) return c->status;
    int status;
    pid_t r;
    do {
        r = waitpid(c->pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    c->reaped = true;
    c->status = r < 0 ? (127 << 8) : status;
    return c->status;
}

void pv_child_kill(pv_child *c, int grace_ms)
{
    if (c->pid <= 0 || c->reaped) return;
    kill(c->pid, SIGTERM);
    for (int waited = 0; waited < grace_ms; waited += 10) {
        int status;
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid) {
            c->reaped = true;
            c->status = status;
            return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(c->pid, SIGKILL);
    pv_child_wait(c);
}

void pv_child_describe(int status, char *out, size_t outsz)
{
    if (WIFEXITED(status))
        snprintf(out, outsz, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outsz, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outsz, "ended with wait status %d", status);
}
