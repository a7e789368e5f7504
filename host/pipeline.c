/*
 * pipeline.c: the pipeline engine, pgvault.stream.run{source, ..., sink}:
 * links the stages, starts them sink first, runs the source, finishes them
 * in order, aborts every one on any failure, and returns (or raises with)
 * the stages' reports. The stage object itself is in stage.c.
 */
#include "runtime.h"

#include <string.h>

#define MAX_STAGES 32

typedef struct {
    pv_stage *st[MAX_STAGES];
    int n;
} pipeline;

/* Misuse (not a table of fresh stages, a source that cannot produce ...)
 * is an argument error; the stages are then left untouched. */
static void check_stages(lua_State *L, pipeline *p)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    p->n = (int)luaL_len(L, 1);
    if (p->n < 2) luaL_argerror(L, 1, "a pipeline needs a source and a sink");
    if (p->n > MAX_STAGES) luaL_argerror(L, 1, "too many stages");
    for (int i = 0; i < p->n; i++) {
        lua_geti(L, 1, i + 1);
        pv_stage *st = p->st[i] = pv_stage_check(L, -1);
        lua_pop(L, 1); /* the table keeps it alive */
        if (st->state != PV_STAGE_NEW || st->released)
            luaL_error(L, "stage %d (%s) was already used in a pipeline", i + 1, st->ops->name);
        for (int j = 0; j < i; j++)
            if (p->st[j] == st) luaL_error(L, "stage %d appears twice", i + 1);
        if (i == 0 && !st->ops->run)
            luaL_error(L, "stage 1 (%s) cannot be a source", st->ops->name);
        if (i > 0 && !st->ops->write)
            luaL_error(L, "stage %d (%s) cannot take input", i + 1, st->ops->name);
    }
    for (int i = 0; i < p->n; i++)
        p->st[i]->next = i + 1 < p->n ? p->st[i + 1] : NULL;
}

/* start (sink first), run the source, finish (source first). */
static int run_stages(pipeline *p, pv_err *err)
{
    int rc = 0;
    for (int i = p->n - 1; i >= 0 && rc == 0; i--) {
        p->st[i]->state = PV_STAGE_STARTED;
        if (p->st[i]->ops->start) rc = p->st[i]->ops->start(p->st[i], err);
    }
    if (rc == 0) rc = p->st[0]->ops->run(p->st[0], err);
    for (int i = 0; i < p->n && rc == 0; i++) {
        if (p->st[i]->ops->finish) rc = p->st[i]->ops->finish(p->st[i], err);
        if (rc == 0) p->st[i]->state = PV_STAGE_FINISHED;
    }
    if (rc != 0 && !err->set) pv_err_set(err, "internal", "pipeline failed without a reason");
    if (rc != 0 && pv_interrupted() && strcmp(err->kind, "interrupted") != 0) {
        /* The signal is the cause; the stage's complaint is its consequence. */
        pv_err_clear(err);
        pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
    }
    return rc;
}

static void abort_stages(pipeline *p)
{
    for (int i = 0; i < p->n; i++) {
        pv_stage *st = p->st[i];
        if (st->state == PV_STAGE_STARTED || st->state == PV_STAGE_FINISHED) {
            if (st->ops->abort) st->ops->abort(st);
            st->state = PV_STAGE_ABORTED;
        }
    }
}

/* {bytes, seconds, ok, stages = {report or false, ...}, [label] = report} */
static void push_result(lua_State *L, pipeline *p, bool ok, double seconds)
{
    lua_createtable(L, 0, 4 + p->n);
    pv_set_int(L, "bytes", (lua_Integer)p->st[0]->bytes_out);
    pv_set_num(L, "seconds", seconds);
    pv_set_bool(L, "ok", ok);
    lua_createtable(L, p->n, 0);
    for (int i = 0; i < p->n; i++) {
        pv_stage *st = p->st[i];
        int pushed = st->ops->report ? st->ops->report(st, L) : 0;
        if (pushed <= 0) {
            lua_pushboolean(L, 0);
        } else {
            lua_settop(L, lua_gettop(L) - pushed + 1);
            lua_pushvalue(L, -1);
            lua_setfield(L, -4, st->label);
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "stages");
}

int pv_pipeline_run(lua_State *L)
{
    pipeline p;
    check_stages(L, &p);
    pv_err err;
    pv_err_clear(&err);
    double t0 = pv_now();
    int rc = run_stages(&p, &err);
    if (rc != 0) abort_stages(&p);
    push_result(L, &p, rc == 0, pv_now() - t0);
    for (int i = 0; i < p.n; i++) {
        pv_stage_release(p.st[i]);
        p.st[i]->state = PV_STAGE_USED;
    }
    if (rc == 0) return 1;
    if (strcmp(err.kind, "interrupted") == 0) pv_interrupt_delivered();
    pv_err_push(L, &err);
    lua_insert(L, -2);
    lua_setfield(L, -2, "result"); /* what the stages saw, for diagnosis */
    return lua_error(L);
}
