/* SPDX-License-Identifier: BSD-3-Clause */
/* The handoff demo: an HTTP server restarts twice under load, handing its listening socket on. */

/*
 * Run with no arguments. This process (the coordinator) starts everything else by fork and
 * exec of itself, as a new release would be started:
 *   --generation 1 first ...     binds 127.0.0.1:0 and serves "gen 1" over HTTP;
 *   --load ...                   four threads send requests all along, a new connection each;
 *   --generation N takeover ...  asks the running generation for the listening socket over
 *                                libafdt ("listener"), serves on it, tells it to "stop", then
 *                                answers the next generation at the same socket path.
 * A stopped generation closes its afdt server, stops accepting and exits once the requests it
 * accepted are answered; the connections still in the shared backlog go to its successor.
 * Every child reports to the coordinator in lines on a pipe of its own.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <afdt.h>

#include "handoff.h"

/* How long the load runs before each handover and after the last one. */
#define PHASE_MS 1500
/* Generous, for runs under valgrind; a healthy run never comes near. */
#define STEP_TIMEOUT_MS 15000

/* A process the coordinator started: a server generation or the load generator. */
struct child {
    const char *name;
    pid_t pid;     /* 0 once reaped */
    int status_fd; /* read end of the pipe the child reports on */
    char buf[256]; /* what it said that is not yet consumed */
    size_t len;
};

static char self_exe[PATH_MAX];

int64_t handoff_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void handoff_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int handoff_count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

void handoff_report(int fd, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof(line) && write(fd, line, (size_t)n) != n)
        fprintf(stderr, "report: %s\n", strerror(errno)); /* the coordinator will notice */
}

int handoff_ask(const char *path, const char *request, int *ret_fd, const char *who) {
    uint8_t resp[16];
    uint32_t resp_len = sizeof(resp);
    int fd = -1;
    struct timeval timeout = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_sync_client(path, (const uint8_t *)request, (uint32_t)strlen(request), resp, &resp_len,
                         &fd, &timeout, &err) < 0) {
        fprintf(stderr, "%s: afdt_sync_client: %s: %s (%s)\n", who,
                afdt_operation_str(err.operation), err.message, strerror(errno));
        return -1;
    }
    if (resp_len != 2 || memcmp(resp, "ok", 2) != 0 || (fd >= 0) != (ret_fd != NULL)) {
        fprintf(stderr, "%s: unexpected answer to \"%s\"\n", who, request);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (ret_fd)
        *ret_fd = fd; /* now the caller's */
    return 0;
}

/* Start this program again in another role, by fork and exec as a new release would be.
 * @args ends with NULL; the status pipe's descriptor is appended. Only that pipe and
 * @keep_fd cross the exec: every other descriptor here is close-on-exec. */
static int spawn(struct child *c, const char *name, const char *const *args, int keep_fd) {
    char *argv[8];
    char status_arg[16];
    int p[2];
    int n = 0;
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    snprintf(status_arg, sizeof(status_arg), "%d", p[1]);
    argv[n++] = self_exe;
    while (*args && n < 6)
        argv[n++] = (char *)*args++;
    argv[n++] = status_arg;
    argv[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* If the demo dies, its children die with it: no orphans. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        if (fcntl(p[1], F_SETFD, 0) < 0 || (keep_fd >= 0 && fcntl(keep_fd, F_SETFD, 0) < 0))
            _exit(127);
        execv(self_exe, argv);
        _exit(127);
    }
    int e = errno;
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        errno = e;
        return -1;
    }
    *c = (struct child){.name = name, .pid = pid, .status_fd = p[0]};
    return 0;
}

/* Wait for the child's next status line, which must start with @word. */
static int expect(struct child *c, const char *word, char *line, size_t size) {
    int64_t deadline = handoff_now_us() + STEP_TIMEOUT_MS * 1000LL;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            snprintf(line, size, "%.*s", (int)n, c->buf);
            c->len -= n + 1;
            memmove(c->buf, nl + 1, c->len);
            size_t w = strlen(word);
            if (strncmp(line, word, w) == 0 && (line[w] == ' ' || line[w] == '\0'))
                return 0;
            fprintf(stderr, "demo: %s said \"%s\", expected \"%s\"\n", c->name, line, word);
            return -1;
        }
        int64_t left_ms = (deadline - handoff_now_us()) / 1000;
        if (left_ms <= 0 || c->len == sizeof(c->buf)) {
            fprintf(stderr, "demo: %s did not say \"%s\" in time\n", c->name, word);
            return -1;
        }
        struct pollfd pfd = {.fd = c->status_fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left_ms) <= 0)
            continue; /* EINTR or the deadline: checked above */
        ssize_t r = read(c->status_fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "demo: %s ended before saying \"%s\"\n", c->name, word);
            return -1;
        }
        c->len += (size_t)r;
    }
}

/* Wait for the child to exit; it must exit with status 0. */
static int reap(struct child *c) {
    int64_t deadline = handoff_now_us() + STEP_TIMEOUT_MS * 1000LL;
    int st = 0;
    pid_t r;
    while ((r = waitpid(c->pid, &st, WNOHANG)) == 0 && handoff_now_us() < deadline)
        handoff_sleep_ms(2);
    if (r != c->pid) {
        fprintf(stderr, "demo: %s did not exit in time\n", c->name);
        return -1; /* still running: kill_all() ends it */
    }
    c->pid = 0;
    close(c->status_fd);
    c->status_fd = -1;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    fprintf(stderr, "demo: %s %s %d\n", c->name, WIFEXITED(st) ? "exited with" : "killed by signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return -1;
}

static void kill_all(struct child *kids, int n) {
    for (int i = 0; i < n; i++) {
        if (kids[i].pid > 0) {
            kill(kids[i].pid, SIGKILL);
            while (waitpid(kids[i].pid, NULL, 0) < 0 && errno == EINTR)
                ;
            kids[i].pid = 0;
        }
        if (kids[i].status_fd >= 0)
            close(kids[i].status_fd);
        kids[i].status_fd = -1;
    }
}

/* Start generation @number; @takeover: from the one serving at @path. */
static int start_generation(struct child *c, int number, const char *path, int *port,
                            double *handover_ms) {
    static const char *const names[] = {"", "gen 1", "gen 2", "gen 3"};
    char num[8], line[64];
    long long us = 0;
    snprintf(num, sizeof(num), "%d", number);
    const char *args[] = {"--generation", num, number == 1 ? "first" : "takeover", path, NULL};
    if (spawn(c, names[number], args, -1) < 0) {
        fprintf(stderr, "demo: cannot start %s: %s\n", names[number], strerror(errno));
        return -1;
    }
    if (expect(c, "serving", line, sizeof(line)) < 0 ||
        sscanf(line, "serving %d %lld", port, &us) != 2 || expect(c, "ready", line, sizeof(line)))
        return -1;
    *handover_ms = (double)us / 1000.0;
    return 0;
}

/* The old generation reports what it served and whether it leaked, then must exit 0. */
static int finish_generation(struct child *c, unsigned long *served) {
    char line[64];
    int leaked = -1;
    if (expect(c, "exit", line, sizeof(line)) < 0 ||
        sscanf(line, "exit %lu %d", served, &leaked) != 2 || reap(c) < 0)
        return -1;
    if (leaked != 0)
        fprintf(stderr, "demo: %s leaked %d descriptors\n", c->name, leaked);
    return leaked == 0 ? 0 : -1;
}

static int run_demo(void) {
    int64_t started_us = handoff_now_us();
    int fds_at_start = handoff_count_fds();
    struct child kids[HANDOFF_GENERATIONS + 1]; /* the generations, then the load */
    struct child *load = &kids[HANDOFF_GENERATIONS];
    unsigned long served[HANDOFF_GENERATIONS + 1] = {0}, seen[HANDOFF_GENERATIONS + 1] = {0};
    unsigned long sent = 0, ok = 0, failed = 0;
    int stop_pipe[2] = {-1, -1};
    int port = 0, result = 1;
    double ms = 0;
    char dir[] = "/tmp/afdt-handoff-XXXXXX", path[64], line[128];

    for (int i = 0; i <= HANDOFF_GENERATIONS; i++)
        kids[i] = (struct child){.status_fd = -1};
    ssize_t len = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (len <= 0 || mkdtemp(dir) == NULL) {
        perror("demo: setup");
        return 1;
    }
    self_exe[len] = '\0';
    snprintf(path, sizeof(path), "%s/handover.sock", dir);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows as it happens, even in a pipe */
    printf("handoff demo: an HTTP server is replaced twice under load by passing its socket\n");

    if (start_generation(&kids[0], 1, path, &port, &ms) < 0)
        goto out;
    printf("gen 1 (pid %d) serves http://127.0.0.1:%d/ and answers handovers at %s\n",
           (int)kids[0].pid, port, path);

    char port_arg[8];
    snprintf(port_arg, sizeof(port_arg), "%d", port);
    const char *load_args[] = {"--load", port_arg, NULL, NULL};
    char stop_arg[16];
    if (pipe2(stop_pipe, O_CLOEXEC) < 0)
        goto out;
    snprintf(stop_arg, sizeof(stop_arg), "%d", stop_pipe[0]);
    load_args[2] = stop_arg;
    if (spawn(load, "load", load_args, stop_pipe[0]) < 0)
        goto out;
    close(stop_pipe[0]);
    stop_pipe[0] = -1;
    printf("load (pid %d): %d threads, a new connection per request, all through the demo\n",
           (int)load->pid, HANDOFF_WORKERS);
    handoff_sleep_ms(PHASE_MS);

    for (int n = 2; n <= HANDOFF_GENERATIONS; n++) {
        int new_port = 0;
        if (start_generation(&kids[n - 1], n, path, &new_port, &ms) < 0)
            goto out;
        if (new_port != port) {
            fprintf(stderr, "demo: gen %d serves port %d, not %d\n", n, new_port, port);
            goto out;
        }
        if (finish_generation(&kids[n - 2], &served[n - 1]) < 0)
            goto out;
        printf("handover %d: gen %d (pid %d) got the socket and served %.2f ms after asking; "
               "gen %d drained and exited\n",
               n - 1, n, (int)kids[n - 1].pid, ms, n - 1);
        handoff_sleep_ms(PHASE_MS);
    }

    /* Stop the load, then the last generation the way a successor would. */
    close(stop_pipe[1]);
    stop_pipe[1] = -1;
    if (expect(load, "result", line, sizeof(line)) < 0 ||
        sscanf(line, "result %lu %lu %lu %lu %lu %lu", &sent, &ok, &failed, &seen[1], &seen[2],
               &seen[3]) != 6 ||
        reap(load) < 0)
        goto out;
    if (handoff_ask(path, "stop", NULL, "demo") < 0 ||
        finish_generation(&kids[HANDOFF_GENERATIONS - 1], &served[HANDOFF_GENERATIONS]) < 0)
        goto out;
    printf("load stopped, then gen 3 stopped\n");
    printf("requests: %lu sent, %lu ok, %lu failed\n", sent, ok, failed);
    bool agree = true, each_served = true;
    for (int n = 1; n <= HANDOFF_GENERATIONS; n++) {
        agree = agree && served[n] == seen[n];
        each_served = each_served && seen[n] > 0;
    }
    printf("served: gen 1 %lu, gen 2 %lu, gen 3 %lu (%s)\n", seen[1], seen[2], seen[3],
           agree ? "the servers' own counts agree" : "the servers' own counts DIFFER");
    result = failed == 0 && sent == ok && agree && each_served ? 0 : 1;

out:
    kill_all(kids, HANDOFF_GENERATIONS + 1);
    for (int i = 0; i < 2; i++)
        if (stop_pipe[i] >= 0)
            close(stop_pipe[i]);
    if (unlink(path) == 0 && result == 0) {
        fprintf(stderr, "demo: the last generation left its socket file behind\n");
        result = 1;
    }
    if (rmdir(dir) < 0)
        perror("demo: rmdir");
    int leaked = handoff_count_fds() - fds_at_start;
    if (leaked != 0) {
        fprintf(stderr, "demo: the coordinator leaked %d descriptors\n", leaked);
        result = 1;
    } else if (result == 0) {
        printf("descriptors: none leaked in any process\n");
    }
    printf("%s (%.1f s)\n",
           result == 0 ? "PASS: two handovers under load and not one request failed" : "FAILED",
           (double)(handoff_now_us() - started_us) / 1e6);
    return result;
}

static int parse_int(const char *s, int max) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && v >= 0 && v <= max ? (int)v : -1;
}

int main(int argc, char **argv) {
    /* Ignored signals stay ignored across exec: no child dies writing to a closed peer. */
    signal(SIGPIPE, SIG_IGN);
    if (argc == 1)
        return run_demo();
    if (argc == 6 && strcmp(argv[1], "--generation") == 0) {
        int number = parse_int(argv[2], HANDOFF_GENERATIONS), status_fd = parse_int(argv[5], 1023);
        if (number >= 1 && status_fd >= 0) {
            int rc = handoff_run_generation(number, strcmp(argv[3], "takeover") == 0, argv[4],
                                            status_fd);
            close(status_fd);
            return rc;
        }
    }
    if (argc == 5 && strcmp(argv[1], "--load") == 0) {
        int port = parse_int(argv[2], 65535), stop_fd = parse_int(argv[3], 1023),
            status_fd = parse_int(argv[4], 1023);
        if (port > 0 && stop_fd >= 0 && status_fd >= 0) {
            int rc = handoff_run_load(port, stop_fd, status_fd);
            close(status_fd);
            return rc;
        }
    }
    fprintf(stderr, "usage: %s (no arguments: it starts its other roles itself)\n", argv[0]);
    return 2;
}
