/* SPDX-License-Identifier: BSD-3-Clause */
/* Continuous HTTP load on 127.0.0.1:PORT until SIGINT or SIGTERM, then a count of failures.
 *
 *   afdt-http-load PORT [THREADS]
 *
 * Each thread sends one GET per new connection, all the time, and checks for a 200 answer.
 * At the end it prints the totals and which server processes answered (by the "pid N" in
 * each body), and exits 1 if any request failed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 16
#define MAX_PIDS 64
#define TIMEOUT_S 5
#define FAILURES_SHOWN 5

struct worker {
    pthread_t thread;
    unsigned long ok, failed;
    int pids[MAX_PIDS];
    unsigned long by_pid[MAX_PIDS];
    int npids;
};

static int port;
static atomic_bool stop;
static atomic_int shown;

static void count_pid(struct worker *w, int pid, unsigned long n) {
    for (int i = 0; i < w->npids; i++) {
        if (w->pids[i] == pid) {
            w->by_pid[i] += n;
            return;
        }
    }
    if (w->npids < MAX_PIDS) {
        w->pids[w->npids] = pid;
        w->by_pid[w->npids++] = n;
    }
}

/* One request on a new connection: the answering pid, or -1 with @why set. */
static int one_request(char *why, size_t size) {
    static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    char buf[1024];
    size_t got = 0;
    int pid = -1;
    const char *step = "socket";
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    struct timeval tv = {TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    step = "connect";
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto fail;
    step = "send";
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1)
        goto fail;
    step = "recv";
    for (;;) {
        ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        if (n == 0 || (got += (size_t)n) == sizeof(buf) - 1)
            break;
    }
    buf[got] = '\0';
    const char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0 || body == NULL ||
        sscanf(body + 4, "hello from pid %d", &pid) != 1) {
        snprintf(why, size, got ? "unexpected answer (%zu bytes)" : "closed without an answer",
                 got);
        pid = -1;
    }
    close(fd);
    return pid;
fail:
    snprintf(why, size, "%s: %s", step, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static void *work(void *arg) {
    struct worker *w = arg;
    char why[128];
    while (!atomic_load(&stop)) {
        int pid = one_request(why, sizeof(why));
        if (pid > 0) {
            w->ok++;
            count_pid(w, pid, 1);
        } else {
            w->failed++;
            if (atomic_fetch_add(&shown, 1) < FAILURES_SHOWN)
                fprintf(stderr, "load: request failed: %s\n", why);
        }
        /* Each request leaves a TIME_WAIT behind: a short pause keeps the ephemeral ports. */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int nthreads = argc > 2 ? atoi(argv[2]) : 4;
    port = argc > 1 ? atoi(argv[1]) : 0;
    if (argc < 2 || argc > 3 || port <= 0 || port > 65535 || nthreads < 1 ||
        nthreads > MAX_THREADS) {
        fprintf(stderr, "usage: afdt-http-load PORT [THREADS (1-%d)]\n", MAX_THREADS);
        return 2;
    }
    /* Only this thread takes the signals that end the run. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct worker w[MAX_THREADS];
    memset(w, 0, sizeof(w));
    int started = 0;
    for (; started < nthreads; started++)
        if (pthread_create(&w[started].thread, NULL, work, &w[started]) != 0)
            break;
    int sig;
    if (started == nthreads)
        sigwait(&set, &sig);
    atomic_store(&stop, true);
    struct worker sum;
    memset(&sum, 0, sizeof(sum));
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        sum.ok += w[i].ok;
        sum.failed += w[i].failed;
        for (int k = 0; k < w[i].npids; k++)
            count_pid(&sum, w[i].pids[k], w[i].by_pid[k]);
    }
    printf("load: %lu requests, %lu ok, %lu failed\n", sum.ok + sum.failed, sum.ok, sum.failed);
    printf("load: answered by %d server processes:", sum.npids);
    for (int k = 0; k < sum.npids; k++)
        printf(" pid %d (%lu)", sum.pids[k], sum.by_pid[k]);
    printf("\n");
    return started == nthreads && sum.failed == 0 ? 0 : 1;
}
