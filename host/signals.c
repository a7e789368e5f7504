/*
 * signals.c: SIGINT and SIGTERM. The handler only sets a flag and arms a
 * Lua hook that raises "interrupted" at the next safe point (as lua.c
 * does); C loops poll pv_interrupted(). pgvault.uninterrupted and
 * pgvault.critical let clean-up and must-finish steps run through a
 * signal.
 */
#include "runtime.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t interrupt_flag;
static volatile sig_atomic_t interrupt_sig;
static volatile sig_atomic_t interrupt_count;
static volatile sig_atomic_t critical_depth; /* inside pgvault.critical */
static lua_State *signal_L;

bool pv_interrupted(void)
{
    return interrupt_flag != 0 && critical_depth == 0;
}

int pv_interrupt_signal(void)
{
    return interrupt_sig;
}

void pv_interrupt_clear(void)
{
    interrupt_flag = 0;
    interrupt_sig = 0;
    interrupt_count = 0;
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (!interrupt_flag) return; /* cleared meanwhile (the REPL) */
    pv_raise(L, "interrupted", "interrupted");
}

void pv_interrupt_delivered(void)
{
    if (signal_L && lua_gethook(signal_L) == stop_hook) lua_sethook(signal_L, NULL, 0, 0);
}

static void on_signal(int sig)
{
    interrupt_flag = 1;
    interrupt_sig = sig;
    /* A third signal means the user really wants out, now. */
    if (++interrupt_count >= 3) _exit(130);
    /* lua_sethook is the one Lua call that is safe here (see lua.c). A
     * critical section arms it when it ends. */
    if (signal_L && !critical_depth)
        lua_sethook(signal_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void pv_signals_set_state(lua_State *L)
{
    signal_L = L;
}

void pv_signals_install(lua_State *L)
{
    signal_L = L;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking reads return EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int base_interrupted(lua_State *L)
{
    lua_pushboolean(L, pv_interrupted());
    return 1;
}

/* pgvault.uninterrupted(fn, ...): runs fn(...) for clean-up after an
 * interruption (dropping a half-restored database, say). The signal that
 * stopped the work does not cancel its clean-up; a new one does. The
 * interruption stays recorded afterwards, so the run still exits 130.
 * Returns what fn returns, or raises its error. */
static int base_uninterrupted(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sig_atomic_t was = interrupt_flag, sig = interrupt_sig;
    interrupt_flag = 0;
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    if (was) {
        interrupt_flag = 1;
        if (!interrupt_sig) interrupt_sig = sig;
    }
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* pgvault.critical(fn, ...): runs fn(...) to its end whatever signal
 * arrives meanwhile (renaming databases, say, where stopping half-way
 * would leave things worse than either end); the signal then stops the
 * run at the next instruction. A third signal still exits at once.
 * Returns what fn returns, or raises its error. */
static int base_critical(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    critical_depth++;
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    critical_depth--;
    if (!critical_depth && interrupt_flag && signal_L && rc == LUA_OK)
        lua_sethook(signal_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* pgvault.signalled(): whether a signal arrived, even inside a critical
 * section (where pgvault.interrupted() says false until it ends). */
static int base_signalled(lua_State *L)
{
    lua_pushboolean(L, interrupt_flag != 0);
    return 1;
}

void pv_signals_forget(lua_State *L)
{
    if (signal_L == L) signal_L = NULL;
}

void pv_signals_funcs(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"interrupted", base_interrupted},
                                     {"uninterrupted", base_uninterrupted},
                                     {"critical", base_critical},
                                     {"signalled", base_signalled},
                                     {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
