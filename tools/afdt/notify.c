/* SPDX-License-Identifier: BSD-3-Clause */
/* sd_notify(3) datagrams, both ways. */
#include <errno.h>
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
    (void)unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ||
        chmod(path, 0666) < 0) { /* who is heard: notify_sender_in() */
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
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
            m->has_extend = true;
            m->extend_usec = strtoll(line + 20, NULL, 10);
        }
    }
}

int notify_read(int fd, struct notify_msg *m) {
    char buf[4097];
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 32)];
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
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_RIGHTS) {
            /* sd_notify's FDSTORE=1 and BARRIER=1 send descriptors: we keep none (a
             * barrier's waiter is released when its pipe closes). */
            size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t k = 0; k < nfds; k++) {
                int rfd;
                memcpy(&rfd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
                close(rfd);
            }
            m->nfds += (uint32_t)nfds;
        } else if (c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(c), sizeof(uc));
            m->has_creds = true;
            m->uid = uc.uid;
            m->pid = uc.pid;
        }
    }
    buf[n] = '\0';
    parse(buf, m);
    return 1;
}

bool notify_sender_in(const struct notify_msg *m, pid_t group) {
    /* Our own user, or any process of this generation, even one that dropped its
     * privileges. */
    return m->has_creds && (m->uid == getuid() || m->uid == 0 || getpgid(m->pid) == group);
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
