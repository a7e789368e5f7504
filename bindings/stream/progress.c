/*
 * progress.c: stream.progress, a tap that passes bytes unchanged and draws
 * "label  bytes  rate  elapsed" on stderr when stderr is a terminal, at most
 * a few times a second; silent otherwise. Its report says what it counted.
 */
#include "stages.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    pv_stage base;
    double started, last_draw, finished;
    double interval;
    bool draw; /* stderr is a terminal (or tty=true) */
    bool drawn;
    int width; /* characters of the last line drawn, to blank leftovers */
    char text[64];
} progress_tap;

static void human_bytes(double n, char *out, size_t outsz)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (n >= 1024 && u < 4) {
        n /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, outsz, "%.0f B", n);
    else
        snprintf(out, outsz, "%.1f %s", n, units[u]);
}

static void progress_draw(progress_tap *p, double now, bool last)
{
    char total[32], rate[32], line[192];
    double elapsed = now - p->started;
    human_bytes((double)p->base.bytes_in, total, sizeof total);
    human_bytes(elapsed > 0 ? (double)p->base.bytes_in / elapsed : 0, rate, sizeof rate);
    int secs = (int)elapsed;
    int n = snprintf(line, sizeof line, "%s  %s  %s/s  %d:%02d:%02d", p->text, total, rate,
                     secs / 3600, secs / 60 % 60, secs % 60);
    if (n < 0) return;
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    int pad = p->width > n ? p->width - n : 0;
    fprintf(stderr, "\r%s%*s%s", line, pad, "", last ? "\n" : "");
    fflush(stderr);
    p->width = n;
    p->drawn = true;
    p->last_draw = now;
}

static int progress_start(pv_stage *s, pv_err *err)
{
    (void)err;
    progress_tap *p = (progress_tap *)s;
    p->started = p->last_draw = pv_now();
    return 0;
}

static int progress_write(pv_stage *s, const uint8_t *data, size_t len, pv_err *err)
{
    progress_tap *p = (progress_tap *)s;
    if (p->draw) {
        double now = pv_now();
        if (now - p->last_draw >= p->interval) progress_draw(p, now, false);
    }
    return pv_emit(s, data, len, err);
}

static int progress_finish(pv_stage *s, pv_err *err)
{
    (void)err;
    progress_tap *p = (progress_tap *)s;
    p->finished = pv_now();
    if (p->draw) progress_draw(p, p->finished, true);
    return 0;
}

static void progress_abort(pv_stage *s)
{
    progress_tap *p = (progress_tap *)s;
    /* End the half-drawn line so the error message starts on its own. */
    if (p->draw && p->drawn) {
        fputc('\n', stderr);
        fflush(stderr);
        p->drawn = false;
    }
}

static int progress_report(pv_stage *s, lua_State *L)
{
    progress_tap *p = (progress_tap *)s;
    double end = p->finished > 0 ? p->finished : pv_now();
    double secs = end - p->started;
    lua_createtable(L, 0, 4);
    pv_set_int(L, "bytes", (lua_Integer)s->bytes_in);
    pv_set_num(L, "seconds", secs);
    pv_set_num(L, "rate", secs > 0 ? (double)s->bytes_in / secs : 0);
    pv_set_bool(L, "drawn", p->drawn);
    return 1;
}

static const pv_stage_ops progress_ops = {.name = "progress",
                                          .start = progress_start,
                                          .write = progress_write,
                                          .finish = progress_finish,
                                          .abort = progress_abort,
                                          .report = progress_report};

int pv_stream_progress(lua_State *L)
{
    int opts = lua_isnoneornil(L, 1) ? 0 : 1;
    static const char *const known[] = {"label", "interval", "tty", NULL};
    pv_opt_only(L, opts, known);
    const char *text = pv_opt_str(L, opts, "label", "progress");
    double interval = pv_opt_num(L, opts, "interval", 0.25);
    if (interval < 0.05) return luaL_argerror(L, 1, "interval must be at least 0.05 seconds");
    bool draw = pv_opt_bool(L, opts, "tty", isatty(STDERR_FILENO) != 0);
    progress_tap *p = pv_stage_new(L, &progress_ops, sizeof *p, opts);
    p->interval = interval;
    p->draw = draw;
    snprintf(p->text, sizeof p->text, "%s", text);
    return 1;
}
