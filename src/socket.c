/* SPDX-License-Identifier: BSD-3-Clause */
/* Socket names (paths and @abstract names), listening and connecting. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
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

int afdt__listen_addr(const struct afdt__addr *a, int flags, struct afdt__fail *f) {
    int fd = afdt__socket(flags, f);
    if (fd < 0)
        return -1;
    if (bind(fd, (const struct sockaddr *)&a->sun, a->len) < 0) {
        afdt__fail(f, AFDT_BIND, errno, "");
        goto fail;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        afdt__fail(f, AFDT_LISTEN, errno, "");
        /* We created the file a moment ago; nobody else can be using it. */
        if (!a->abstract)
            (void)unlink(a->sun.sun_path);
        goto fail;
    }
    return fd;
fail:
    afdt__close(fd);
    return -1;
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
    int fd = afdt__listen_addr(&a, 0, &f);
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
