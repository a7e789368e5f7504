/*
 * stage.c: the pipeline stage object shared by every binding: a full
 * userdata with one idempotent release for __gc and __close, and pv_emit,
 * the hand-off of bytes to the next stage.
 */
#include "pgvault.h"
#include "runtime.h"

#include <string.h>

static const char *state_name(int state)
{
    switch (state) {
    case PV_STAGE_NEW:
        return "unused";
    case PV_STAGE_STARTED:
        return "running";
    case PV_STAGE_FINISHED:
        return "finished";
    case PV_STAGE_ABORTED:
        return "aborted";
    default:
        return "used";
    }
}

static void stage_release(pv_stage *st)
{
    if (st->released) return;
    if ((st->state == PV_STAGE_STARTED) && st->ops->abort) st->ops->abort(st);
    st->released = true;
    if (st->ops->release) st->ops->release(st);
}

static int stage_gc(lua_State *L)
{
    pv_stage *st = luaL_checkudata(L, 1, PV_STAGE_MT);
    stage_release(st);
    return 0;
}

static int stage_tostring(lua_State *L)
{
    pv_stage *st = luaL_checkudata(L, 1, PV_STAGE_MT);
    lua_pushfstring(L, "pgvault stage %s (%s)", st->ops->name,
                    st->released ? "released" : state_name(st->state));
    return 1;
}

static int stage_name(lua_State *L)
{
    pv_stage *st = luaL_checkudata(L, 1, PV_STAGE_MT);
    lua_pushstring(L, st->ops->name);
    return 1;
}

void *pv_stage_new(lua_State *L, const pv_stage_ops *ops, size_t size, int opts)
{
    if (opts < 0) opts = lua_gettop(L) + opts + 1;
    const char *label = pv_opt_str(L, opts, "label", ops->name);
    pv_stage *st = lua_newuserdatauv(L, size, 1);
    memset(st, 0, size);
    st->ops = ops;
    st->state = PV_STAGE_NEW;
    snprintf(st->label, sizeof st->label, "%s", label);
    if (luaL_newmetatable(L, PV_STAGE_MT)) {
        static const luaL_Reg meta[] = {{"__gc", stage_gc},
                                        {"__close", stage_gc},
                                        {"__tostring", stage_tostring},
                                        {NULL, NULL}};
        static const luaL_Reg methods[] = {
            {"name", stage_name}, {"release", stage_gc}, {NULL, NULL}};
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    return st;
}

pv_stage *pv_stage_check(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, PV_STAGE_MT);
}

pv_stage *pv_stage_test(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, PV_STAGE_MT);
}

void pv_stage_release(pv_stage *st)
{
    stage_release(st);
}

int pv_emit(pv_stage *st, const uint8_t *data, size_t len, pv_err *err)
{
    if (pv_interrupted()) {
        pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
        return -1;
    }
    pv_stage *next = st->next;
    if (!next) {
        pv_err_set(err, "internal", "stage %s has nowhere to send its output", st->ops->name);
        return -1;
    }
    if (len == 0) return 0;
    st->bytes_out += len;
    next->bytes_in += len;
    return next->ops->write(next, data, len, err);
}
