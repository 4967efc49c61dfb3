/* SPDX-License-Identifier: BSD-3-Clause */
/* sd_notify(3) datagrams, both ways. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int notify_open(const char *path) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int one = 1;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    (void)unlink(path); /* a link itself, never what it points to */
    /* The file gets its mode at bind, from the socket's (set here) less the umask (cleared
     * for the call): nothing is done to @path by name once it exists, since its directory may
     * belong to the user a generation runs as, who could swap it for a link to a file of
     * root's between a bind and a chmod.  Its directory decides who can reach it. */
    mode_t umask_was = umask(0);
    int r = fchmod(fd, 0666) < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ? -1 : 0;
    int e = errno;
    umask(umask_was);
    errno = e;
    if (r < 0 || setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* EXTEND_TIMEOUT_USEC=: plain digits (a sign, a space or an overflow is no number of
 * microseconds), at most NOTIFY_EXTEND_MAX_USEC. */
static void parse_extend(const char *v, struct notify_msg *m) {
    size_t n = strspn(v, "0123456789");
    if (n == 0 || v[n] != '\0' || n > 18) {
        snprintf(m->bad_extend, sizeof(m->bad_extend), "%.24s%s", v, strlen(v) > 24 ? "..." : "");
        return;
    }
    long long usec = atoll(v);
    m->has_extend = true;
    m->extend_usec = usec < NOTIFY_EXTEND_MAX_USEC ? usec : NOTIFY_EXTEND_MAX_USEC;
}

/* The lines of one datagram, as sd_notify(3) defines them. */
static void parse(char *msg, struct notify_msg *m) {
    for (char *line = msg, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strcmp(line, "READY=1") == 0) {
            m->ready = true;
        } else if (strncmp(line, "STATUS=", 7) == 0) {
            m->has_status = true;
            snprintf(m->status, sizeof(m->status), "%s", line + 7);
        } else if (strcmp(line, "STOPPING=1") == 0) {
            m->stopping = true;
        } else if (strncmp(line, "ERRNO=", 6) == 0) {
            m->errno_value = atoi(line + 6);
        } else if (strncmp(line, "EXTEND_TIMEOUT_USEC=", 20) == 0) {
            parse_extend(line + 20, m);
        }
    }
}

static void *close_all(void *arg) {
    int *fds = arg;
    for (int i = 1; i <= fds[0]; i++)
        close(fds[i]);
    free(fds);
    return NULL;
}

/* Close the @n descriptors a notification brought, without waiting and without changing them
 * (their options are the sender's too): the last close of a socket set to linger waits out
 * its linger time, so the closes are made by a short-lived thread of their own, which no
 * signal reaches.  Only if it cannot start are they made here. */
static void drop_fds(const int *fds, size_t n) {
    if (n == 0)
        return;
    int *copy = malloc((n + 1) * sizeof(int));
    if (copy) {
        copy[0] = (int)n;
        memcpy(copy + 1, fds, n * sizeof(int));
        pthread_attr_t attr;
        pthread_t t;
        sigset_t all, old;
        sigfillset(&all);
        bool started = false;
        if (pthread_attr_init(&attr) == 0) {
            pthread_sigmask(SIG_SETMASK, &all, &old);
            started = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                      pthread_create(&t, &attr, close_all, copy) == 0;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            pthread_attr_destroy(&attr);
        }
        if (started)
            return;
        free(copy);
    }
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

int notify_read(int fd, struct notify_msg *m) {
    char buf[4097];
    union {
        struct cmsghdr h;
        /* Room for all a datagram can carry (SCM_MAX_FD): the kernel would close any it
         * could not pass, in this process, where a lingering socket blocks. */
        char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
    } ctl;
    struct iovec iov = {buf, sizeof(buf) - 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
    ssize_t n;
    while ((n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
    }
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    memset(m, 0, sizeof(*m));
    /* The sender first, then its descriptors: sd_notify's FDSTORE=1 and BARRIER=1 send some,
     * and we keep none (a barrier's waiter is released when its pipe closes). */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(c), sizeof(uc));
            m->has_creds = true;
            m->uid = uc.uid;
            m->pid = uc.pid;
        }
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[253];
        if (nfds > 253)
            nfds = 253; /* SCM_MAX_FD: no more can come */
        memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
        drop_fds(fds, nfds);
        m->nfds += (uint32_t)nfds;
    }
    buf[n] = '\0';
    parse(buf, m);
    return 1;
}

bool notify_sender_in(const struct notify_msg *m, pid_t group, const uint32_t *trusted,
                      size_t ntrusted) {
    if (!m->has_creds)
        return false;
    if (m->uid == getuid() || m->uid == 0)
        return true;
    for (size_t i = 0; i < ntrusted; i++)
        if (m->uid == trusted[i])
            return true;
    /* Any process of this generation, even one that dropped its privileges. */
    return getpgid(m->pid) == group;
}

int notify_send(const char *addr, const char *msg) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(addr);
    if (len == 0)
        return 0;
    if (len >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, addr, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* an abstract name */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int r = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen) < 0 ? -1 : 0;
    int e = errno;
    close(fd);
    errno = e;
    return r;
}
