/*
 * bins.c: finding pg_dump, pg_restore and psql. Debian keeps one set per
 * major version in /usr/lib/postgresql/<N>/bin; PATH may hold another.
 * Each candidate's version comes from running it with --version, so a
 * --pg-bin directory of any layout works.
 */
#include "dump.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CANDIDATES 32
#define DEBIAN_DIR "/usr/lib/postgresql"

static bool is_executable(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && access(path, X_OK) == 0;
}

/* Versions already probed in this process, by path and modification time. */
#define CACHE_SIZE 16
static struct {
    dump_bin bin;
    struct timespec mtime;
} cache[CACHE_SIZE];
static int ncache;

static int probe_version_uncached(const char *path, dump_bin *out);

static int probe_version(const char *path, dump_bin *out)
{
    struct stat sb;
    if (stat(path, &sb) < 0) return -1;
    for (int i = 0; i < ncache; i++)
        if (strcmp(cache[i].bin.path, path) == 0 && cache[i].mtime.tv_sec == sb.st_mtim.tv_sec &&
            cache[i].mtime.tv_nsec == sb.st_mtim.tv_nsec) {
            *out = cache[i].bin;
            return 0;
        }
    if (probe_version_uncached(path, out) < 0) return -1;
    int slot = ncache < CACHE_SIZE ? ncache++ : 0;
    cache[slot].bin = *out;
    cache[slot].mtime = sb.st_mtim;
    return 0;
}

/* Runs `path --version` and parses "pg_dump (PostgreSQL) 15.18 (...)". */
static int probe_version_uncached(const char *path, dump_bin *out)
{
    const char *argv[] = {path, "--version", NULL};
    pv_child c;
    pv_err err;
    pv_err_clear(&err);
    if (pv_child_spawn(&c, argv, NULL, NULL, PV_PIPE_OUT | PV_PIPE_ERR | PV_NULL_IN, &err) < 0)
        return -1;
    close(c.err_fd); /* its complaints are of no use here */
    c.err_fd = -1;
    char buf[256];
    size_t len = 0;
    for (;;) {
        ssize_t n = pv_read_some(c.out_fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof buf - 1) break;
    }
    buf[len] = '\0';
    pv_child_close_fds(&c);
    int status = pv_child_wait(&c);
    if (status != 0) return -1;
    const char *v = strstr(buf, "(PostgreSQL) ");
    if (!v) return -1;
    v += strlen("(PostgreSQL) ");
    int major = atoi(v);
    if (major <= 0) return -1;
    size_t vl = strcspn(v, " \n");
    if (vl >= sizeof out->version) vl = sizeof out->version - 1;
    size_t pl = strnlen(path, sizeof out->path - 1);
    memcpy(out->path, path, pl);
    out->path[pl] = '\0';
    memcpy(out->version, v, vl);
    out->version[vl] = '\0';
    out->major = major;
    return 0;
}

/* Skips files already listed, and links to something not named like the
 * program: Debian's /usr/bin/pg_dump is pg_wrapper (a Perl script choosing
 * among the very /usr/lib/postgresql/N/bin directories we look at). */
static void add_candidate(char (*cands)[DUMP_PATH_MAX], int *n, const char *path,
                          const char *program)
{
    if (*n >= MAX_CANDIDATES || !is_executable(path)) return;
    char real[PATH_MAX], other[PATH_MAX];
    if (!realpath(path, real)) return;
    const char *base = strrchr(real, '/');
    if (program && strcmp(base ? base + 1 : real, program) != 0) return;
    for (int i = 0; i < *n; i++)
        if (realpath(cands[i], other) && strcmp(other, real) == 0) return;
    snprintf(cands[(*n)++], DUMP_PATH_MAX, "%s", path);
}

int dump_find_bin(const char *program, const char *pg_bin, int min_major, dump_bin *out,
                  pv_err *err)
{
    static char cands[MAX_CANDIDATES][DUMP_PATH_MAX];
    int n = 0;
    char path[DUMP_PATH_MAX + 64];
    if (pg_bin) {
        snprintf(path, sizeof path, "%s/%s", pg_bin, program);
        if (!is_executable(path)) {
            pv_err_set(err, "config", "no %s in %s (--pg-bin must name a directory holding %s)",
                       program, pg_bin, program);
            pv_err_str(err, "program", program);
            return -1;
        }
        add_candidate(cands, &n, path, NULL);
    } else {
        DIR *d = opendir(DEBIAN_DIR);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s/bin/%s", DEBIAN_DIR, e->d_name, program);
            add_candidate(cands, &n, path, program);
        }
        if (d) closedir(d);
        const char *env_path = getenv("PATH");
        char *copy = strdup(env_path ? env_path : "/usr/bin:/bin");
        char *save = NULL;
        for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir;
             dir = strtok_r(NULL, ":", &save)) {
            snprintf(path, sizeof path, "%s/%s", *dir ? dir : ".", program);
            add_candidate(cands, &n, path, program);
        }
        free(copy);
    }
    dump_bin best = {.major = 0}, newest = {.major = 0};
    for (int i = 0; i < n; i++) {
        dump_bin b;
        if (probe_version(cands[i], &b) < 0) continue;
        if (b.major > newest.major) newest = b;
        if (b.major >= min_major && b.major > best.major) best = b;
    }
    if (best.major > 0) {
        *out = best;
        return 0;
    }
    char pkg[64];
    snprintf(pkg, sizeof pkg, "postgresql-client-%d", min_major > 0 ? min_major : 15);
    if (newest.major == 0)
        pv_err_set(err, "config", "no %s found%s%s: install %s%s", program,
                   pg_bin ? " in " : " (looked in " DEBIAN_DIR "/*/bin and PATH)",
                   pg_bin ? pg_bin : "", pkg, pg_bin ? " or fix --pg-bin" : "");
    else if (pg_bin)
        pv_err_set(err, "config",
                   "server is PostgreSQL %d but %s is version %s: point --pg-bin at a %s %d or "
                   "newer, or install %s",
                   min_major, newest.path, newest.version, program, min_major, pkg);
    else
        pv_err_set(err, "config",
                   "server is PostgreSQL %d but the newest %s here is %d (%s): install %s "
                   "(or pass --pg-bin DIR with a %s %d or newer)",
                   min_major, program, newest.major, newest.path, pkg, program, min_major);
    pv_err_str(err, "program", program);
    pv_err_str(err, "package", pkg);
    pv_err_int(err, "server_major", min_major);
    if (newest.major) pv_err_int(err, "found_major", newest.major);
    return -1;
}
