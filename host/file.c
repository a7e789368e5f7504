/*
 * file.c: pv_file, the one way pgvault creates a file under a final name:
 * a new temporary file (O_EXCL|O_NOFOLLOW, random name) in the target's
 * directory, put in place by link() or rename() once complete; devices and
 * FIFOs written through. See pgvault.h for the rules.
 */
#include "pgvault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes of the target's name kept in the temporary name: with the dot,
 * the random part and ".partial" it stays well within NAME_MAX. */
#define TEMP_NAME_KEEP 200

static int fail_errno(pv_file *f, pv_err *err, int errnum, const char *what)
{
    pv_err_errno(err, errnum, "%s %s", what, f->path);
    pv_err_str(err, "path", f->path);
    return -1;
}

static int fail_io(pv_file *f, pv_err *err, const char *why)
{
    pv_err_set(err, "io", "cannot write %s: %s", f->path, why);
    pv_err_str(err, "path", f->path);
    return -1;
}

static int fail_exists(pv_file *f, pv_err *err)
{
    pv_err_set(err, "exists", "%s already exists; choose another name or remove it first", f->path);
    pv_err_str(err, "path", f->path);
    return -1;
}

void pv_file_init(pv_file *f)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

/* ".<name>.<random>.partial" beside the target, the name cut (at a UTF-8
 * character boundary) so that the whole stays a valid file name. */
static int temp_name(pv_file *f, pv_err *err)
{
    const char *slash = strrchr(f->path, '/');
    size_t dirlen = slash ? (size_t)(slash - f->path) + 1 : 0;
    const char *base = f->path + dirlen;
    size_t keep = strlen(base);
    if (keep > TEMP_NAME_KEEP) {
        keep = TEMP_NAME_KEEP;
        while (keep > 0 && ((unsigned char)base[keep] & 0xC0) == 0x80)
            keep--;
    }
    uint8_t rnd[6];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return fail_errno(f, err, errno, "cannot name a temporary file for");
    char hex[2 * sizeof rnd + 1];
    pv_hex(rnd, sizeof rnd, hex);
    int n = snprintf(f->temp, sizeof f->temp, "%.*s.%.*s.%s.partial", (int)dirlen, f->path,
                     (int)keep, base, hex);
    if (n < 0 || (size_t)n >= sizeof f->temp) {
        f->temp[0] = '\0';
        return fail_io(f, err, "the path is too long");
    }
    return 0;
}

static int open_temp(pv_file *f, pv_err *err)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        if (temp_name(f, err) < 0) return -1;
        f->fd = open(f->temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (f->fd >= 0) return 0;
        if (errno != EEXIST) break;
    }
    int e = errno;
    f->temp[0] = '\0';
    return fail_errno(f, err, e, "cannot create");
}

/* Devices and FIFOs: renaming over /dev/null would replace the device
 * node for everyone, so they are opened and written as they are. */
static int open_through(pv_file *f, pv_err *err)
{
    f->fd = open(f->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (f->fd < 0) return fail_errno(f, err, errno, "cannot open");
    struct stat sb;
    if (fstat(f->fd, &sb) < 0 || S_ISREG(sb.st_mode)) {
        close(f->fd);
        f->fd = -1;
        return fail_io(f, err, "it was replaced while being opened; try again");
    }
    f->through = true;
    return 0;
}

int pv_file_open(pv_file *f, const char *path, mode_t mode, bool no_clobber, pv_err *err)
{
    pv_file_init(f);
    f->mode = mode;
    f->no_clobber = no_clobber;
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path) {
        pv_err_set(err, "io", "cannot write %.200s...: the path is too long", path);
        return -1;
    }
    struct stat sb;
    if (lstat(path, &sb) < 0) {
        if (errno != ENOENT) return fail_errno(f, err, errno, "cannot inspect");
        return open_temp(f, err);
    }
    if (S_ISDIR(sb.st_mode)) return fail_io(f, err, "it is a directory");
    if (S_ISLNK(sb.st_mode)) {
        struct stat target;
        if (stat(path, &target) == 0 && !S_ISREG(target.st_mode) && !S_ISDIR(target.st_mode))
            return open_through(f, err); /* /dev/stdout and the like */
        if (no_clobber) return fail_exists(f, err);
        return fail_io(f, err, "it is a symbolic link (name the file itself, or remove the link)");
    }
    if (!S_ISREG(sb.st_mode)) return open_through(f, err);
    if (no_clobber) return fail_exists(f, err);
    return open_temp(f, err);
}

int pv_file_write(pv_file *f, const void *data, size_t len, pv_err *err)
{
    if (pv_write_all(f->fd, data, len) == 0) return 0;
    if (pv_interrupted()) {
        pv_err_set(err, "interrupted", "interrupted by signal %d", pv_interrupt_signal());
        return -1;
    }
    return fail_errno(f, err, errno, "cannot write");
}

static void fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return;
    fsync(dfd);
    close(dfd);
}

/* link() fails when the name is taken, where rename() would replace it. A
 * file system without hard links gets renameat2's RENAME_NOREPLACE. */
static int place_no_clobber(pv_file *f, pv_err *err)
{
    if (link(f->temp, f->path) == 0) {
        unlink(f->temp);
        return 0;
    }
    int e = errno;
    if (e == EPERM || e == EOPNOTSUPP || e == ENOSYS) {
        if (renameat2(AT_FDCWD, f->temp, AT_FDCWD, f->path, RENAME_NOREPLACE) == 0) return 0;
        if (errno != EINVAL) e = errno;
    }
    if (e == EEXIST) return fail_exists(f, err);
    return fail_errno(f, err, e, "cannot create");
}

static int place_replace(pv_file *f, pv_err *err)
{
    struct stat sb;
    if (lstat(f->path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return fail_io(f, err, "something that is not a regular file appeared under that name");
    if (rename(f->temp, f->path) < 0)
        return fail_errno(f, err, errno, "cannot rename a temporary file to");
    return 0;
}

int pv_file_commit(pv_file *f, pv_err *err)
{
    if (f->fd < 0) {
        pv_err_set(err, "internal", "%s is not open for writing", f->path);
        return -1;
    }
    int fd = f->fd;
    if (f->through) {
        f->fd = -1;
        close(fd); /* a device or FIFO: nothing to make durable */
        f->committed = true;
        return 0;
    }
    if (fchmod(fd, f->mode) < 0) return fail_errno(f, err, errno, "cannot set the mode of");
    if (fsync(fd) < 0) return fail_errno(f, err, errno, "cannot flush to disk");
    f->fd = -1;
    if (close(fd) < 0) return fail_errno(f, err, errno, "cannot close");
    if ((f->no_clobber ? place_no_clobber : place_replace)(f, err) < 0) return -1;
    f->temp[0] = '\0';
    f->committed = true;
    fsync_dir_of(f->path);
    return 0;
}

void pv_file_abort(pv_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    if (f->temp[0]) {
        unlink(f->temp);
        f->temp[0] = '\0';
    }
}
