/*
 * keyfile.c: key files of pgvault.crypto (age identities, recipients and
 * passphrases; minisign keys): read whole into sodium_malloc'd memory, and
 * written as new files only, through the host's pv_file (0600, never over
 * an existing file, never half written under the final name).
 */
#include "age.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX (1 << 20)

char *age_read_secure(lua_State *L, const char *path, bool secret, size_t *len)
{
    bool is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) pv_raise_errno(L, errno, "cannot open", path);
    struct stat sb;
    if (!is_stdin && fstat(fd, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            close(fd);
            pv_raise(L, "io", "cannot read %s: it is a directory", path);
        }
        if (secret && S_ISREG(sb.st_mode) && (sb.st_mode & 077))
            pv_log(PV_LOG_WARN,
                   "%s holds secrets but is readable by group or others (mode %03o): run "
                   "'chmod 600 %s'",
                   path, (unsigned)(sb.st_mode & 0777), path);
    }
    char *buf = sodium_malloc(FILE_MAX + 1);
    if (!buf) {
        if (!is_stdin) close(fd);
        pv_raise(L, "crypto", "cannot allocate secure memory");
    }
    size_t n = 0;
    for (;;) {
        ssize_t got = pv_read_some(fd, buf + n, FILE_MAX + 1 - n);
        if (got < 0 || (got > 0 && n + (size_t)got > FILE_MAX)) {
            int e = errno;
            sodium_free(buf);
            if (!is_stdin) close(fd);
            if (got < 0) pv_raise_errno(L, e, "cannot read", path);
            pv_raise(L, "io", "%s is larger than %d bytes: not a key file", path, FILE_MAX);
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    if (!is_stdin) close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

const char *age_next_line(const char *buf, size_t len, size_t *pos, size_t *n, int *lineno)
{
    while (*pos < len) {
        const char *s = buf + *pos;
        const char *nl = memchr(s, '\n', len - *pos);
        size_t l = nl ? (size_t)(nl - s) : len - *pos;
        *pos += l + (nl ? 1 : 0);
        (*lineno)++;
        while (l > 0 && (s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '\t'))
            l--;
        size_t lead = 0;
        while (lead < l && (s[lead] == ' ' || s[lead] == '\t'))
            lead++;
        if (l == lead || s[lead] == '#') continue;
        *n = l - lead;
        return s + lead;
    }
    return NULL;
}

int age_write_new_file(const char *path, const char *data, size_t len, pv_err *err)
{
    if (strcmp(path, "-") == 0) {
        if (pv_write_all(STDOUT_FILENO, data, len) == 0) return 0;
        pv_err_errno(err, errno, "cannot write standard output");
        return -1;
    }
    pv_file f;
    pv_file_init(&f);
    if (pv_file_open(&f, path, 0600, true, err) < 0 || pv_file_write(&f, data, len, err) < 0 ||
        pv_file_commit(&f, err) < 0) {
        pv_file_abort(&f);
        if (strcmp(err->kind, "exists") == 0)
            snprintf(err->message, sizeof err->message,
                     "%.900s already exists: refusing to overwrite a key file; choose another "
                     "name or remove it first",
                     path);
        return -1;
    }
    return 0;
}
