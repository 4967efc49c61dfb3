/* SPDX-License-Identifier: BSD-3-Clause */
/* One process hands 1,000 listening TCP sockets to another in a single exchange, as a named set. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <afdt.h>

#define NLISTENERS 1000
/* Listeners the new process proves by accepting a real connection on them. */
static const int probes[] = {0, 1, 500, 998, 999};

/* ---- The old process: owns the listeners and serves them. ---------------- */

static struct afdt_named_fd listeners[NLISTENERS];
static pid_t acknowledged_by; /* the new process, once it has them all */

static int on_request(const struct afdt_peer *peer, const uint8_t *request, uint32_t request_length,
                      struct afdt_reply *reply, void *userdata) {
    (void)peer, (void)userdata;
    if (request_length != 10 || memcmp(request, "listeners?", 10) != 0)
        return -1;            /* not a request we know: hang up */
    reply->named = listeners; /* sent in as many frames as it takes */
    reply->nnamed = NLISTENERS;
    return 0;
}

/* Runs once the new process has acknowledged every descriptor. */
static void on_post(const struct afdt_peer *peer, const uint8_t *request, uint32_t request_length,
                    const struct afdt_reply *reply, int error, void *userdata) {
    (void)request, (void)request_length, (void)reply;
    if (error == 0) /* acknowledged: the new process has all of them */
        acknowledged_by = peer->pid;
    event_base_loopbreak(userdata);
}

static void on_error(const struct afdt_error_t *err, void *userdata) {
    (void)userdata;
    fprintf(stderr, "old: %s/%s: %s\n", afdt_phase_str(err->phase),
            afdt_operation_str(err->operation), err->message);
}

/* Open the listeners on 127.0.0.1, each on a port of the kernel's choosing. */
static int open_listeners(uint16_t *ports) {
    for (int i = 0; i < NLISTENERS; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof(a);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
            perror(errno == EMFILE ? "old: listener (raise ulimit -n)" : "old: listener");
            return -1;
        }
        listeners[i].fd = fd;
        snprintf(listeners[i].name, sizeof(listeners[i].name), "listener-%d", i);
        ports[i] = ntohs(a.sin_port);
    }
    return 0;
}

static int run_old(const char *name, int ports_out) {
    static uint16_t ports[NLISTENERS];
    if (open_listeners(ports) < 0)
        return 1;
    struct event_base *eb = event_base_new();
    struct afdt_server_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.size = sizeof(opts);
    opts.request_handler = on_request;
    opts.post_handler = on_post;
    opts.error_handler = on_error;
    opts.userdata = eb;
    void *server = NULL;
    if (eb == NULL || afdt_create_server_ex(name, eb, &opts, &server) < 0)
        return 1;
    printf("old: %d listening TCP sockets on 127.0.0.1, served as a named set at %s\n", NLISTENERS,
           name);
    /* Tell the new process which port each name should have; it asks once
     * this arrives, so the server is ready by then. */
    if (write(ports_out, ports, sizeof(ports)) != (ssize_t)sizeof(ports))
        return 1;
    close(ports_out);

    event_base_dispatch(eb); /* until the post handler breaks it */
    afdt_close_server(server);
    event_base_dispatch(eb); /* lets the last connection go */
    event_base_free(eb);
    /* Handed over: this process no longer needs its copies. */
    for (int i = 0; i < NLISTENERS; i++)
        close(listeners[i].fd);
    return acknowledged_by > 0 ? 0 : 1;
}

/* ---- The new process: asks once, checks everything, proves a few. ------- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int read_all(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static struct sockaddr_in loopback(uint16_t port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Connect to @port and accept that connection on @listener. */
static int prove(int listener, uint16_t port) {
    struct sockaddr_in a = loopback(port);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    int s = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    int ok = s >= 0 && send(c, "x", 1, MSG_NOSIGNAL) == 1 && recv(s, &(char){0}, 1, 0) == 1;
    if (s >= 0)
        close(s);
    close(c);
    return ok ? 0 : -1;
}

static int run_new(const char *name, int ports_in) {
    static uint16_t ports[NLISTENERS];
    if (read_all(ports_in, ports, sizeof(ports)) < 0)
        return 1;
    close(ports_in);

    uint8_t resp[64];
    uint32_t resp_len = sizeof(resp), nfds = 0, n = 0;
    struct afdt_named_fd *set = NULL;
    struct timeval timeout = {10, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    double t0 = now_ms();
    if (afdt_sync_client_ex(name, (const uint8_t *)"listeners?", 10, resp, &resp_len, NULL, &nfds,
                            &set, &n, &timeout, &err) < 0) {
        fprintf(stderr, "new: %s: %s\n", afdt_operation_str(err.operation), err.message);
        return 1;
    }
    double took = now_ms() - t0;
    printf("new: received %u listeners in one exchange in %.1f ms\n", n, took);

    /* Trust nothing that arrived: each must be the listener its name says. */
    int bad = n != NLISTENERS;
    for (int i = 0; i < NLISTENERS && !bad; i++) {
        char want_name[32];
        snprintf(want_name, sizeof(want_name), "listener-%d", i);
        int fd = afdt_named_fds_find(set, n, want_name);
        struct sockaddr_in want_addr = loopback(ports[i]);
        struct afdt_socket_expect want;
        memset(&want, 0, sizeof(want));
        want.size = sizeof(want);
        want.type = SOCK_STREAM;
        want.family = AF_INET;
        want.listening = 1;
        want.addr = &want_addr;
        want.addr_len = sizeof(want_addr);
        if (afdt_check_socket(fd, &want, &err) < 0) {
            fprintf(stderr, "new: %s: %s\n", want_name, err.message);
            bad = 1;
        }
    }
    if (!bad)
        printf("new: all %d checked: TCP, listening, on 127.0.0.1 and the port reported\n",
               NLISTENERS);
    int nprobes = (int)(sizeof(probes) / sizeof(probes[0]));
    for (int k = 0; k < nprobes && !bad; k++) {
        int i = probes[k];
        if (prove(set[i].fd, ports[i]) < 0) {
            fprintf(stderr, "new: accepting on %s failed: %s\n", set[i].name, strerror(errno));
            bad = 1;
        }
    }
    if (!bad)
        printf("new: accepted a connection on %d of them\n", nprobes);
    afdt_named_fds_free(set, n, 1);
    return bad;
}

/* Both processes hold 1,000 descriptors at some point: make room if needed. */
static void raise_descriptor_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * NLISTENERS) {
        rl.rlim_cur = rl.rlim_max < 4 * NLISTENERS ? rl.rlim_max : 4 * NLISTENERS;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* two processes share the output */
    raise_descriptor_limit();
    /* An abstract name: nothing to create or clean up in the file system. */
    char name[64];
    snprintf(name, sizeof(name), "@afdt-bulk-listeners-%d", (int)getpid());
    int ports[2];
    if (pipe2(ports, O_CLOEXEC) < 0)
        return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        close(ports[1]);
        _exit(run_new(name, ports[0]));
    }
    close(ports[0]);
    int rc = run_old(name, ports[1]);
    int status = 0;
    if (rc != 0)
        kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        rc = 1;
    if (acknowledged_by == pid)
        printf("old: pid %d acknowledged all %d; the old copies are closed\n", (int)pid,
               NLISTENERS);
    printf("%s\n", rc == 0 ? "bulk_listeners: ok" : "bulk_listeners: FAILED");
    return rc;
}
