/*
 * runtime.h: what the host's own files share (not part of the binding
 * contract in pgvault.h).
 */
#ifndef PGVAULT_RUNTIME_H
#define PGVAULT_RUNTIME_H

#include "pgvault.h"

#define PV_ERROR_MT "pgvault.error"
#define PV_STAGE_MT "pgvault.stage"

/* One built-in script, compiled into the binary (build/embedded.c). */
typedef struct pv_embedded {
    const char *path; /* relative to scripts/, e.g. "backup.lua", "lib/cli.lua" */
    const unsigned char *data;
    size_t len;
} pv_embedded;
extern const pv_embedded pv_embedded_scripts[];

/* Every binding's opener (build/modules.c, generated from bindings/). */
typedef struct pv_module {
    const char *name; /* "pgvault.pg" */
    lua_CFunction open;
} pv_module;
extern const pv_module pv_modules[];

typedef struct pv_runtime_opts {
    const char *const *script_dirs; /* user directories searched before the built-ins */
    int nscript_dirs;
} pv_runtime_opts;

lua_State *pv_runtime_new(const pv_runtime_opts *opts);
void pv_runtime_close(lua_State *L);

/* Runs the function below its nargs arguments in protected mode with the
 * traceback handler. Returns a LUA_* status; on error the error value is on
 * the stack. */
int pv_runtime_pcall(lua_State *L, int nargs, int nresults);
/* Compiles a chunk as the REPL does (an expression first); pushes the
 * function or the message; returns a LUA_* status. */
int pv_runtime_compile(lua_State *L, const char *chunk, const char *name);
/* Prints the values above base as the REPL does (lib.pretty), pops them. */
void pv_runtime_print(lua_State *L, int base);
/* Sets the globals every way of running Lua has: pgvault, and the
 * bindings' short names (stream, pg ...). */
void pv_runtime_globals(lua_State *L);
/* Prints one clean error line (traceback with -v) for the value on top. */
void pv_runtime_report(lua_State *L, const char *context);
/* Exit code for the error value on top: 130 interrupted, 2 usage, else 1. */
int pv_runtime_exit_code(lua_State *L);

/* Finds WORKFLOW.lua on the search path; pushes a loaded chunk and returns
 * true, or pushes a message and returns false. */
bool pv_runtime_load_workflow(lua_State *L, const char *name);
/* Looks a built-in script up by its path under scripts/. */
const pv_embedded *pv_embedded_find(const char *path);

/* Signal handling (signals.c): SIGINT/SIGTERM set the interrupt flag and
 * arm a hook that stops running Lua code at the next safe point. */
void pv_signals_install(lua_State *L);
void pv_signals_set_state(lua_State *L);
void pv_signals_forget(lua_State *L);

/* Each adds its functions to the `pgvault` module table on top. */
void pv_error_funcs(lua_State *L);   /* error, raise, is_error, error_kinds */
void pv_signals_funcs(lua_State *L); /* interrupted, uninterrupted, critical, signalled */
void pv_scripts_funcs(lua_State *L); /* embedded, embedded_list, script_dirs */
void pv_log_funcs(lua_State *L);     /* redact */
void pv_secrets_funcs(lua_State *L); /* hide_arg */

/* Secrets in our own process (secrets.c): core dumps off unless
 * PGVAULT_CORE_DUMPS=1; argv copied, then scrubbed in place (again after
 * each pv_argv_hide). */
void pv_secrets_harden(void);
char **pv_argv_capture(int argc, char **argv);
void pv_argv_scrub(void);
void pv_argv_hide(const char *value);
void pv_argv_release(void);

/* The error object's metatable (error.c). */
void pv_error_open(lua_State *L);
/* The script search path: directories and the package searcher (scripts.c). */
void pv_scripts_install(lua_State *L, const pv_runtime_opts *opts);
/* Pushes a new `log` table (debug, info, warn, error, secret, level). */
void pv_log_push_table(lua_State *L);

void pv_stage_release(pv_stage *st);

int pv_repl(lua_State *L);

extern bool pv_verbose;

#endif
