/* SPDX-License-Identifier: BSD-3-Clause */
/* A paced HTTP load on 127.0.0.1 that records how every request ended:
 *
 *   afdt-restarts-load PORT CLIENTS RATE close|keepalive OUT
 *
 * CLIENTS threads each send RATE GET / requests a second (paced, not back to back) until SIGTERM
 * or SIGINT, then write one line per request to OUT: "START_US LATENCY_US OUTCOME RETRIED" (start
 * in CLOCK_REALTIME microseconds). OUTCOME: ok, refused (connect refused), reset (ECONNRESET or
 * EPIPE), eof (closed before a whole response), timeout (nothing complete within 3 s), non2xx,
 * error (anything else). "close" opens one connection per request; "keepalive" keeps one per
 * client and, as HTTP clients do for idempotent requests, retries once on a new connection when a
 * reused one is closed or reset before any byte of the response (RETRIED 1). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 3000

enum outcome { OK, REFUSED, RESET, EOF_, TIMEOUT, NON2XX, ERROR };
static const char *const names[] = {"ok", "refused", "reset", "eof", "timeout", "non2xx", "error"};

struct rec {
    int64_t start_us;
    int32_t lat_us;
    uint8_t outcome, retried;
};

struct client {
    pthread_t thread;
    struct rec *recs;
    size_t n, cap;
    int fd; /* the kept-alive connection, or -1 */
    bool got_byte;
};

static unsigned port;
static double rate;
static bool keepalive;
static volatile sig_atomic_t stopping;

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t real_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static enum outcome of_errno(int err) {
    if (err == ECONNREFUSED)
        return REFUSED;
    if (err == ECONNRESET || err == EPIPE)
        return RESET;
    if (err == ETIMEDOUT)
        return TIMEOUT;
    return ERROR;
}

static int wait_for(int fd, short events, int64_t deadline) {
    struct pollfd p = {fd, events, 0};
    int64_t left = (deadline - mono_us()) / 1000;
    if (left <= 0)
        return -ETIMEDOUT;
    int rc = poll(&p, 1, (int)left);
    return rc < 0 ? -errno : rc == 0 ? -ETIMEDOUT : 0;
}

static int dial(int64_t deadline) {
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1, err = 0;
    socklen_t len = sizeof(err);
    if (fd < 0)
        return -errno;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS) {
        err = errno;
    } else {
        int rc = wait_for(fd, POLLOUT, deadline);
        if (rc < 0)
            err = -rc;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
    }
    if (err) {
        close(fd);
        return -err;
    }
    return fd;
}

/* Sends one request on c->fd and reads the whole response. */
static enum outcome exchange(struct client *c, int64_t deadline) {
    char req[128], buf[8192];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n",
                     keepalive ? "" : "Connection: close\r\n");
    c->got_byte = false;
    if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return of_errno(errno);
    size_t have = 0;
    long body = -1, head = -1;
    int status = 0;
    for (;;) {
        int rc = wait_for(c->fd, POLLIN, deadline);
        if (rc < 0)
            return of_errno(-rc);
        ssize_t got = recv(c->fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (got < 0 && errno == EAGAIN)
            continue;
        if (got < 0)
            return of_errno(errno);
        if (got == 0)
            return EOF_;
        c->got_byte = true;
        have += (size_t)got;
        buf[have] = '\0';
        if (head < 0) {
            char *end = strstr(buf, "\r\n\r\n"), *cl;
            if (end == NULL) {
                if (have == sizeof(buf) - 1)
                    return ERROR;
                continue;
            }
            head = end + 4 - buf;
            if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
                return ERROR;
            *end = '\0';
            cl = strcasestr(buf, "\r\ncontent-length:");
            body = cl ? atol(cl + 17) : 0;
            if (have - (size_t)head > (size_t)body)
                return ERROR;
        }
        if ((long)have - head >= body)
            return status >= 200 && status < 300 ? OK : NON2XX;
        if (have == sizeof(buf) - 1) { /* a long body: keep only the count */
            body -= (long)have - head;
            have = 0;
            head = 0;
        }
    }
}

static enum outcome one_request(struct client *c, bool *retried) {
    int64_t deadline = mono_us() + TIMEOUT_MS * 1000;
    *retried = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = c->fd >= 0;
        if (c->fd < 0) {
            int fd = dial(deadline);
            if (fd < 0)
                return of_errno(-fd);
            c->fd = fd;
        }
        enum outcome o = exchange(c, deadline);
        if (o != OK || !keepalive) {
            close(c->fd);
            c->fd = -1;
        }
        if (reused && !c->got_byte && (o == EOF_ || o == RESET)) {
            *retried = true;
            continue;
        }
        return o;
    }
    return EOF_;
}

static void *run(void *arg) {
    struct client *c = arg;
    int64_t interval = (int64_t)(1e6 / rate), next = mono_us();
    while (!stopping) {
        int64_t now = mono_us();
        if (now < next) {
            usleep((useconds_t)(next - now));
            continue;
        }
        next += interval;
        if (next < now - interval) /* fell behind: do not burst to catch up */
            next = now;
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 4096;
            c->recs = realloc(c->recs, c->cap * sizeof(*c->recs));
            if (c->recs == NULL)
                abort();
        }
        bool retried;
        int64_t t0 = mono_us(), start = real_us();
        enum outcome o = one_request(c, &retried);
        c->recs[c->n++] = (struct rec){start, (int32_t)(mono_us() - t0), (uint8_t)o, retried};
    }
    if (c->fd >= 0)
        close(c->fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6 || (strcmp(argv[4], "close") && strcmp(argv[4], "keepalive"))) {
        fprintf(stderr, "usage: %s PORT CLIENTS RATE close|keepalive OUT\n", argv[0]);
        return 2;
    }
    port = (unsigned)atoi(argv[1]);
    int nclients = atoi(argv[2]);
    rate = atof(argv[3]);
    keepalive = strcmp(argv[4], "keepalive") == 0;
    if (nclients < 1 || nclients > 256 || rate <= 0)
        return 2;
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct client *cs = calloc((size_t)nclients, sizeof(*cs));
    for (int i = 0; i < nclients; i++) {
        cs[i].fd = -1;
        pthread_create(&cs[i].thread, NULL, run, &cs[i]);
    }
    for (int i = 0; i < nclients; i++)
        pthread_join(cs[i].thread, NULL);
    FILE *out = fopen(argv[5], "w");
    if (out == NULL) {
        perror(argv[5]);
        return 1;
    }
    for (int i = 0; i < nclients; i++) {
        for (size_t k = 0; k < cs[i].n; k++)
            fprintf(out, "%lld %d %s %d\n", (long long)cs[i].recs[k].start_us, cs[i].recs[k].lat_us,
                    names[cs[i].recs[k].outcome], cs[i].recs[k].retried);
        free(cs[i].recs);
    }
    free(cs);
    return fclose(out) == 0 ? 0 : 1;
}
