/* SPDX-License-Identifier: BSD-3-Clause */
/* A socket-activated test server that knows nothing of libafdt: it takes its sockets from
 * LISTEN_FDS, reports READY=1 on NOTIFY_SOCKET and drains on SIGTERM.
 *
 *   activated_server [--behaviour-file PATH]   serve; PATH's first line, read at start, says
 *                                              how: "exit N" (exit at once), "hang" (never
 *                                              READY=1 nor accepts), "slow MS" (READY=1
 *                                              and accepts after MS), "early MS" (READY=1
 *                                              now, accepts after MS), "die MS" (never
 *                                              READY=1 nor accepts, exits 1 after MS),
 *                                              "no-notify" (accepts, never READY=1),
 *                                              "ignore-term", "as-nobody" (run as uid
 *                                              65534), "chatty" (after READY=1, 500
 *                                              datagrams of STOPPING=1 and ERRNO=5);
 *                                              none: READY=1 and accepts now.
 *                                              Before it, "daemonize" (the process started
 *                                              exits 0 at once; a grandchild in a session
 *                                              of its own serves) and "setsid-helper" (it
 *                                              leaves a child in a session of its own, that
 *                                              sleeps until a signal ends it) may come, in
 *                                              that order.
 *   activated_server --describe                print what socket activation passed, exit
 *
 * Each stream connection sends one line and gets "gen=G pid=P name=NAME\n" (after an HTTP
 * header when the line starts with "GET "); "quit N" makes the server exit with status N.
 * Each datagram gets the same line back. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 16

static volatile sig_atomic_t terminating;

static void on_term(int sig) {
    (void)sig;
    terminating = 1;
}

static void notify(const char *msg) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (path == NULL || strlen(path) >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, strlen(path));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sun, len) < 0)
        perror("activated_server: notify");
    close(fd);
}

static int listen_count(void) {
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (pid == NULL || fds == NULL || atoi(pid) != (int)getpid())
        return 0;
    int n = atoi(fds);
    return n < 0 ? 0 : n > MAX_FDS ? MAX_FDS : n;
}

/* The name of descriptor 3 + @i in LISTEN_FDNAMES. */
static void fd_name(int i, char *buf, size_t size) {
    const char *p = getenv("LISTEN_FDNAMES");
    snprintf(buf, size, "unknown");
    for (int k = 0; p && k < i; k++) {
        p = strchr(p, ':');
        if (p)
            p++;
    }
    if (p) {
        size_t len = strcspn(p, ":");
        snprintf(buf, size, "%.*s", (int)len, p);
    }
}

static void local_addr(int fd, char *buf, size_t size) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "";
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(buf, size, "none");
    } else if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, size, "%s:%d", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, size, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        snprintf(buf, size, "%s", un->sun_path[0] ? un->sun_path : "@abstract");
    }
}

static int describe(void) {
    int n = listen_count();
    const char *names = getenv("LISTEN_FDNAMES");
    printf("LISTEN_FDS=%s LISTEN_FDNAMES=%s pid_ok=%d", getenv("LISTEN_FDS"), names ? names : "",
           n > 0);
    for (int i = 0; i < n; i++) {
        char addr[128];
        int listening = 0;
        socklen_t len = sizeof(listening);
        getsockopt(3 + i, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
        local_addr(3 + i, addr, sizeof(addr));
        printf(" fd%d=%s listening=%d cloexec=%d", 3 + i, addr, listening,
               (fcntl(3 + i, F_GETFD) & FD_CLOEXEC) != 0);
    }
    printf("\n");
    return 0;
}

static void answer(int fd, const char *name) {
    char req[256], body[160], out[400];
    size_t got = 0;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (got < sizeof(req) - 1) {
        ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || (strncmp(req, "GET ", 4) != 0 && strchr(req, '\n')))
            break;
    }
    req[got] = '\0';
    const char *gen = getenv("AFDT_GENERATION");
    int blen = snprintf(body, sizeof(body), "gen=%s pid=%d name=%s\n", gen ? gen : "?",
                        (int)getpid(), name);
    int len = blen;
    if (strncmp(req, "GET ", 4) == 0)
        len = snprintf(out, sizeof(out),
                       "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                       "Connection: close\r\n\r\n%s",
                       blen, body);
    else
        memcpy(out, body, (size_t)blen + 1);
    if (send(fd, out, (size_t)len, MSG_NOSIGNAL) < 0)
        perror("activated_server: send");
    if (strncmp(req, "quit ", 5) == 0)
        exit(atoi(req + 5));
}

/* fork(); the parent exits 0 at once, the child returns 0 (or -1 on failure). */
static int fork_off(void) {
    pid_t pid = fork();
    if (pid > 0)
        _exit(0);
    return pid < 0 ? -1 : 0;
}

/* A child in a session of its own, out of the server's process group, as a helper that
 * detaches itself would be; it does nothing until a signal ends it. */
static int setsid_helper(void) {
    pid_t pid = fork();
    if (pid == 0) {
        if (setsid() < 0)
            _exit(2);
        for (;;)
            pause();
    }
    return pid < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    char behaviour[64] = "";
    if (argc == 2 && strcmp(argv[1], "--describe") == 0)
        return describe();
    if (argc == 3 && strcmp(argv[1], "--behaviour-file") == 0) {
        FILE *f = fopen(argv[2], "r");
        if (f) {
            if (fgets(behaviour, sizeof(behaviour), f) == NULL)
                behaviour[0] = '\0';
            fclose(f);
        }
    } else if (argc != 1) {
        fprintf(stderr, "usage: activated_server [--behaviour-file PATH | --describe]\n");
        return 2;
    }
    /* Taken before daemonizing: the sockets are this process's (LISTEN_PID). */
    int n = listen_count();
    char *b = behaviour;
    if (strncmp(b, "daemonize", 9) == 0) {
        b += 9 + strspn(b + 9, " \n");
        if (fork_off() < 0 || setsid() < 0 || fork_off() < 0) {
            perror("activated_server: daemonize");
            return 2;
        }
    }
    if (strncmp(b, "setsid-helper", 13) == 0) {
        b += 13 + strspn(b + 13, " \n");
        if (setsid_helper() < 0) {
            perror("activated_server: setsid helper");
            return 2;
        }
    }
    memmove(behaviour, b, strlen(b) + 1);
    if (strncmp(behaviour, "exit ", 5) == 0)
        return atoi(behaviour + 5);
    /* As a server that starts as root and serves as nobody, before it says READY=1. */
    if (strncmp(behaviour, "as-nobody", 9) == 0 &&
        (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)) {
        perror("activated_server: dropping privileges");
        return 2;
    }
    if (n == 0) {
        fprintf(stderr, "activated_server: no sockets (LISTEN_FDS, LISTEN_PID)\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigemptyset(&sa.sa_mask);
    if (strncmp(behaviour, "ignore-term", 11) == 0)
        sa.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &sa, NULL);

    struct pollfd pfd[MAX_FDS];
    char names[MAX_FDS][64];
    for (int i = 0; i < n; i++) {
        pfd[i] = (struct pollfd){.fd = 3 + i, .events = POLLIN};
        fd_name(i, names[i], sizeof(names[i]));
        /* Several generations may accept on the same socket: one that loses the race for a
         * connection must not block in accept. */
        fcntl(3 + i, F_SETFL, fcntl(3 + i, F_GETFL) | O_NONBLOCK);
        fcntl(3 + i, F_SETFD, FD_CLOEXEC);
    }
    /* When it says READY=1, starts accepting, exits (ms from now; -1: never). */
    long ready_at = 0, accept_at = 0, die_at = -1;
    if (strncmp(behaviour, "slow ", 5) == 0)
        ready_at = accept_at = atol(behaviour + 5);
    else if (strncmp(behaviour, "early ", 6) == 0)
        accept_at = atol(behaviour + 6);
    else if (strncmp(behaviour, "no-notify", 9) == 0)
        ready_at = -1;
    else if (strncmp(behaviour, "hang", 4) == 0)
        ready_at = accept_at = -1;
    else if (strncmp(behaviour, "die ", 4) == 0)
        ready_at = accept_at = -1, die_at = atol(behaviour + 4);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!terminating) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ready_at >= 0 && ms >= ready_at) {
            notify("READY=1\nSTATUS=serving");
            ready_at = -1;
            for (int i = 0; strncmp(behaviour, "chatty", 6) == 0 && i < 500; i++)
                notify("STOPPING=1\nERRNO=5");
        }
        if (die_at >= 0 && ms >= die_at)
            return 1;
        /* Not accepting yet: the sockets are not even looked at. */
        if (accept_at < 0 || ms < accept_at) {
            struct timespec nap = {0, 10 * 1000000L};
            nanosleep(&nap, NULL);
            continue;
        }
        if (poll(pfd, (nfds_t)n, ready_at >= 0 ? 10 : 1000) <= 0)
            continue;
        for (int i = 0; i < n && !terminating; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            int type = 0;
            socklen_t len = sizeof(type);
            getsockopt(pfd[i].fd, SOL_SOCKET, SO_TYPE, &type, &len);
            if (type == SOCK_DGRAM) {
                struct sockaddr_storage from;
                socklen_t flen = sizeof(from);
                char buf[256], body[160];
                ssize_t r = recvfrom(pfd[i].fd, buf, sizeof(buf), MSG_DONTWAIT,
                                     (struct sockaddr *)&from, &flen);
                const char *gen = getenv("AFDT_GENERATION");
                int blen = snprintf(body, sizeof(body), "gen=%s pid=%d name=%s\n", gen ? gen : "?",
                                    (int)getpid(), names[i]);
                if (r >= 0)
                    sendto(pfd[i].fd, body, (size_t)blen, 0, (struct sockaddr *)&from, flen);
                continue;
            }
            int c = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                continue; /* another generation took it */
            answer(c, names[i]);
            close(c);
        }
    }
    /* Draining: every connection accepted was answered in turn; the rest stay queued on the
     * shared sockets for the next generation. */
    notify("STOPPING=1");
    return 0;
}
