/*
 * repl.c: the interactive shell. GNU readline for editing, persistent
 * history and tab completion of globals and table fields; expressions
 * print (through lib.pretty); input continues while the chunk is
 * incomplete; Ctrl-C cancels the line or interrupts the running command
 * and returns to the prompt; Ctrl-D leaves.
 */
#include "runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#define PROMPT "pgvault> "
#define PROMPT2 "     ..> "
#define HISTORY_MAX 2000

static lua_State *repl_L;
static bool line_cancelled;

/* Reads a key for readline. On Ctrl-C (our handler sets the interrupt
 * flag and read() fails with EINTR) it marks the line cancelled and hands
 * readline a newline, so readline returns and we drop the line. */
static int repl_getc(FILE *in)
{
    for (;;) {
        unsigned char c;
        ssize_t n = read(fileno(in), &c, 1);
        if (n == 1) return c;
        if (n == 0) return EOF;
        if (errno != EINTR) return EOF;
        if (pv_interrupted()) {
            pv_interrupt_clear();
            lua_sethook(repl_L, NULL, 0, 0);
            line_cancelled = true;
            rl_point = rl_end;
            rl_redisplay();
            fputs("^C", rl_outstream);
            fflush(rl_outstream);
            return '\n';
        }
    }
}

static char history_path[4096];

static void history_open(void)
{
    const char *file = getenv("PGVAULT_HISTORY");
    const char *home = getenv("HOME");
    if (file && *file)
        snprintf(history_path, sizeof history_path, "%s", file);
    else if (home && *home)
        snprintf(history_path, sizeof history_path, "%s/.pgvault_history", home);
    stifle_history(HISTORY_MAX);
    if (!history_path[0] || read_history(history_path) != 0) return;
    /* A file written by an older pgvault (or by hand) may hold secrets. */
    bool purged = false;
    for (int i = history_length - 1; i >= 0; i--) {
        HIST_ENTRY *e = history_get(history_base + i);
        if (e && pv_redacts(e->line)) {
            free_history_entry(remove_history(i));
            purged = true;
        }
    }
    if (purged) write_history(history_path);
}

/* A line that holds anything the redactor would mask (a URL's password,
 * an age identity, a token, a registered secret) is never stored. */
static void history_add(const char *chunk)
{
    if (!*chunk || pv_redacts(chunk)) return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, chunk) == 0) return;
    add_history(chunk);
    if (history_path[0]) {
        /* Appending as we go keeps history even if the shell is killed. */
        if (append_history(1, history_path) != 0) write_history(history_path);
        history_truncate_file(history_path, HISTORY_MAX);
    }
}

/* ------------------------------------------------------------------ */
/* Completion                                                          */
/* ------------------------------------------------------------------ */

static char **matches;
static size_t nmatches, match_cap;

static void add_match(const char *prefix, size_t plen, const char *key, const char *word)
{
    size_t wl = strlen(word), kl = strlen(key);
    if (kl < wl - plen || strncmp(key, word + plen, wl - plen) != 0) return;
    if (nmatches + 2 > match_cap) {
        size_t cap = match_cap ? match_cap * 2 : 32;
        char **m = realloc(matches, cap * sizeof *m);
        if (!m) return;
        matches = m;
        match_cap = cap;
    }
    char *s = malloc(plen + kl + 1);
    if (!s) return;
    memcpy(s, prefix, plen);
    memcpy(s + plen, key, kl + 1);
    for (size_t i = 0; i < nmatches; i++)
        if (strcmp(matches[i], s) == 0) {
            free(s);
            return;
        }
    matches[nmatches++] = s;
}

/* Adds the string keys of the table at top (and of its __index table). */
static void add_keys(lua_State *L, const char *prefix, size_t plen, const char *word, int depth)
{
    if (depth > 3) return;
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING) add_match(prefix, plen, lua_tostring(L, -2), word);
            lua_pop(L, 1);
        }
    }
    if (lua_getmetatable(L, -1)) {
        lua_getfield(L, -1, "__index");
        if (lua_istable(L, -1)) add_keys(L, prefix, plen, word, depth + 1);
        lua_pop(L, 2);
    }
}

static int compare_matches(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replaces the table on top by its field `part`, looked up with rawget or
 * through a metatable's __index table, never by calling anything. */
static void index_plainly(lua_State *L, const char *part)
{
    if (lua_istable(L, -1)) {
        lua_pushstring(L, part);
        lua_rawget(L, -2);
    } else {
        lua_pushnil(L);
    }
    if (lua_isnil(L, -1) && lua_getmetatable(L, -2)) {
        lua_getfield(L, -1, "__index");
        lua_remove(L, -2);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, part);
            lua_remove(L, -2);
        }
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
}

/* Walks "a.b." (or "a.b:") from the globals on top; false when nothing
 * is there. */
static bool walk_path(lua_State *L, const char *text, size_t plen)
{
    char path[512];
    if (plen >= sizeof path) return false;
    memcpy(path, text, plen - 1);
    path[plen - 1] = '\0';
    char *save = NULL;
    for (char *part = strtok_r(path, ".:", &save); part; part = strtok_r(NULL, ".:", &save)) {
        index_plainly(L, part);
        if (lua_isnil(L, -1)) return false;
    }
    return true;
}

/* Readline wants [common prefix, match1, ..., NULL]; takes the matches. */
static char **readline_matches(void)
{
    qsort(matches, nmatches, sizeof *matches, compare_matches);
    char **out = malloc((nmatches + 2) * sizeof *out);
    if (!out) {
        for (size_t i = 0; i < nmatches; i++)
            free(matches[i]);
        free(matches);
        matches = NULL;
        return NULL;
    }
    size_t common = strlen(matches[0]);
    for (size_t i = 1; i < nmatches; i++) {
        size_t k = 0;
        while (k < common && matches[i][k] == matches[0][k])
            k++;
        common = k;
    }
    out[0] = strndup(matches[0], common);
    for (size_t i = 0; i < nmatches; i++)
        out[i + 1] = matches[i];
    out[nmatches + 1] = NULL;
    if (nmatches == 1) {
        free(out[0]);
        out[0] = out[1];
        out[1] = NULL;
    }
    free(matches);
    matches = NULL;
    return out;
}

/* Completes a global, a field (a.b.c, a.b:c) or a keyword. */
static char **complete(const char *text, int start, int end)
{
    (void)start, (void)end;
    lua_State *L = repl_L;
    int top = lua_gettop(L);
    nmatches = 0;
    matches = NULL;
    match_cap = 0;
    rl_attempted_completion_over = 1;
    rl_completion_suppress_append = 1;
    const char *sep = NULL;
    for (const char *p = text; *p; p++)
        if (*p == '.' || *p == ':') sep = p;
    size_t plen = sep ? (size_t)(sep - text) + 1 : 0;
    lua_pushglobaltable(L);
    if (!sep || walk_path(L, text, plen)) add_keys(L, text, plen, text, 0);
    if (!sep) {
        static const char *const keywords[] = {
            "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
            "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
            "repeat",   "return", "then", "true", "until",  "while", NULL};
        for (int i = 0; keywords[i]; i++)
            add_match("", 0, keywords[i], text);
    }
    lua_settop(L, top);
    if (nmatches > 0) return readline_matches();
    free(matches);
    matches = NULL;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Evaluation                                                          */
/* ------------------------------------------------------------------ */

static bool incomplete(lua_State *L, int status)
{
    if (status != LUA_ERRSYNTAX) return false;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

/* Appends a continuation line to the chunk being typed; NULL when out of
 * memory (both are freed). */
static char *join_lines(char *chunk, char *line)
{
    if (!chunk) return line;
    size_t n = strlen(chunk) + strlen(line) + 2;
    char *joined = malloc(n);
    if (joined) snprintf(joined, n, "%s\n%s", chunk, line);
    free(chunk);
    free(line);
    return joined;
}

/* Runs a compiled chunk (on top) and prints what it returns, or reports
 * its error; the REPL goes on either way. */
static void run_compiled(lua_State *L, int base)
{
    int status = pv_runtime_pcall(L, 0, LUA_MULTRET);
    lua_sethook(L, NULL, 0, 0);
    if (status != LUA_OK) {
        pv_runtime_report(L, "repl");
        lua_settop(L, base);
    }
    pv_interrupt_clear();
    if (status == LUA_OK) pv_runtime_print(L, base);
}

static void repl_setup(lua_State *L)
{
    repl_L = L;
    rl_readline_name = "pgvault";
    rl_catch_signals = 0;
    rl_getc_function = repl_getc;
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
    rl_completion_append_character = '\0';
    history_open();
    printf("pgvault %s (%s): Lua with pgvault's modules (pg, stream, s3 ...). Ctrl-D leaves.\n",
           PGVAULT_VERSION, LUA_RELEASE);
    fflush(stdout);
}

int pv_repl(lua_State *L)
{
    repl_setup(L);
    char *chunk = NULL;
    for (;;) {
        line_cancelled = false;
        char *line = readline(chunk ? PROMPT2 : PROMPT);
        if (line_cancelled) {
            free(line);
            free(chunk);
            chunk = NULL;
            continue;
        }
        if (!line) break; /* Ctrl-D */
        if (!(chunk = join_lines(chunk, line))) break;
        int base = lua_gettop(L);
        int status = pv_runtime_compile(L, chunk, "=stdin");
        if (incomplete(L, status)) {
            lua_settop(L, base);
            continue;
        }
        history_add(chunk);
        free(chunk);
        chunk = NULL;
        if (status == LUA_OK) {
            run_compiled(L, base);
        } else {
            pv_runtime_report(L, "repl");
            lua_settop(L, base);
        }
    }
    free(chunk);
    printf("\n");
    return 0;
}
