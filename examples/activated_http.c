/* SPDX-License-Identifier: BSD-3-Clause */
/* A tiny HTTP server written for systemd-style socket activation, knowing nothing of libafdt.
 *
 * This is the kind of program `afdt serve` gives zero-downtime restarts without changing it:
 * it takes its listening sockets from LISTEN_FDS (descriptors 3, 4, ... when LISTEN_PID is
 * its own pid), says READY=1 on NOTIFY_SOCKET once it accepts, and on SIGTERM stops
 * accepting and exits once the request in hand is answered.  Connections still queued on
 * the sockets are not lost: the sockets stay open in the supervisor and the next generation
 * accepts them.  Every response says which process answered: "hello from pid 1234".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_SOCKETS 16

static volatile sig_atomic_t stopping;

static void on_sigterm(int sig) {
    (void)sig;
    stopping = 1;
}

/* sd_notify(3) by hand: one datagram to the socket named in NOTIFY_SOCKET, if any. */
static void notify(const char *msg) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, strlen(path));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* an abstract socket name */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sun, len) < 0)
        perror("activated-http: NOTIFY_SOCKET");
    close(fd);
}

/* sd_listen_fds(3) by hand. */
static int listen_fds(void) {
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (pid == NULL || fds == NULL || atol(pid) != (long)getpid())
        return 0;
    int n = atoi(fds);
    return n < 0 ? 0 : n > MAX_SOCKETS ? MAX_SOCKETS : n;
}

static void serve_one(int fd) {
    char req[2048], resp[256];
    size_t got = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    /* Read the request head; this server answers every path the same way. */
    while (got < sizeof(req) - 1) {
        ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    char body[64];
    int blen = snprintf(body, sizeof(body), "hello from pid %d\n", (int)getpid());
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                       "Connection: close\r\n\r\n%s",
                       blen, body);
    for (int off = 0; off < len;) {
        ssize_t n = send(fd, resp + off, (size_t)(len - off), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        off += (int)n;
    }
}

int main(void) {
    int n = listen_fds();
    if (n == 0) {
        fprintf(stderr, "activated-http: no sockets passed (LISTEN_FDS and LISTEN_PID unset); "
                        "run me under a socket-activating supervisor such as `afdt serve`\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_sigterm};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: poll returns at once */
    sigaction(SIGINT, &sa, NULL);

    struct pollfd pfd[MAX_SOCKETS];
    for (int i = 0; i < n; i++) {
        pfd[i] = (struct pollfd){.fd = 3 + i, .events = POLLIN};
        /* Other processes may accept on the same sockets (the generation before or after
         * this one): non-blocking, so losing a race for a connection never blocks us. */
        fcntl(3 + i, F_SETFL, fcntl(3 + i, F_GETFL) | O_NONBLOCK);
        fcntl(3 + i, F_SETFD, FD_CLOEXEC);
    }
    notify("READY=1");
    while (!stopping) {
        if (poll(pfd, (nfds_t)n, -1) < 0)
            continue; /* EINTR: check for SIGTERM */
        for (int i = 0; i < n && !stopping; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            int c = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                continue; /* EAGAIN: another process took it */
            serve_one(c);
            close(c);
        }
    }
    notify("STOPPING=1");
    return 0;
}
