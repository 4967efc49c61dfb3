/* SPDX-License-Identifier: BSD-3-Clause */
/* Socket names (paths and @abstract names), listening and connecting. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
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
    _cleanup_close_ int fd = afdt__socket(flags, f);
    if (fd < 0)
        return -1;
    if (bind(fd, (const struct sockaddr *)&a->sun, a->len) < 0)
        return afdt__fail(f, AFDT_BIND, errno, "");
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
    return TAKE_FD(fd);
fail_unlink:
    /* We created the file a moment ago; nobody else can be using it. */
    if (!a->abstract)
        (void)unlink(a->sun.sun_path);
    return -1;
}

/* Whether nothing listens at @a: a connect that is refused.  Any other answer
 * (even a full backlog) means it is alive.  A server that has bound but not
 * yet called listen() is refused too, for the microseconds between the two:
 * a second look a little later tells it from a dead one. */
static bool is_stale(const struct afdt__addr *a) {
    for (int look = 0; look < 2; look++) {
        struct afdt__fail f;
        int s = afdt__socket(SOCK_NONBLOCK, &f);
        if (s < 0)
            return false;
        int r = afdt__connect_once(s, a);
        afdt__close(s);
        if (r != -ECONNREFUSED)
            return false;
        if (look == 0) {
            struct timespec pause = {0, 20 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    return true;
}

/* How long a replacer waits for another to release the lock file. */
#define LOCK_WAIT_MS 5000

/* Take the lock file beside the socket file.  It is removed when done, so a
 * waiter may end up holding a file that is no longer there: it checks, and
 * starts again on the new one.  Only a lock file of our own uid is used (one
 * another user made could be held for ever, and is not ours to remove), and
 * it is waited for at most LOCK_WAIT_MS. */
static int lock_beside(const char *lock_path, struct afdt__fail *f) {
    struct timespec start, now, pause = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lock < 0)
            return afdt__fail(f, AFDT_BIND, errno, "could not open the socket's lock file");
        struct stat held, named;
        if (fstat(lock, &held) < 0) {
            afdt__fail(f, AFDT_BIND, errno, "could not lock the socket's lock file");
            afdt__close(lock);
            return -1;
        }
        if (held.st_uid != geteuid()) {
            afdt__close(lock);
            return afdt__fail(f, AFDT_BIND, EPERM,
                              "the socket's lock file (PATH.lock) belongs to another user");
        }
        int r;
        for (;;) {
            r = flock(lock, LOCK_EX | LOCK_NB);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0 || errno != EWOULDBLOCK)
                break;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >=
                LOCK_WAIT_MS) {
                afdt__close(lock);
                return afdt__fail(f, AFDT_BIND, ETIMEDOUT,
                                  "the socket's lock file (PATH.lock) stayed locked for 5 s");
            }
            nanosleep(&pause, NULL);
        }
        if (r < 0) {
            afdt__fail(f, AFDT_BIND, errno, "could not lock the socket's lock file");
            afdt__close(lock);
            return -1;
        }
        if (stat(lock_path, &named) == 0 && named.st_dev == held.st_dev &&
            named.st_ino == held.st_ino)
            return lock;
        afdt__close(lock);
    }
}

int afdt__listen_replacing(const struct afdt__addr *a, int flags, unsigned mode,
                           struct afdt__fail *f) {
    int fd = afdt__listen_addr(a, flags, mode, f);
    if (fd >= 0 || a->abstract || f->op != AFDT_BIND || f->errnum != EADDRINUSE)
        return fd;
    /* The name is taken.  Replacers take turns on a lock file beside it, so
     * two of them never both judge it stale and remove each other's. */
    char lock_path[sizeof(a->sun.sun_path) + 8];
    snprintf(lock_path, sizeof(lock_path), "%s.lock", a->sun.sun_path);
    int lock = lock_beside(lock_path, f);
    if (lock < 0)
        return -1;
    fd = afdt__listen_addr(a, flags, mode, f);
    if (fd < 0 && f->op == AFDT_BIND && f->errnum == EADDRINUSE && is_stale(a)) {
        struct stat st;
        /* Only our own socket file is ours to remove. */
        if (lstat(a->sun.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == geteuid() &&
            unlink(a->sun.sun_path) == 0)
            fd = afdt__listen_addr(a, flags, mode, f);
    }
    (void)unlink(lock_path); /* while still holding it: see lock_beside() */
    afdt__close(lock);
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
    _cleanup_close_ int fd = afdt__socket(0, &f);
    if (fd < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    int r = afdt__connect_once(fd, &a);
    if (r < 0) {
        afdt__fail(&f, AFDT_CONNECT, -r, "");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    return TAKE_FD(fd);
}

/* Whether two local addresses name the same place. */
static bool same_addr(const struct sockaddr_storage *got, socklen_t got_len, const void *want,
                      uint32_t want_len) {
    const struct sockaddr *w = want;
    if (want_len < sizeof(sa_family_t) || w->sa_family != got->ss_family)
        return false;
    switch (got->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const void *)got, *b = want;
        return want_len >= sizeof(*b) && a->sin_port == b->sin_port &&
               a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const void *)got, *b = want;
        return want_len >= sizeof(*b) && a->sin6_port == b->sin6_port &&
               memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
    }
    case AF_UNIX: {
        /* Paths may come with or without their trailing NUL. */
        const char *a = ((const struct sockaddr_un *)(const void *)got)->sun_path;
        const char *b = ((const struct sockaddr_un *)want)->sun_path;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t la = got_len > off ? got_len - off : 0, lb = want_len > off ? want_len - off : 0;
        if (la > 0 && a[0] != '\0')
            la = strnlen(a, la);
        if (lb > 0 && b[0] != '\0')
            lb = strnlen(b, lb);
        return la == lb && memcmp(a, b, la) == 0;
    }
    default: return (size_t)got_len == want_len && memcmp(got, want, want_len) == 0;
    }
}

AFDT_EXPORT int afdt_check_socket(int fd, const struct afdt_socket_expect *want,
                                  struct afdt_error_t *err) {
    struct afdt__fail f;
    struct afdt_socket_expect w = {0};
    if (want == NULL || want->size < sizeof(uint32_t)) {
        afdt__fail(&f, AFDT_NO_OPERATION, EINVAL, "want is NULL or its size is not set");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    memcpy(&w, want, want->size < sizeof(w) ? want->size : sizeof(w));

    int type = 0, listening = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        afdt__fail(&f, AFDT_NO_OPERATION, errno == EBADF ? EBADF : ENOTSOCK,
                   "descriptor is not an open socket");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    struct sockaddr_storage local;
    socklen_t local_len = sizeof(local);
    memset(&local, 0, sizeof(local));
    len = sizeof(listening);
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        afdt__fail(&f, AFDT_NO_OPERATION, errno, "could not read the socket's state");
    else if (w.type && type != w.type)
        afdt__fail(&f, AFDT_NO_OPERATION, EPROTOTYPE, "socket is not of the expected type");
    else if (w.family && local.ss_family != w.family)
        afdt__fail(&f, AFDT_NO_OPERATION, EAFNOSUPPORT, "socket is not of the expected family");
    else if ((w.listening > 0 && !listening) || (w.listening < 0 && listening))
        afdt__fail(&f, AFDT_NO_OPERATION, EINVAL,
                   listening ? "socket is listening" : "socket is not listening");
    else if (w.addr && !same_addr(&local, local_len, w.addr, w.addr_len))
        afdt__fail(&f, AFDT_NO_OPERATION, EADDRNOTAVAIL,
                   "socket is not bound to the expected address");
    else
        return 0;
    return afdt__report(err, AFDT__KEEP_PHASE, &f);
}
