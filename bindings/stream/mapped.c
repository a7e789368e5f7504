/*
 * mapped.c: the file reader's way through a regular file: its bytes are
 * passed on straight from the page cache, through a window of the file's
 * mapping (4 MiB at a time), where read() would copy each of them once more
 * into a buffer first. That copy was the kernel's share of verify's CPU:
 * 0.5-0.7 s of ~8 for a 1.4 GB .zst (the window costs at most 4 MiB of
 * resident memory more than read()'s buffer).
 *
 * A mapping has a hazard read() has not: when the file shrinks while it is
 * mapped (another process truncates it), a page past its new end raises
 * SIGBUS, whose default action ends the process. The guard: a SIGBUS
 * handler that, for an address in a window registered here, maps a page of
 * zeros over that page and marks the window. After each chunk the reader
 * looks at the mark and fails with "FILE changed while it was read", so the
 * pipeline fails and nothing downstream takes the bytes for the file's. A
 * SIGBUS anywhere else gets the previous action back (the default: the
 * process ends with the signal, as it would have).
 *
 * A file that cannot be mapped (a file system without mmap) is read with
 * read(): pv_mapped_read returns 1 before it has passed anything on.
 */
#include "stages.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define WINDOW ((size_t)4 << 20)
#define GUARDS 32

/* A window being read: [start, end); `hit` when a page of it was gone. */
typedef struct {
    atomic_bool used;
    atomic_uintptr_t start, end;
    atomic_bool hit;
} guard;

static guard guards[GUARDS];
static struct sigaction previous;
static uintptr_t page_size;
static pthread_once_t installed = PTHREAD_ONCE_INIT;
static bool install_ok;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < GUARDS && si->si_code == BUS_ADRERR; i++) {
        uintptr_t s = atomic_load(&guards[i].start);
        if (s == 0 || a < s || a >= atomic_load(&guards[i].end)) continue;
        void *page = (void *)(a & ~(page_size - 1));
        if (mmap(page, page_size, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
            page) {
            atomic_store(&guards[i].hit, true);
            return; /* the access is made again, and reads zeros */
        }
    }
    /* not a window's (or sent by kill): the previous action takes it */
    sigaction(SIGBUS, &previous, NULL);
    raise(SIGBUS);
}

static void install(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    page_size = (uintptr_t)ps;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    install_ok = sigaction(SIGBUS, &sa, &previous) == 0;
}

static guard *guard_claim(void)
{
    for (int i = 0; i < GUARDS; i++) {
        bool free_slot = false;
        if (atomic_compare_exchange_strong(&guards[i].used, &free_slot, true)) return &guards[i];
    }
    return NULL;
}

static void guard_window(guard *g, const uint8_t *p, size_t len)
{
    atomic_store(&g->hit, false);
    atomic_store(&g->end, (uintptr_t)p + len);
    atomic_store(&g->start, (uintptr_t)p);
}

static void guard_off(guard *g)
{
    atomic_store(&g->start, (uintptr_t)0);
}

static int changed(const char *path, uint64_t at, pv_err *err)
{
    pv_err_set(err, "io",
               "cannot read %s: it changed while it was read (it was cut short near byte %llu): "
               "read it again once nothing is writing it",
               path, (unsigned long long)at);
    pv_err_str(err, "path", path);
    return -1;
}

/* Whether the file is now shorter than `end`. */
static bool shrunk(int fd, uint64_t end)
{
    struct stat sb;
    return fstat(fd, &sb) == 0 && (uint64_t)sb.st_size < end;
}

/* Passes on one window, a chunk at a time. A page gone under a stage that
 * reads it is a SIGBUS (the guard marks it); under a system call that
 * reads it (a write to a pipe, a socket) it is EFAULT, "Bad address": so a
 * failure downstream is also put down to the file when it has shrunk. */
static int emit_window(pv_stage *s, guard *g, int fd, const uint8_t *m, size_t len, uint64_t off,
                       const char *path, pv_err *err)
{
    for (size_t o = 0; o < len; o += PV_STREAM_CHUNK) {
        size_t n = len - o < PV_STREAM_CHUNK ? len - o : PV_STREAM_CHUNK;
        int rc = pv_emit(s, m + o, n, err);
        if (atomic_load(&g->hit) || (rc < 0 && shrunk(fd, off + len))) {
            pv_err_clear(err);
            return changed(path, off + o, err);
        }
        if (rc < 0) return -1;
    }
    return 0;
}

/* Passes on the file open on `fd` from its start up to the size it had at
 * the start, window by window; *done is where it stopped (what follows,
 * bytes appended meanwhile, is for read()). Returns 0, -1 on an error, or
 * 1 when the file is not mapped at all (not a regular file, or mmap
 * refused: nothing was passed on). */
int pv_mapped_read(pv_stage *s, int fd, const char *path, uint64_t *done, pv_err *err)
{
    struct stat sb;
    *done = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) return 1;
    pthread_once(&installed, install);
    guard *g = install_ok ? guard_claim() : NULL;
    if (!g) return 1;
    uint64_t size = (uint64_t)sb.st_size;
    int rc = 0;
    for (uint64_t off = 0; off < size && rc == 0; off += WINDOW) {
        size_t len = size - off < WINDOW ? (size_t)(size - off) : WINDOW;
        uint8_t *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
        if (m == MAP_FAILED && off == 0) {
            rc = 1;
            break;
        }
        if (m == MAP_FAILED) {
            pv_err_errno(err, errno, "cannot read %s", path);
            pv_err_str(err, "path", path);
            rc = -1;
            break;
        }
        if (off + len < size)
            posix_fadvise(fd, (off_t)(off + len), (off_t)WINDOW, POSIX_FADV_WILLNEED);
        guard_window(g, m, len);
        rc = emit_window(s, g, fd, m, len, off, path, err);
        guard_off(g);
        munmap(m, len);
        if (rc == 0) *done = off + len;
    }
    atomic_store(&g->used, false);
    return rc;
}
