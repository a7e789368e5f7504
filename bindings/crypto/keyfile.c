/*
 * keyfile.c: key files of pgvault.crypto (age identities, recipients and
 * passphrases; minisign keys): read whole into sodium_malloc'd memory, and
 * written as new files only (0600, never over an existing one, never half
 * written under the final name).
 */
#include "age.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A new temporary file beside `path`: ".<name>.<random>.partial", 0600. */
static int create_temp(const char *path, char *tmp, size_t cap, pv_err *err)
{
    char *copy = strdup(path), *copy2 = strdup(path);
    if (!copy || !copy2) {
        free(copy);
        free(copy2);
        pv_err_set(err, "io", "out of memory");
        return -1;
    }
    uint8_t rnd[8];
    char hex[17];
    randombytes_buf(rnd, sizeof rnd);
    pv_hex(rnd, sizeof rnd, hex);
    int n = snprintf(tmp, cap, "%s/.%s.%s.partial", dirname(copy), basename(copy2), hex);
    free(copy);
    free(copy2);
    if (n < 0 || (size_t)n >= cap) {
        pv_err_set(err, "io", "cannot create %s: the name is too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        pv_err_errno(err, errno, "cannot create %s", path);
        pv_err_str(err, "path", path);
        return -1;
    }
    if (fchmod(fd, 0600) < 0) {
        pv_err_errno(err, errno, "cannot set the mode of %s", tmp);
        close(fd);
        unlink(tmp);
        return -1;
    }
    return fd;
}

int age_write_new_file(const char *path, const char *data, size_t len, pv_err *err)
{
    if (strcmp(path, "-") == 0) {
        if (pv_write_all(STDOUT_FILENO, data, len) == 0) return 0;
        pv_err_errno(err, errno, "cannot write standard output");
        return -1;
    }
    char tmp[4096 + 64];
    int fd = create_temp(path, tmp, sizeof tmp, err);
    if (fd < 0) return -1;
    int rc = pv_write_all(fd, data, len);
    if (rc == 0) rc = fsync(fd);
    if (rc < 0) pv_err_errno(err, errno, "cannot write %s", path);
    if (close(fd) < 0 && rc == 0) {
        pv_err_errno(err, errno, "cannot write %s", path);
        rc = -1;
    }
    /* link() refuses a taken name where rename() would replace it */
    if (rc == 0 && link(tmp, path) < 0) {
        if (errno == EEXIST)
            pv_err_set(err, "exists",
                       "%s already exists: refusing to overwrite a key file; choose another "
                       "name or remove it first",
                       path);
        else
            pv_err_errno(err, errno, "cannot create %s", path);
        rc = -1;
    }
    unlink(tmp);
    if (rc < 0) pv_err_str(err, "path", path);
    return rc;
}
