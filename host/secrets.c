/*
 * secrets.c: keeping the secrets pgvault holds in memory out of other
 * local users' sight. Core dumps are off (RLIMIT_CORE 0, and not dumpable:
 * no core, no ptrace or /proc/PID/mem by others) unless PGVAULT_CORE_DUMPS=1
 * asks for them. Our own command line (/proc/PID/cmdline, readable by
 * every local user) is rewritten once it has been copied: every argument
 * redacted as a log line would be, and the values a workflow declares
 * secret (pgvault.hide_arg) masked.
 */
#include "runtime.h"

#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#define MASK "***"

static int nargs;
static char **originals; /* our private copies: what the program reads */
static char **live;      /* the process's own argv */
static char *area;       /* the argv strings, when contiguous (as exec lays them out) */
static size_t area_len;
static char **hidden;
static int nhidden;

void pv_secrets_harden(void)
{
    const char *keep = getenv("PGVAULT_CORE_DUMPS");
    if (keep && strcmp(keep, "1") == 0) return;
    /* The soft limit: the hard one is the user's, left for children. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_CORE, &rl) == 0) {
        rl.rlim_cur = 0;
        setrlimit(RLIMIT_CORE, &rl);
    }
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

char **pv_argv_capture(int argc, char **argv)
{
    originals = calloc((size_t)argc + 1, sizeof *originals);
    if (!originals) return NULL;
    for (int i = 0; i < argc; i++)
        if (!(originals[i] = strdup(argv[i]))) return NULL;
    nargs = argc;
    live = argv;
    area = argc > 0 ? argv[0] : NULL;
    for (int i = 1; area && i < argc; i++)
        if (argv[i] != argv[i - 1] + strlen(argv[i - 1]) + 1) area = NULL;
    if (area) area_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - area);
    return originals;
}

/* "--name=SECRET" or "-xSECRET": the option part stays. */
static size_t option_prefix(const char *arg, const char *value)
{
    size_t la = strlen(arg), lv = strlen(value);
    if (la <= lv || strcmp(arg + la - lv, value) != 0) return 0;
    size_t p = la - lv;
    if (arg[0] == '-' && arg[1] == '-' && arg[p - 1] == '=') return p;
    if (arg[0] == '-' && arg[1] != '-' && p == 2) return p;
    return 0;
}

/* What argument i shows: masked when hidden, else redacted. */
static char *clean_arg(int i)
{
    const char *a = originals[i];
    for (int h = 0; h < nhidden; h++) {
        size_t p = strcmp(a, hidden[h]) == 0 ? 0 : option_prefix(a, hidden[h]);
        if (p == 0 && strcmp(a, hidden[h]) != 0) continue;
        char *out = malloc(p + sizeof MASK);
        if (out) {
            memcpy(out, a, p);
            memcpy(out + p, MASK, sizeof MASK);
        }
        return out;
    }
    size_t n = strlen(a) + 256;
    char *out = malloc(n);
    if (out) pv_redact(a, out, n);
    return out;
}

/* Packs the cleaned arguments into the argv area, NULs after them. */
static void write_area(char **clean)
{
    size_t off = 0;
    for (int i = 0; i < nargs; i++) {
        size_t len = strlen(clean[i]);
        if (off + len + 1 > area_len) len = off < area_len ? area_len - off - 1 : 0;
        if (off >= area_len) {
            live[i] = area + area_len - 1;
            continue;
        }
        memcpy(area + off, clean[i], len);
        area[off + len] = '\0';
        live[i] = area + off;
        off += len + 1;
    }
    if (off < area_len) memset(area + off, 0, area_len - off);
}

/* Argument by argument, each cut to the room it had. */
static void write_in_place(char **clean)
{
    for (int i = 0; i < nargs; i++) {
        size_t room = strlen(live[i]);
        size_t len = strlen(clean[i]);
        if (len > room) len = room;
        memcpy(live[i], clean[i], len);
        memset(live[i] + len, 0, room - len);
    }
}

void pv_argv_scrub(void)
{
    if (!originals || nargs == 0) return;
    char **clean = calloc((size_t)nargs, sizeof *clean);
    bool ok = clean != NULL;
    for (int i = 0; ok && i < nargs; i++)
        ok = (clean[i] = clean_arg(i)) != NULL;
    if (ok && area)
        write_area(clean);
    else if (ok)
        write_in_place(clean);
    for (int i = 0; clean && i < nargs; i++)
        free(clean[i]);
    free(clean);
}

void pv_argv_hide(const char *value)
{
    if (!value || !*value) return;
    pv_log_add_secret(value);
    for (int h = 0; h < nhidden; h++)
        if (strcmp(hidden[h], value) == 0) return;
    char **more = realloc(hidden, (size_t)(nhidden + 1) * sizeof *hidden);
    if (!more) return;
    hidden = more;
    if ((hidden[nhidden] = strdup(value)) != NULL) nhidden++;
}

void pv_argv_release(void)
{
    for (int i = 0; originals && i < nargs; i++)
        free(originals[i]);
    free(originals);
    for (int h = 0; h < nhidden; h++)
        free(hidden[h]);
    free(hidden);
    originals = NULL;
    hidden = NULL;
    nargs = nhidden = 0;
}

/* pgvault.hide_arg(value): a value from the command line that is a
 * secret: masked in our command line from now on, and in every log line
 * and error message. */
static int base_hide_arg(lua_State *L)
{
    pv_argv_hide(luaL_checkstring(L, 1));
    pv_argv_scrub();
    return 0;
}

void pv_secrets_funcs(lua_State *L)
{
    lua_pushcfunction(L, base_hide_arg);
    lua_setfield(L, -2, "hide_arg");
}
