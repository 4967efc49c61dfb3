/* SPDX-License-Identifier: BSD-3-Clause */
/* Socket names (paths and @abstract names), listening and connecting. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int afdt__addr_parse(const char *name, struct afdt__addr *a, struct afdt__fail *f) {
    memset(a, 0, sizeof(*a));
    a->sun.sun_family = AF_UNIX;
    if (name == NULL || name[0] == '\0' || (name[0] == '@' && name[1] == '\0'))
        return afdt__fail(f, AFDT_PATHNAME, EINVAL, "socket name is NULL or empty");
    size_t n = strlen(name);
    if (name[0] == '@') {
        /* Abstract: a leading NUL, then the name with no trailing NUL; the
         * address length is exact, as systemd, Go and Python spell it. */
        if (n > sizeof(a->sun.sun_path))
            return afdt__fail(f, AFDT_PATHNAME, ENAMETOOLONG, "abstract socket name is too long");
        memcpy(a->sun.sun_path + 1, name + 1, n - 1);
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        a->abstract = true;
        return 0;
    }
    if (n >= sizeof(a->sun.sun_path))
        return afdt__fail(f, AFDT_PATHNAME, ENAMETOOLONG, "socket path is too long for sun_path");
    memcpy(a->sun.sun_path, name, n);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int afdt__socket(int flags, struct afdt__fail *f) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
    if (fd < 0)
        return afdt__fail(f, AFDT_SOCKET, errno, "");
    return fd;
}

int afdt__listen_addr(const struct afdt__addr *a, int flags, unsigned mode, struct afdt__fail *f) {
    int fd = afdt__socket(flags, f);
    if (fd < 0)
        return -1;
    if (bind(fd, (const struct sockaddr *)&a->sun, a->len) < 0) {
        afdt__fail(f, AFDT_BIND, errno, "");
        goto fail;
    }
    /* Between bind and listen nobody can connect yet, so the mode is in
     * force before the first peer can reach us. */
    if (mode && !a->abstract && chmod(a->sun.sun_path, (mode_t)mode) < 0) {
        afdt__fail(f, AFDT_BIND, errno, "could not set the socket file's mode");
        goto fail_unlink;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        afdt__fail(f, AFDT_LISTEN, errno, "");
        goto fail_unlink;
    }
    return fd;
fail_unlink:
    /* We created the file a moment ago; nobody else can be using it. */
    if (!a->abstract)
        (void)unlink(a->sun.sun_path);
fail:
    afdt__close(fd);
    return -1;
}

/* Whether something listens at @a: a connect that is refused means the file
 * is stale.  Any other answer (even a full backlog) means it is alive. */
static bool is_stale(const struct afdt__addr *a) {
    struct afdt__fail f;
    int s = afdt__socket(SOCK_NONBLOCK, &f);
    if (s < 0)
        return false;
    int r = afdt__connect_once(s, a);
    afdt__close(s);
    return r == -ECONNREFUSED;
}

int afdt__listen_replacing(const struct afdt__addr *a, int flags, unsigned mode,
                           struct afdt__fail *f) {
    if (a->abstract)
        return afdt__listen_addr(a, flags, mode, f);
    /* Two servers starting at once must not both judge the file stale and
     * remove each other's: they take turns on a lock file beside it, which
     * is never removed (removing lock files reopens the race). */
    char lock_path[sizeof(a->sun.sun_path) + 8];
    snprintf(lock_path, sizeof(lock_path), "%s.lock", a->sun.sun_path);
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock < 0)
        return afdt__fail(f, AFDT_BIND, errno, "could not open the socket's lock file");
    int r;
    while ((r = flock(lock, LOCK_EX)) < 0 && errno == EINTR) {
    }
    if (r < 0) {
        afdt__fail(f, AFDT_BIND, errno, "could not lock the socket's lock file");
        afdt__close(lock);
        return -1;
    }
    int fd = afdt__listen_addr(a, flags, mode, f);
    if (fd < 0 && f->op == AFDT_BIND && f->errnum == EADDRINUSE && is_stale(a)) {
        struct stat st;
        if (lstat(a->sun.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
            unlink(a->sun.sun_path) == 0)
            fd = afdt__listen_addr(a, flags, mode, f);
    }
    afdt__close(lock); /* releases the lock */
    return fd;
}

int afdt__connect_once(int sock, const struct afdt__addr *a) {
    for (;;) {
        if (connect(sock, (const struct sockaddr *)&a->sun, a->len) == 0)
            return 0;
        /* A Unix connect interrupted by a signal has not begun: retry it.
         * EISCONN after a retry means the first attempt got through. */
        if (errno == EINTR)
            continue;
        return errno == EISCONN ? 0 : -errno;
    }
}

AFDT_EXPORT int afdt_listen(const char *fname, struct afdt_error_t *err) {
    struct afdt__fail f;
    struct afdt__addr a;
    if (afdt__addr_parse(fname, &a, &f) < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    int fd = afdt__listen_addr(&a, 0, 0, &f);
    if (fd < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    return fd;
}

AFDT_EXPORT int afdt_connect(const char *fname, struct afdt_error_t *err) {
    struct afdt__fail f;
    struct afdt__addr a;
    if (afdt__addr_parse(fname, &a, &f) < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    int fd = afdt__socket(0, &f);
    if (fd < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    int r = afdt__connect_once(fd, &a);
    if (r < 0) {
        afdt__close(fd);
        afdt__fail(&f, AFDT_CONNECT, -r, "");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    return fd;
}
