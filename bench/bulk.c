/* SPDX-License-Identifier: BSD-3-Clause */
/* Bulk hand-over of 10,000 descriptors three ways, and the server's memory for idle connections. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "afdt.h"
#include "bench.h"

/* Names of the named set: "fd00000" to "fd09999", 7 bytes each. */
#define NAME_FMT "fd%05u"
#define NAME_LEN 7u

static const struct timeval bulk_timeout = {30, 0};

static void quiet_error(const struct afdt_error_t *err, void *userdata) {
    (void)err;
    (void)userdata;
}

/* BULK_FDS duplicates of /dev/null, to hand over. */
static int *make_fds(void) {
    int *fds = malloc(BULK_FDS * sizeof(int));
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fds == NULL || devnull < 0)
        die("make_fds");
    for (unsigned i = 0; i < BULK_FDS; i++) {
        fds[i] = fcntl(devnull, F_DUPFD_CLOEXEC, 0);
        if (fds[i] < 0)
            die("dup (is RLIMIT_NOFILE's hard limit above 10,000?)");
    }
    close(devnull);
    return fds;
}

static void close_fds(int *fds, unsigned n) {
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void print_bulk(const char *method, unsigned rep, int64_t ns, unsigned got,
                       unsigned messages) {
    printf("bulk\t%s\t%u\t%.2f\t%u\t%u\n", method, rep, (double)ns / 1e6, got, messages);
}

/* --- (1) the compatible API: one exchange per descriptor ------------------- */

static int answer_indexed(const uint8_t *request, uint32_t request_length, uint8_t *response,
                          uint32_t *response_length, void *userdata) {
    (void)response;
    const int *fds = userdata;
    uint32_t i;
    *response_length = 0;
    if (request_length != sizeof(i))
        return -1;
    memcpy(&i, request, sizeof(i));
    return i < BULK_FDS ? fds[i] : -1;
}

void compat_server(const char *path, int ready_fd) {
    raise_nofile();
    int *fds = make_fds();
    struct event_base *eb = event_base_new();
    if (eb == NULL ||
        afdt_create_server(path, eb, answer_indexed, NULL, quiet_error, NULL, fds) < 0)
        die("compat server");
    if (write(ready_fd, "r", 1) != 1)
        die("write");
    close(ready_fd);
    event_base_dispatch(eb);
    _exit(0);
}

static void bulk_compat(unsigned rep) {
    char path[128];
    sock_path(path, sizeof(path), "bulk");
    pid_t pid = spawn_server("compat", path);
    if (pid < 0)
        die("compat server did not start");
    int *got = malloc(BULK_FDS * sizeof(int));
    if (got == NULL)
        die("malloc");
    unsigned ok = 0;
    int64_t t0 = now_ns();
    for (uint32_t i = 0; i < BULK_FDS; i++) {
        uint32_t len = 0;
        if (afdt_sync_client(path, (const uint8_t *)&i, sizeof(i), NULL, &len, &got[i],
                             &bulk_timeout, NULL) == 0 &&
            got[i] >= 0)
            ok++;
    }
    int64_t t1 = now_ns();
    close_fds(got, BULK_FDS);
    free(got);
    stop_server(pid);
    unlink(path);
    print_bulk("exchanges", rep, t1 - t0, ok, BULK_FDS);
}

/* --- (2) multi-descriptor frames over an established socket ---------------- */

static void bulk_frames(unsigned rep) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(sv[0]);
        int *fds = make_fds();
        char c;
        /* Ready, then wait for the receiver's go so set-up is not timed. */
        if (write(sv[1], "r", 1) != 1 || read(sv[1], &c, 1) != 1)
            _exit(1);
        for (uint32_t off = 0; off < BULK_FDS; off += AFDT_MAX_FDS) {
            uint32_t n = BULK_FDS - off < AFDT_MAX_FDS ? BULK_FDS - off : AFDT_MAX_FDS;
            if (afdt_send_fds_msg(sv[1], NULL, 0, fds + off, n, NULL) < 0)
                _exit(1);
        }
        /* Keep the descriptors until the receiver has them all and hangs up. */
        while (read(sv[1], &c, 1) > 0) {
        }
        _exit(0);
    }
    close(sv[1]);
    int *got = malloc(BULK_FDS * sizeof(int));
    if (got == NULL)
        die("malloc");
    char c;
    if (read(sv[0], &c, 1) != 1)
        die("frames sender did not start");
    unsigned have = 0, frames = 0;
    int64_t t0 = now_ns();
    if (write(sv[0], "g", 1) != 1)
        die("write");
    while (have < BULK_FDS) {
        uint32_t len = 0, n = AFDT_MAX_FDS;
        if (afdt_recv_fds_msg(sv[0], NULL, &len, got + have, &n, NULL) < 0)
            break;
        have += n;
        frames++;
    }
    int64_t t1 = now_ns();
    close_fds(got, have);
    free(got);
    close(sv[0]);
    waitpid(pid, NULL, 0);
    print_bulk("frames", rep, t1 - t0, have, frames);
}

/* --- (3) a named set from the extended server ------------------------------ */

struct named_state {
    struct afdt_named_fd *set;
};

static int answer_named(const struct afdt_peer *peer, const uint8_t *request,
                        uint32_t request_length, struct afdt_reply *reply, void *userdata) {
    (void)peer;
    (void)request;
    (void)request_length;
    struct named_state *st = userdata;
    reply->named = st->set;
    reply->nnamed = BULK_FDS;
    return 0;
}

void named_server(const char *path, int ready_fd) {
    raise_nofile();
    int *fds = make_fds();
    struct named_state st = {calloc(BULK_FDS, sizeof(struct afdt_named_fd))};
    if (st.set == NULL)
        die("calloc");
    for (unsigned i = 0; i < BULK_FDS; i++) {
        st.set[i].fd = fds[i];
        snprintf(st.set[i].name, sizeof(st.set[i].name), NAME_FMT, i);
    }
    struct event_base *eb = event_base_new();
    struct afdt_server_options opts = {0};
    opts.size = sizeof(opts);
    opts.request_handler = answer_named;
    opts.error_handler = quiet_error;
    opts.userdata = &st;
    if (eb == NULL || afdt_create_server_ex(path, eb, &opts, NULL) < 0)
        die("named server");
    if (write(ready_fd, "r", 1) != 1)
        die("write");
    close(ready_fd);
    event_base_dispatch(eb);
    _exit(0);
}

static void bulk_named(unsigned rep) {
    char path[128];
    sock_path(path, sizeof(path), "named");
    pid_t pid = spawn_server("named", path);
    if (pid < 0)
        die("named server did not start");
    struct afdt_named_fd *set = NULL;
    uint32_t n = 0, len = 0, nfds = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int64_t t0 = now_ns();
    int r = afdt_sync_client_ex(path, (const uint8_t *)BENCH_REQUEST, BENCH_REQUEST_LEN, NULL, &len,
                                NULL, &nfds, &set, &n, &bulk_timeout, &err);
    int64_t t1 = now_ns();
    if (r < 0)
        fprintf(stderr, "afdt-bench: named set: %s %s: %s\n", afdt_operation_str(err.operation),
                err.message, strerror(errno));
    afdt_named_fds_free(set, n, 1);
    stop_server(pid);
    unlink(path);
    /* Data frames under the documented convention: each entry takes a length
     * byte and its name, at most AFDT_MAX_FDS of them per frame. */
    unsigned per_frame = (unsigned)(AFDT_MSGLEN / (1 + NAME_LEN));
    if (per_frame > AFDT_MAX_FDS)
        per_frame = AFDT_MAX_FDS;
    print_bulk("named", rep, t1 - t0, n, (BULK_FDS + per_frame - 1) / per_frame);
}

void run_bulk(unsigned rep) {
    bulk_compat(rep);
    bulk_frames(rep);
    bulk_named(rep);
}

/* --- idle: the server's memory for silent connections ---------------------- */

static int answer_nothing(const struct afdt_peer *peer, const uint8_t *request,
                          uint32_t request_length, struct afdt_reply *reply, void *userdata) {
    (void)peer;
    (void)request;
    (void)request_length;
    (void)reply;
    (void)userdata;
    return -1;
}

void idle_server(const char *path, int ready_fd) {
    raise_nofile();
    struct event_base *eb = event_base_new();
    struct afdt_server_options opts = {0};
    opts.size = sizeof(opts);
    opts.max_conns = IDLE_CONNS;
    opts.conn_timeout_ms = 60000;
    opts.request_handler = answer_nothing;
    opts.error_handler = quiet_error;
    if (eb == NULL || afdt_create_server_ex(path, eb, &opts, NULL) < 0)
        die("idle server");
    if (write(ready_fd, "r", 1) != 1)
        die("write");
    close(ready_fd);
    event_base_dispatch(eb);
    _exit(0);
}

void run_idle(unsigned rep) {
    char path[128];
    sock_path(path, sizeof(path), "idle");
    pid_t pid = spawn_server("idle", path);
    if (pid < 0)
        die("idle server did not start");
    sleep_ms(50);
    long base_kib = proc_status_kib(pid, "VmRSS");
    long base_fds = proc_fd_count(pid);
    struct sockaddr_un sun = {0};
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path));
    int *socks = malloc(IDLE_CONNS * sizeof(int));
    if (socks == NULL)
        die("malloc");
    unsigned open_n = 0;
    for (; open_n < IDLE_CONNS; open_n++) {
        /* Blocking: when the backlog is full, connect waits for the server. */
        socks[open_n] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (socks[open_n] < 0 || connect(socks[open_n], (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            fprintf(stderr, "afdt-bench: idle connection %u: %s\n", open_n, strerror(errno));
            if (socks[open_n] >= 0)
                close(socks[open_n]);
            break;
        }
    }
    /* Wait until the server has accepted them all. */
    long fds = 0;
    for (int i = 0; i < 2000; i++) {
        fds = proc_fd_count(pid);
        if (fds >= base_fds + (long)open_n)
            break;
        sleep_ms(10);
    }
    sleep_ms(50);
    long after_kib = proc_status_kib(pid, "VmRSS");
    close_fds(socks, open_n);
    free(socks);
    stop_server(pid);
    unlink(path);
    printf("idle\t%u\t%ld\t%ld\t%ld\t%.2f\n", rep, fds - base_fds, base_kib, after_kib,
           (double)(after_kib - base_kib) / 1024.0);
}
