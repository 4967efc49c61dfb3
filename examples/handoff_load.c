/* SPDX-License-Identifier: BSD-3-Clause */
/* The demo's load generator: a few threads, each sending one request per new connection. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "handoff.h"

#define REQUEST_TIMEOUT_S 3
/* A pause between requests keeps the demo from using up the loopback's ephemeral ports (the
 * server closes first, so each request leaves a TIME_WAIT behind) while still sending a
 * request every fraction of a millisecond. */
#define PAUSE_MS 1
#define FAILURES_SHOWN 5

struct worker {
    pthread_t thread;
    int port;
    unsigned long sent, ok, failed;
    unsigned long by_gen[HANDOFF_GENERATIONS + 1];
};

static atomic_bool stopping;
static atomic_int failures_shown;

static int send_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One request on a new connection. Returns the generation that answered, or -1 with @why
 * set. The socket's send and receive timeouts bound every step, connect(2) included. */
static int one_request(int port, char *why, size_t why_size) {
    static const char request[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    char buf[1024];
    size_t got = 0;
    int gen = -1;
    const char *step = "socket";
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    struct timeval tv = {REQUEST_TIMEOUT_S, 0};
    step = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        goto fail;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    step = "connect";
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto fail;
    step = "send";
    if (send_all(fd, request, sizeof(request) - 1) < 0)
        goto fail;
    step = "recv";
    for (;;) {
        ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        got += (size_t)n;
        if (got == sizeof(buf) - 1) {
            errno = EMSGSIZE;
            goto fail;
        }
    }
    buf[got] = '\0';
    const char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0 || body == NULL ||
        sscanf(body + 4, "gen %d", &gen) != 1 || gen < 1 || gen > HANDOFF_GENERATIONS) {
        if (got == 0)
            snprintf(why, why_size, "closed without a response");
        else
            snprintf(why, why_size, "unexpected response (%zu bytes)", got);
        close(fd);
        return -1;
    }
    close(fd);
    return gen;

fail:
    snprintf(why, why_size, "%s: %s", step, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static void *work(void *arg) {
    struct worker *w = arg;
    char why[128];
    while (!atomic_load(&stopping)) {
        w->sent++;
        int gen = one_request(w->port, why, sizeof(why));
        if (gen > 0) {
            w->ok++;
            w->by_gen[gen]++;
        } else {
            w->failed++;
            if (atomic_fetch_add(&failures_shown, 1) < FAILURES_SHOWN)
                fprintf(stderr, "load: request failed: %s\n", why);
        }
        handoff_sleep_ms(PAUSE_MS);
    }
    return NULL;
}

int handoff_run_load(int port, int stop_fd, int status_fd) {
    struct worker w[HANDOFF_WORKERS];
    int started = 0;
    memset(w, 0, sizeof(w));
    for (; started < HANDOFF_WORKERS; started++) {
        w[started].port = port;
        if (pthread_create(&w[started].thread, NULL, work, &w[started]) != 0)
            break;
    }
    /* Run until the coordinator closes its end of the pipe, or dies. */
    char c;
    ssize_t n;
    while (started == HANDOFF_WORKERS &&
           ((n = read(stop_fd, &c, 1)) > 0 || (n < 0 && errno == EINTR)))
        ;
    atomic_store(&stopping, true);
    struct worker sum = {.port = port};
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        sum.sent += w[i].sent;
        sum.ok += w[i].ok;
        sum.failed += w[i].failed;
        for (int g = 1; g <= HANDOFF_GENERATIONS; g++)
            sum.by_gen[g] += w[i].by_gen[g];
    }
    close(stop_fd);
    handoff_report(status_fd, "result %lu %lu %lu %lu %lu %lu\n", sum.sent, sum.ok, sum.failed,
                   sum.by_gen[1], sum.by_gen[2], sum.by_gen[3]);
    return started == HANDOFF_WORKERS ? 0 : 1;
}
