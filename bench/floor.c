/* SPDX-License-Identifier: BSD-3-Clause */
/* The floor: descriptor passing written by hand with no library, to measure the library against. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "afdt.h"
#include "bench.h"

/* The same wire format as the library: a uint32_t length, the payload, and
 * the descriptor as SCM_RIGHTS with the first byte. */
#define HDR ((uint32_t)sizeof(uint32_t))

static socklen_t make_addr(const char *path, struct sockaddr_un *sun) {
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    size_t n = strlen(path);
    memcpy(sun->sun_path, path, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* One frame in one sendmsg. */
static int send_frame(int s, const void *payload, uint32_t len, int fd) {
    uint8_t hdr[HDR];
    memcpy(hdr, &len, HDR);
    struct iovec iov[2] = {{hdr, HDR}, {(void *)(uintptr_t)payload, len}};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = len ? 2 : 1;
    if (fd >= 0) {
        memset(&cm, 0, sizeof(cm));
        msg.msg_control = cm.buf;
        msg.msg_controllen = sizeof(cm.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t n = sendmsg(s, &msg, MSG_NOSIGNAL);
    return n == (ssize_t)(HDR + len) ? 0 : -1;
}

/* Read one whole frame (the peer sends nothing after it, so reading greedily
 * is safe).  *fd gets the descriptor that came with it, or -1. */
static int recv_frame(int s, int *fd) {
    uint8_t buf[HDR + AFDT_MSGLEN];
    uint32_t got = 0, len = 0;
    *fd = -1;
    for (;;) {
        struct iovec iov = {buf + got, sizeof(buf) - got};
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cm.buf;
        msg.msg_controllen = sizeof(cm.buf);
        ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
        if (n <= 0)
            goto fail;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && *fd < 0 &&
                c->cmsg_len >= CMSG_LEN(sizeof(int)))
                memcpy(fd, CMSG_DATA(c), sizeof(int));
        }
        got += (uint32_t)n;
        if (got >= HDR) {
            memcpy(&len, buf, HDR);
            if (len > AFDT_MSGLEN)
                goto fail;
            if (got >= HDR + len)
                return 0;
        }
    }
fail:
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    return -1;
}

/* --- floor (a): ping-pong on a socketpair ---------------------------------- */

void run_pingpong(const struct bench_opts *o, unsigned rep) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        /* Echo every descriptor back, then drop our copy. */
        close(sv[0]);
        int fd;
        while (recv_frame(sv[1], &fd) == 0) {
            int r = send_frame(sv[1], NULL, 0, fd);
            close(fd);
            if (r < 0)
                break;
        }
        _exit(0);
    }
    close(sv[1]);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0)
        die("open /dev/null");
    struct lat lat = {0};
    uint64_t errors = 0;
    int64_t start = now_ns() + (int64_t)(o->warmup_s * 1e9);
    int64_t end = start + (int64_t)(o->dur_s * 1e9);
    for (int64_t t0 = now_ns(); t0 < end; t0 = now_ns()) {
        int fd = -1;
        int r = send_frame(sv[0], NULL, 0, devnull) < 0 ? -1 : recv_frame(sv[0], &fd);
        int64_t t1 = now_ns();
        if (fd >= 0)
            close(fd);
        if (r < 0) {
            errors++;
            break;
        }
        if (t1 >= start && t1 < end)
            lat_add(&lat, t1 - t0);
    }
    close(sv[0]);
    close(devnull);
    waitpid(pid, NULL, 0);
    /* Each round trip hands the descriptor over twice. */
    uint64_t transfers = 2 * (uint64_t)lat.n;
    printf("pingpong\t%u\t%llu\t%llu\t%.0f\t%.2f\t%.2f\t%.2f\n", rep, (unsigned long long)transfers,
           (unsigned long long)errors, (double)transfers / o->dur_s, lat_quantile_us(&lat, 0.5),
           lat_quantile_us(&lat, 0.99), lat_quantile_us(&lat, 0.999));
    lat_free(&lat);
}

/* --- floor (b): one connection per exchange -------------------------------- */

/* Blocking accept, read the request, sendmsg the descriptor, close: the least
 * a server can do per exchange. */
void floor_server(const char *path, int ready_fd) {
    struct sockaddr_un sun;
    socklen_t len = make_addr(path, &sun);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, len) < 0 || listen(lfd, SOMAXCONN) < 0)
        die("floor server: listen");
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0)
        die("open /dev/null");
    if (write(ready_fd, "r", 1) != 1)
        die("write");
    close(ready_fd);
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        int fd;
        if (recv_frame(c, &fd) == 0) {
            if (fd >= 0)
                close(fd);
            (void)send_frame(c, BENCH_RESPONSE, BENCH_RESPONSE_LEN, devnull);
        }
        close(c);
    }
}

int floor_exchange(const char *path) {
    struct sockaddr_un sun;
    socklen_t len = make_addr(path, &sun);
    int fd = -1, r = -1;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (connect(s, (struct sockaddr *)&sun, len) == 0 &&
        send_frame(s, BENCH_REQUEST, BENCH_REQUEST_LEN, -1) == 0 && recv_frame(s, &fd) == 0 &&
        fd >= 0)
        r = 0;
    if (fd >= 0)
        close(fd);
    close(s);
    return r;
}

struct worker {
    const char *path;
    int (*exchange)(const char *path);
    int64_t start, end;
    struct lat lat;
    uint64_t errors;
    int64_t cpu_ns; /* CPU used from the first exchange counted to the last one */
    uint64_t cpu_n; /* exchanges in that time */
    pthread_t thread;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    int64_t cpu0 = -1;
    for (int64_t t0 = now_ns(); t0 < w->end; t0 = now_ns()) {
        int r = w->exchange(w->path);
        int64_t t1 = now_ns();
        if (cpu0 >= 0)
            w->cpu_n++;
        if (t1 < w->start || t1 >= w->end)
            continue; /* completions outside the window are not counted */
        if (r == 0)
            lat_add(&w->lat, t1 - t0);
        else
            w->errors++;
        if (cpu0 < 0)
            cpu0 = thread_cpu_ns();
    }
    if (cpu0 >= 0)
        w->cpu_ns = thread_cpu_ns() - cpu0;
    return NULL;
}

void point_stats(struct point *p, struct lat *lat, int64_t start, int64_t end, int64_t cpu_ns,
                 uint64_t cpu_n) {
    p->exchanges = lat->n;
    p->per_s = (double)lat->n * 1e9 / (double)(end - start);
    p->p50_us = lat_quantile_us(lat, 0.5);
    p->p99_us = lat_quantile_us(lat, 0.99);
    p->p999_us = lat_quantile_us(lat, 0.999);
    p->client_cpu_us = cpu_n ? (double)cpu_ns / 1000.0 / (double)cpu_n : -1;
}

void run_threads(unsigned conc, const char *path, int64_t start, int64_t end,
                 int (*exchange)(const char *path), struct point *p) {
    struct worker *w = calloc(conc, sizeof(*w));
    if (w == NULL)
        die("calloc");
    for (unsigned i = 0; i < conc; i++) {
        w[i] = (struct worker){.path = path, .exchange = exchange, .start = start, .end = end};
        int e = pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        if (e != 0) {
            errno = e;
            die("pthread_create");
        }
    }
    struct lat all = {0};
    int64_t cpu_ns = 0;
    uint64_t cpu_n = 0;
    p->errors = 0;
    for (unsigned i = 0; i < conc; i++) {
        pthread_join(w[i].thread, NULL);
        lat_merge(&all, &w[i].lat);
        lat_free(&w[i].lat);
        p->errors += w[i].errors;
        cpu_ns += w[i].cpu_ns;
        cpu_n += w[i].cpu_n;
    }
    free(w);
    point_stats(p, &all, start, end, cpu_ns, cpu_n);
    lat_free(&all);
}

void run_point(const struct bench_opts *o, unsigned conc, const char *kind, clients_fn clients,
               struct point *p) {
    char path[128];
    sock_path(path, sizeof(path), kind);
    pid_t pid = spawn_server(kind, path);
    if (pid < 0)
        die("server did not start");
    /* Starting the clients (threads, say) is part of the warm-up. */
    int64_t start = now_ns() + (int64_t)(o->warmup_s * 1e9);
    int64_t end = start + (int64_t)(o->dur_s * 1e9);
    struct fd_sampler s = {.start_ns = start, .end_ns = end};
    fd_sampler_start(&s, pid);
    /* Pinned after the sampler started, so only the server and the clients
     * (threads made by this one inherit its CPUs) are: to the first and the
     * second CPU this process may use. */
    cpu_set_t old;
    bool pinned = o->place != PLACE_ANY;
    if (pinned) {
        size_t cpu[2] = {0, 0};
        unsigned n = 0;
        if (sched_getaffinity(0, sizeof(old), &old) < 0)
            die("sched_getaffinity");
        for (size_t c = 0; c < CPU_SETSIZE && n < 2; c++)
            if (CPU_ISSET(c, &old))
                cpu[n++] = c;
        if (n < (o->place == PLACE_SAME ? 1u : 2u)) {
            errno = EINVAL;
            die("--place apart needs two CPUs");
        }
        size_t client_cpu = cpu[o->place == PLACE_SAME ? 0 : 1];
        cpu_set_t on;
        CPU_ZERO(&on);
        CPU_SET(cpu[0], &on);
        if (sched_setaffinity(pid, sizeof(on), &on) < 0)
            die("sched_setaffinity (server)");
        CPU_ZERO(&on);
        CPU_SET(client_cpu, &on);
        if (sched_setaffinity(0, sizeof(on), &on) < 0)
            die("sched_setaffinity (clients)");
    }
    clients(conc, path, start, end, p);
    if (pinned && sched_setaffinity(0, sizeof(old), &old) < 0)
        die("sched_setaffinity (restore)");
    p->peak_fds = fd_sampler_stop(&s);
    double load = fd_sampler_cpu_load(&s);
    p->server_cpu_us = load >= 0 && p->per_s > 0 ? load * 1e6 / p->per_s : -1;
    p->hwm_kib = proc_status_kib(pid, "VmHWM");
    stop_server(pid);
    unlink(path); /* the server was killed, so it could not remove it */
}

static void floor_clients(unsigned conc, const char *path, int64_t start, int64_t end,
                          struct point *p) {
    run_threads(conc, path, start, end, floor_exchange, p);
}

void run_floor_point(const struct bench_opts *o, unsigned conc, struct point *p) {
    run_point(o, conc, "floor", floor_clients, p);
}
