/* SPDX-License-Identifier: BSD-3-Clause */
/* Helpers shared by the fuzz targets (see fuzz_util.h). */
#include "fuzz_util.h"

#include "afdt.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void (*violation_hook)(void);

uint8_t script_u8(struct script *s) {
    if (s->left == 0)
        return 0;
    s->left--;
    return *s->p++;
}

size_t script_bytes(struct script *s, uint8_t *out, size_t n) {
    size_t k = n < s->left ? n : s->left;
    if (k > 0)
        memcpy(out, s->p, k);
    s->p += k;
    s->left -= k;
    return k;
}

#define FD_BITS 32768

/* Walk /proc/self/fd; mark each open descriptor below FD_BITS in @open_fds
 * (if not NULL).  Returns how many are open. */
static int scan_fds(uint8_t *open_fds) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        fuzz_violation("cannot open /proc/self/fd to count descriptors");
    int self = dirfd(d), n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == self)
            continue;
        n++;
        if (open_fds && fd >= 0 && fd < FD_BITS)
            open_fds[fd / 8] = (uint8_t)(open_fds[fd / 8] | 1u << (fd % 8));
    }
    closedir(d);
    return n;
}

int fuzz_fd_count(void) {
    return scan_fds(NULL);
}

int fuzz_settled_fd_count(int want) {
    int n;
    for (int ms = 0; (n = fuzz_fd_count()) != want && ms < 5000; ms++)
        poll(NULL, 0, 1);
    return n;
}

int fuzz_free_fd(unsigned n) {
    static uint8_t open_fds[FD_BITS / 8];
    memset(open_fds, 0, sizeof(open_fds));
    scan_fds(open_fds);
    unsigned seen = 0;
    for (int fd = 0; fd < FD_BITS; fd++) {
        if (open_fds[fd / 8] & (1u << (fd % 8)))
            continue;
        if (seen++ == n)
            return fd;
    }
    return FD_BITS;
}

int fuzz_devnull(void) {
    static int fd = -1;
    if (fd < 0) {
        fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0)
            fuzz_violation("cannot open /dev/null");
    }
    return fd;
}

bool fuzz_is_devnull_copy(int fd) {
    struct stat a, b;
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || !(fl & FD_CLOEXEC))
        return false;
    if (fstat(fd, &a) < 0 || fstat(fuzz_devnull(), &b) < 0)
        return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino && fd != fuzz_devnull();
}

void fuzz_on_violation(void (*hook)(void)) {
    violation_hook = hook;
}

void fuzz_violation(const char *fmt, ...) {
    if (violation_hook)
        violation_hook();
    va_list ap;
    fputs("afdt fuzz: invariant violated: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

long fuzz_send_devnulls(int sock, const uint8_t *data, size_t len, uint32_t nfds) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * AFDT_MAX_FDS)];
    } cm;
    struct iovec iov = {(void *)data, len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        int fds[AFDT_MAX_FDS];
        for (uint32_t i = 0; i < nfds; i++)
            fds[i] = fuzz_devnull();
        memset(cm.buf, 0, sizeof(cm.buf));
        msg.msg_control = cm.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return (long)sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
}
