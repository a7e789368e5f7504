/*
 * proc.c: module pgvault.proc, child processes from Lua: proc.run (run to
 * completion, capture output) and proc.spawn (a handle for long-running
 * children such as test servers), plus pid, signal and sleep helpers.
 */
#include "pgvault.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_MT "pgvault.process"
#define MAX_ARGS 256
#define MAX_ENV 128

/* argv and env gathered from an options table; strings stay owned by Lua. */
typedef struct {
    const char *argv[MAX_ARGS + 1];
    const char *env[MAX_ENV + 1];
    char *env_owned[MAX_ENV];
    int nenv;
} proc_spec;

static void spec_free(proc_spec *sp)
{
    for (int i = 0; i < sp->nenv; i++)
        free(sp->env_owned[i]);
    sp->nenv = 0;
}

static void spec_read(lua_State *L, int t, proc_spec *sp)
{
    luaL_checktype(L, t, LUA_TTABLE);
    int n = (int)luaL_len(L, t);
    if (n < 1) luaL_argerror(L, t, "no program to run");
    if (n > MAX_ARGS) luaL_argerror(L, t, "too many arguments");
    for (int i = 1; i <= n; i++) {
        lua_geti(L, t, i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "argument %d must be a string", i);
        sp->argv[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1); /* the table keeps it alive */
    }
    sp->argv[n] = NULL;
    sp->nenv = 0;
    lua_getfield(L, t, "env");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (sp->nenv >= MAX_ENV) {
                spec_free(sp);
                luaL_error(L, "too many environment entries");
            }
            const char *k = lua_tostring(L, -2);
            char *entry;
            if (lua_toboolean(L, -1) == 0 && lua_type(L, -1) == LUA_TBOOLEAN) {
                entry = strdup(k);
            } else {
                size_t kl = strlen(k);
                const char *v = luaL_tolstring(L, -1, NULL);
                entry = malloc(kl + strlen(v) + 2);
                if (entry) {
                    memcpy(entry, k, kl);
                    entry[kl] = '=';
                    strcpy(entry + kl + 1, v);
                }
                lua_pop(L, 1);
            }
            if (!entry) {
                spec_free(sp);
                luaL_error(L, "out of memory");
            }
            sp->env_owned[sp->nenv] = entry;
            sp->env[sp->nenv++] = entry;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    sp->env[sp->nenv] = NULL;
}

/* ------------------------------------------------------------------ */
/* proc.run                                                            */
/* ------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
} growbuf;

static int growbuf_add(growbuf *g, const char *d, size_t n)
{
    if (g->len + n > g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8192;
        while (cap < g->len + n)
            cap *= 2;
        char *p = realloc(g->p, cap);
        if (!p) return -1;
        g->p = p;
        g->cap = cap;
    }
    memcpy(g->p + g->len, d, n);
    g->len += n;
    return 0;
}

/* A child being run to completion: its stdin fed from a string, its
 * stdout and stderr collected, a deadline. */
typedef struct {
    pv_child c;
    const char *input;
    size_t inlen, written;
    growbuf out, err;
    double deadline; /* 0: none */
    bool timed_out, interrupted, oom;
} run_state;

static void run_feed_stdin(run_state *r)
{
    ssize_t w = write(r->c.in_fd, r->input + r->written, r->inlen - r->written);
    if (w > 0) r->written += (size_t)w;
    if (w < 0 && errno != EAGAIN && errno != EINTR) r->written = r->inlen; /* it stopped reading */
    if (r->written >= r->inlen) {
        close(r->c.in_fd);
        r->c.in_fd = -1;
    }
}

static void run_drain(run_state *r, int *fd, growbuf *g)
{
    char buf[65536];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n > 0) {
        if (growbuf_add(g, buf, (size_t)n) < 0) r->oom = true;
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(*fd);
        *fd = -1;
    }
}

/* Feeds stdin and collects the output until the child closes both, the
 * deadline passes, a signal arrives or memory runs out. */
static void run_pump(run_state *r)
{
    pv_child *c = &r->c;
    if (c->in_fd >= 0) fcntl(c->in_fd, F_SETFL, O_NONBLOCK);
    if (c->in_fd >= 0 && r->inlen == 0) {
        close(c->in_fd);
        c->in_fd = -1;
    }
    while ((c->out_fd >= 0 || c->err_fd >= 0) && !r->oom) {
        struct pollfd pfd[3];
        int np = 0, iout = -1, ierr = -1, iin = -1;
        if (c->out_fd >= 0) pfd[iout = np++] = (struct pollfd){c->out_fd, POLLIN, 0};
        if (c->err_fd >= 0) pfd[ierr = np++] = (struct pollfd){c->err_fd, POLLIN, 0};
        if (c->in_fd >= 0) pfd[iin = np++] = (struct pollfd){c->in_fd, POLLOUT, 0};
        int ready = poll(pfd, (nfds_t)np, 200);
        if (pv_interrupted()) {
            r->interrupted = true;
            return;
        }
        if (r->deadline && pv_now() > r->deadline) {
            r->timed_out = true;
            return;
        }
        if (ready <= 0) continue;
        const short done = POLLIN | POLLHUP | POLLERR;
        if (iin >= 0 && (pfd[iin].revents & (POLLOUT | POLLERR | POLLHUP))) run_feed_stdin(r);
        if (iout >= 0 && (pfd[iout].revents & done)) run_drain(r, &c->out_fd, &r->out);
        if (ierr >= 0 && (pfd[ierr].revents & done)) run_drain(r, &c->err_fd, &r->err);
    }
}

/* {stdout, stderr, code, signal, timed_out, pid}; frees the buffers. */
static void push_run_result(lua_State *L, run_state *r, int status)
{
    lua_createtable(L, 0, 6);
    pv_set_lstr(L, "stdout", r->out.p ? r->out.p : "", r->out.len);
    pv_set_lstr(L, "stderr", r->err.p ? r->err.p : "", r->err.len);
    free(r->out.p);
    free(r->err.p);
    r->out.p = r->err.p = NULL;
    if (WIFEXITED(status)) {
        pv_set_int(L, "code", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        pv_set_int(L, "signal", WTERMSIG(status));
        pv_set_int(L, "code", 128 + WTERMSIG(status));
    }
    pv_set_bool(L, "timed_out", r->timed_out);
    pv_set_int(L, "pid", r->c.pid);
}

/* proc.run{argv..., stdin=, env=, cwd=, timeout=, merge_stderr=} */
static int proc_run(lua_State *L)
{
    proc_spec sp;
    spec_read(L, 1, &sp);
    static const char *const known[] = {"stdin", "env", "cwd", "timeout", "merge_stderr", NULL};
    pv_opt_only(L, 1, known);
    run_state r = {.input = pv_opt_str(L, 1, "stdin", NULL)};
    if (r.input) {
        lua_getfield(L, 1, "stdin");
        r.input = lua_tolstring(L, -1, &r.inlen);
        lua_pop(L, 1); /* the table keeps it */
    }
    const char *cwd = pv_opt_str(L, 1, "cwd", NULL);
    double timeout = pv_opt_num(L, 1, "timeout", 0);
    bool merge = pv_opt_bool(L, 1, "merge_stderr", false);

    pv_err err;
    pv_err_clear(&err);
    int flags =
        PV_PIPE_OUT | (merge ? PV_ERR_TO_OUT : PV_PIPE_ERR) | (r.input ? PV_PIPE_IN : PV_NULL_IN);
    int rc = pv_child_spawn(&r.c, sp.argv, sp.env, cwd, flags, &err);
    spec_free(&sp);
    if (rc < 0) return pv_err_raise(L, &err);

    r.deadline = timeout > 0 ? pv_now() + timeout : 0;
    run_pump(&r);
    if (r.timed_out || r.interrupted || r.oom) pv_child_kill(&r.c, 2000);
    pv_child_close_fds(&r.c);
    push_run_result(L, &r, pv_child_wait(&r.c));
    if (r.interrupted) {
        lua_geti(L, 1, 1);
        return pv_raise(L, "interrupted", "interrupted while running %s", lua_tostring(L, -1));
    }
    if (r.oom) return pv_raise(L, "io", "out of memory capturing the output of a child process");
    return 1;
}

/* ------------------------------------------------------------------ */
/* proc.spawn: a handle                                                */
/* ------------------------------------------------------------------ */

typedef struct {
    pv_child c;
    bool open;
    bool detach; /* leave it running when the handle is collected */
    char name[128];
    char pending[8192]; /* stdout bytes read but not yet returned as lines */
    size_t npending;
} proc_handle;

static proc_handle *check_handle(lua_State *L)
{
    return luaL_checkudata(L, 1, PROC_MT);
}

static int handle_close(lua_State *L)
{
    proc_handle *h = check_handle(L);
    if (h->open) {
        h->open = false;
        if (!h->detach) pv_child_kill(&h->c, 3000);
        pv_child_close_fds(&h->c);
    }
    return 0;
}

static int handle_tostring(lua_State *L)
{
    proc_handle *h = check_handle(L);
    lua_pushfstring(L, "pgvault process %s pid %d (%s)", h->name, (int)h->c.pid,
                    h->open ? (h->c.reaped ? "exited" : "running") : "closed");
    return 1;
}

static int handle_pid(lua_State *L)
{
    lua_pushinteger(L, check_handle(L)->c.pid);
    return 1;
}

/* h:read_line(timeout_seconds) -> line, or nil on end of output/timeout */
static int handle_read_line(lua_State *L)
{
    proc_handle *h = check_handle(L);
    double timeout = luaL_optnumber(L, 2, 10);
    double deadline = pv_now() + timeout;
    for (;;) {
        char *nl = memchr(h->pending, '\n', h->npending);
        if (nl) {
            size_t n = (size_t)(nl - h->pending);
            lua_pushlstring(L, h->pending, n);
            memmove(h->pending, nl + 1, h->npending - n - 1);
            h->npending -= n + 1;
            return 1;
        }
        if (h->c.out_fd < 0 || h->npending == sizeof h->pending) break;
        double left = deadline - pv_now();
        if (left <= 0) {
            lua_pushnil(L);
            lua_pushliteral(L, "timeout");
            return 2;
        }
        struct pollfd p = {h->c.out_fd, POLLIN, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (pv_interrupted()) return pv_raise(L, "interrupted", "interrupted");
        if (r <= 0) continue;
        ssize_t n = read(h->c.out_fd, h->pending + h->npending, sizeof h->pending - h->npending);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            close(h->c.out_fd);
            h->c.out_fd = -1;
        } else {
            h->npending += (size_t)n;
        }
    }
    if (h->npending > 0) {
        lua_pushlstring(L, h->pending, h->npending);
        h->npending = 0;
        return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "eof");
    return 2;
}

static void push_status(lua_State *L, int status)
{
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_pushnil(L);
    } else {
        lua_pushinteger(L, 128 + WTERMSIG(status));
        lua_pushinteger(L, WTERMSIG(status));
    }
}

/* h:wait([timeout]) -> code, signal; or nil, "timeout" */
static int handle_wait(lua_State *L)
{
    proc_handle *h = check_handle(L);
    if (!lua_isnoneornil(L, 2)) {
        double deadline = pv_now() + luaL_checknumber(L, 2);
        while (!h->c.reaped) {
            int status;
            pid_t r = waitpid(h->c.pid, &status, WNOHANG);
            if (r == h->c.pid) {
                h->c.reaped = true;
                h->c.status = status;
                break;
            }
            if (pv_now() > deadline) {
                lua_pushnil(L);
                lua_pushliteral(L, "timeout");
                return 2;
            }
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    push_status(L, pv_child_wait(&h->c));
    return 2;
}

static int handle_kill(lua_State *L)
{
    proc_handle *h = check_handle(L);
    static const char *const names[] = {"TERM", "KILL", "INT", "STOP", "CONT", "HUP", NULL};
    static const int sigs[] = {SIGTERM, SIGKILL, SIGINT, SIGSTOP, SIGCONT, SIGHUP};
    int sig = sigs[luaL_checkoption(L, 2, "TERM", names)];
    if (h->c.pid > 0 && !h->c.reaped) kill(h->c.pid, sig);
    return 0;
}

static int handle_running(lua_State *L)
{
    proc_handle *h = check_handle(L);
    if (!h->c.reaped && h->c.pid > 0) {
        int status;
        if (waitpid(h->c.pid, &status, WNOHANG) == h->c.pid) {
            h->c.reaped = true;
            h->c.status = status;
        }
    }
    lua_pushboolean(L, h->c.pid > 0 && !h->c.reaped);
    return 1;
}

static int proc_spawn(lua_State *L)
{
    proc_spec sp;
    spec_read(L, 1, &sp);
    static const char *const known[] = {"env", "cwd", "stdout", "stderr", "detach", NULL};
    pv_opt_only(L, 1, known);
    const char *cwd = pv_opt_str(L, 1, "cwd", NULL);
    static const char *const modes[] = {"pipe", "inherit", NULL};
    lua_getfield(L, 1, "stdout");
    int out_mode = luaL_checkoption(L, -1, "pipe", modes);
    lua_getfield(L, 1, "stderr");
    int err_mode = luaL_checkoption(L, -1, "inherit", modes);
    lua_pop(L, 2);
    bool detach = pv_opt_bool(L, 1, "detach", false);

    proc_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    h->c.in_fd = h->c.out_fd = h->c.err_fd = -1;
    luaL_setmetatable(L, PROC_MT);
    snprintf(h->name, sizeof h->name, "%s", sp.argv[0]);
    h->detach = detach;

    int flags = PV_NULL_IN | (out_mode == 0 ? PV_PIPE_OUT : 0) | (err_mode == 0 ? PV_PIPE_ERR : 0);
    pv_err err;
    pv_err_clear(&err);
    int rc = pv_child_spawn(&h->c, sp.argv, sp.env, cwd, flags, &err);
    spec_free(&sp);
    if (rc < 0) return pv_err_raise(L, &err);
    h->open = true;
    return 1;
}

static int proc_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static int proc_kill(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    static const char *const names[] = {"TERM", "KILL", "INT", "STOP", "CONT", "HUP", "0", NULL};
    static const int sigs[] = {SIGTERM, SIGKILL, SIGINT, SIGSTOP, SIGCONT, SIGHUP, 0};
    int sig = sigs[luaL_checkoption(L, 2, "TERM", names)];
    lua_pushboolean(L, kill(pid, sig) == 0);
    return 1;
}

static int proc_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    double deadline = pv_now() + s;
    while (pv_now() < deadline) {
        if (pv_interrupted()) return pv_raise(L, "interrupted", "interrupted");
        double left = deadline - pv_now();
        if (left > 0.05) left = 0.05;
        if (left <= 0) break;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int proc_now(lua_State *L)
{
    lua_pushnumber(L, pv_now());
    return 1;
}

int luaopen_pgvault_proc(lua_State *L)
{
    static const luaL_Reg handle_methods[] = {
        {"pid", handle_pid},   {"read_line", handle_read_line}, {"wait", handle_wait},
        {"kill", handle_kill}, {"running", handle_running},     {"close", handle_close},
        {NULL, NULL}};
    static const luaL_Reg handle_meta[] = {{"__gc", handle_close},
                                           {"__close", handle_close},
                                           {"__tostring", handle_tostring},
                                           {NULL, NULL}};
    if (luaL_newmetatable(L, PROC_MT)) {
        luaL_setfuncs(L, handle_meta, 0);
        luaL_newlib(L, handle_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {
        {"run", proc_run},   {"spawn", proc_spawn}, {"getpid", proc_getpid},
        {"kill", proc_kill}, {"sleep", proc_sleep}, {"now", proc_now},
        {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
