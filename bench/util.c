/* SPDX-License-Identifier: BSD-3-Clause */
/* Helpers of afdt-bench: clocks, latency samples, server processes, /proc readings. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

_Noreturn void die(const char *what) {
    int e = errno;
    fprintf(stderr, "afdt-bench: %s: %s\n", what, strerror(e));
    exit(1);
}

int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sleep_ms(unsigned ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

void lat_add(struct lat *l, int64_t ns) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        int64_t *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            die("realloc");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ns;
}

void lat_merge(struct lat *dst, struct lat *src) {
    for (size_t i = 0; i < src->n; i++)
        lat_add(dst, src->v[i]);
    src->n = 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

double lat_quantile_us(struct lat *l, double q) {
    if (l->n == 0)
        return 0;
    qsort(l->v, l->n, sizeof(*l->v), cmp_i64);
    /* Nearest rank: the smallest sample with at least q of them at or below it. */
    double rank = q * (double)l->n;
    size_t i = (size_t)rank;
    if ((double)i < rank)
        i++;
    if (i > 0)
        i--;
    if (i >= l->n)
        i = l->n - 1;
    return (double)l->v[i] / 1000.0;
}

void lat_free(struct lat *l) {
    free(l->v);
    *l = (struct lat){0};
}

unsigned long raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
    return (unsigned long)rl.rlim_cur;
}

static char sock_dir[64];
static unsigned sock_seq;

const char *sock_path(char *buf, size_t size, const char *tag) {
    if (sock_dir[0] == '\0') {
        snprintf(sock_dir, sizeof(sock_dir), "/tmp/afdt-bench.XXXXXX");
        if (mkdtemp(sock_dir) == NULL)
            die("mkdtemp");
    }
    snprintf(buf, size, "%s/%s-%u.sock", sock_dir, tag, sock_seq++);
    return buf;
}

void sock_dir_remove(void) {
    if (sock_dir[0] != '\0' && rmdir(sock_dir) < 0)
        fprintf(stderr, "afdt-bench: could not remove %s: %s\n", sock_dir, strerror(errno));
}

pid_t spawn_server(const char *kind, const char *path) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe2");
    fflush(NULL); /* the child must not print the parent's buffered output again */
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        /* The one descriptor the new image keeps: the write end, as an argument. */
        int w = fcntl(p[1], F_DUPFD, 0);
        char arg[16];
        snprintf(arg, sizeof(arg), "%d", w);
        /* An interrupted run must not leave servers behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/proc/self/exe", "afdt-bench", "server", kind, path, arg, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char c;
    ssize_t n;
    while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR) {
    }
    close(p[0]);
    if (n != 1) {
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

void stop_server(pid_t pid) {
    kill(pid, SIGTERM);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

long proc_status_kib(pid_t pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    long kib = -1;
    size_t flen = strlen(field);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kib = strtol(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

long proc_fd_count(pid_t pid) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t process_cpu_ns(pid_t pid) {
    clockid_t clk;
    struct timespec ts;
    if (clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) < 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *sampler_main(void *arg) {
    struct fd_sampler *s = arg;
    while (!s->stop) {
        long n = proc_fd_count(s->pid);
        if (n > s->peak)
            s->peak = n;
        int64_t t = now_ns();
        if (t >= s->start_ns && t < s->end_ns) {
            int64_t cpu = process_cpu_ns(s->pid);
            if (s->t0 < 0) {
                s->t0 = t;
                s->cpu0 = cpu;
            }
            s->t1 = t;
            s->cpu1 = cpu;
        }
        sleep_ms(2);
    }
    return NULL;
}

double fd_sampler_cpu_load(const struct fd_sampler *s) {
    if (s->t0 < 0 || s->t1 <= s->t0 || s->cpu0 < 0 || s->cpu1 < 0)
        return -1;
    return (double)(s->cpu1 - s->cpu0) / (double)(s->t1 - s->t0);
}

void fd_sampler_start(struct fd_sampler *s, pid_t pid) {
    s->pid = pid;
    s->stop = 0;
    s->t0 = s->t1 = s->cpu0 = s->cpu1 = -1;
    s->peak = proc_fd_count(pid);
    int e = pthread_create(&s->thread, NULL, sampler_main, s);
    if (e != 0) {
        errno = e;
        die("pthread_create");
    }
}

long fd_sampler_stop(struct fd_sampler *s) {
    s->stop = 1;
    pthread_join(s->thread, NULL);
    return s->peak;
}
