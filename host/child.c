/*
 * child.c: starting, waiting for and stopping child processes (pg_dump,
 * pg_restore, psql, test tools) with pipes whose parent ends never leak
 * into other children.
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

/* Builds the child's environment: ours, with `extra` applied on top. */
static char **build_env(const char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ[n])
        n++;
    if (extra)
        while (extra[m])
            m++;
    char **env = calloc(n + m + 1, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool overridden = false;
        const char *eq = strchr(environ[i], '=');
        size_t keylen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        for (size_t j = 0; j < m; j++) {
            const char *xe = strchr(extra[j], '=');
            size_t xlen = xe ? (size_t)(xe - extra[j]) : strlen(extra[j]);
            if (xlen == keylen && strncmp(extra[j], environ[i], keylen) == 0) overridden = true;
        }
        if (!overridden) env[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        if (strchr(extra[j], '=')) env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

int pv_child_spawn(pv_child *c, const char *const *argv, const char *const *env, const char *cwd,
                   int flags, pv_err *err)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, er[2] = {-1, -1};
    c->pid = 0;
    c->in_fd = c->out_fd = c->err_fd = -1;
    c->reaped = false;
    c->status = 0;

    char **child_env = build_env(env);
    if (!child_env) {
        pv_err_set(err, "child", "cannot start %s: out of memory", argv[0]);
        return -1;
    }
    if (((flags & PV_PIPE_IN) && pipe2(in, O_CLOEXEC) < 0) ||
        ((flags & PV_PIPE_OUT) && pipe2(out, O_CLOEXEC) < 0) ||
        ((flags & PV_PIPE_ERR) && pipe2(er, O_CLOEXEC) < 0)) {
        pv_err_errno(err, errno, "cannot create a pipe for %s", argv[0]);
        goto fail;
    }
    /* A pipe that reports exec failure: closed by exec on success. */
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) {
        pv_err_errno(err, errno, "cannot create a pipe for %s", argv[0]);
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        pv_err_errno(err, errno, "cannot start %s", argv[0]);
        close(report[0]);
        close(report[1]);
        goto fail;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (flags & PV_PIPE_IN) dup2(in[0], 0);
        if (flags & PV_NULL_IN) {
            int nul = open("/dev/null", O_RDONLY);
            if (nul >= 0) dup2(nul, 0);
        }
        if (flags & PV_PIPE_OUT) dup2(out[1], 1);
        if (flags & PV_PIPE_ERR) dup2(er[1], 2);
        if (flags & PV_ERR_TO_OUT) dup2(1, 2);
        if (cwd && chdir(cwd) < 0) {
            int e = errno;
            ssize_t w = write(report[1], &e, sizeof e);
            (void)w;
            _exit(127);
        }
        execvpe(argv[0], (char *const *)argv, child_env);
        int e = errno;
        ssize_t w = write(report[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(report[1]);
    int child_errno = 0;
    ssize_t got;
    do {
        got = read(report[0], &child_errno, sizeof child_errno);
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    free(child_env);
    child_env = NULL;
    if (in[0] >= 0) close(in[0]);
    if (out[1] >= 0) close(out[1]);
    if (er[1] >= 0) close(er[1]);
    c->pid = pid;
    c->in_fd = in[1];
    c->out_fd = out[0];
    c->err_fd = er[0];
    if (got == (ssize_t)sizeof child_errno) {
        pv_child_wait(c);
        pv_child_close_fds(c);
        pv_err_set(err, "child", "cannot run %s: %s%s", argv[0], strerror(child_errno),
                   child_errno == ENOENT ? " (is it installed and on PATH?)" : "");
        pv_err_str(err, "program", argv[0]);
        return -1;
    }
    return 0;

fail:
    free(child_env);
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
        if (er[i] >= 0) close(er[i]);
    }
    return -1;
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
