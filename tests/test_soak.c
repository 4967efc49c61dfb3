/* SPDX-License-Identifier: BSD-3-Clause */
/* Soak and hostile extras: ten thousand silent connections, long runs of transfers and
 * exchanges with flat descriptors and memory, misbehaving request handlers, 253 descriptors. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

/* Counts, overridable for a longer soak (the defaults keep the suite fast). */
static long env_count(const char *name, long dflt) {
    const char *v = getenv(name);
    long n = v ? atol(v) : 0;
    return n > 0 ? n : dflt;
}

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

/* Memory growth in KiB that counts as flat; memcheck holds freed blocks back
 * (--freelist-vol) and checks for leaks itself, so under it growth is only
 * printed. */
static long flat_kib(void) {
    return RUNNING_ON_VALGRIND ? 1L << 30 : 1024;
}

#if defined(__SANITIZE_ADDRESS__)
/* ASan keeps freed memory in quarantine, so resident memory grows by design
 * there: its allocator's count of live bytes is the honest measure. */
#define MEM_NAME "live heap (ASan)"
size_t __sanitizer_get_current_allocated_bytes(void); /* libasan's; its header is optional */
static long mem_kib(void) {
    return (long)(__sanitizer_get_current_allocated_bytes() / 1024);
}
#else
#define MEM_NAME "VmRSS"
/* Resident memory of this process, in KiB. */
static long vm_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static long mem_kib(void) {
    return vm_rss_kib();
}
#endif

/* Raise the soft descriptor limit to the hard one; skip unless @need fit. */
static void need_descriptors(rlim_t need) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        harness_skip("RLIMIT_NOFILE hard limit is too low for this test");
    rl.rlim_cur = rl.rlim_max;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

/* ---------------------------------------------------------------------------
 * The server child: a 2009-style server at one path and an extended one at
 * another, on one loop.  Besides echo requests it answers control requests
 * ("?fds", "?rss", "?count OP ERRNO", "?quit") and misbehaves on request
 * ("bad-fd", "too-long", "too-many", "ex-bad-fd"), so the test process is free
 * to be the client.
 * ------------------------------------------------------------------------- */

#define MAX_ERRNO 160
#define NOT_A_DESCRIPTOR 1000000 /* far above any RLIMIT_NOFILE, so never open */

struct server_cfg {
    const char *path, *path_ex;
    uint32_t max_conns, conn_timeout_ms;
    int ready[2];
};

/* Only the child touches this: it is a separate process. */
static struct {
    void *h, *hx;
    int devnull;
    int fds_before;
    long counts[AFDT_TIMEOUT + 1][MAX_ERRNO];
    long errors;
} C;

static void child_on_error(const struct afdt_error_t *e, void *ud) {
    int eno = errno;
    (void)ud;
    C.errors++;
    if ((unsigned)e->operation <= AFDT_TIMEOUT && eno >= 0 && eno < MAX_ERRNO)
        C.counts[e->operation][eno]++;
}

/* Answer @req into @resp; returns the descriptor to send or -1. */
static int child_answer(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len) {
    char q[64];
    size_t n = len < sizeof(q) - 1 ? len : sizeof(q) - 1;
    memcpy(q, req, n);
    q[n] = '\0';
    long v = -1000;
    int op, eno;
    if (strcmp(q, "bad-fd") == 0) {
        *resp_len = 0;
        return NOT_A_DESCRIPTOR;
    }
    if (strcmp(q, "too-long") == 0) {
        *resp_len = AFDT_MSGLEN + 1;
        return -1;
    }
    if (q[0] != '?') {
        memcpy(resp, req, len);
        *resp_len = len;
        return C.devnull; /* still ours: the library never closes it */
    }
    if (strcmp(q, "?fds") == 0)
        v = fd_count();
    else if (strcmp(q, "?rss") == 0)
        v = mem_kib();
    else if (strcmp(q, "?errors") == 0)
        v = C.errors;
    else if (sscanf(q, "?count %d %d", &op, &eno) == 2 && op >= 0 && op <= AFDT_TIMEOUT &&
             eno >= 0 && eno < MAX_ERRNO)
        v = C.counts[op][eno];
    else if (strcmp(q, "?quit") == 0)
        v = afdt_close_server(C.h) | afdt_close_server(C.hx);
    *resp_len = (uint32_t)snprintf((char *)resp, AFDT_MSGLEN, "%ld", v);
    return -1;
}

static int child_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                         void *ud) {
    (void)ud;
    return child_answer(req, len, resp, resp_len);
}

static int child_request_ex(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                            struct afdt_reply *reply, void *ud) {
    (void)peer;
    (void)ud;
    if (len == 8 && memcmp(req, "too-many", 8) == 0) {
        reply->nfds = AFDT_MAX_FDS + 1;
        return 0;
    }
    if (len == 9 && memcmp(req, "ex-bad-fd", 9) == 0) {
        reply->fds[0] = C.devnull;
        reply->fds[1] = NOT_A_DESCRIPTOR;
        reply->nfds = 2;
        return 0;
    }
    uint32_t rlen = AFDT_MSGLEN;
    int fd = child_answer(req, len, reply->content, &rlen);
    reply->content_length = rlen;
    if (fd >= 0) {
        reply->fds[0] = fd;
        reply->nfds = 1;
    }
    return 0;
}

/* Exit codes: 0 clean, 3-5 setup failed, 10 descriptor leak after closing. */
static int server_child(void *arg) {
    struct server_cfg *cfg = arg;
    close(cfg->ready[0]);
    C.fds_before = fd_count();
    C.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct event_base *eb = event_base_new();
    if (C.devnull < 0 || eb == NULL)
        return 3;
    if (afdt_create_server(cfg->path, eb, child_request, NULL, child_on_error, &C.h, NULL) < 0)
        return 4;
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.max_conns = cfg->max_conns;
    o.conn_timeout_ms = cfg->conn_timeout_ms;
    o.request_handler = child_request_ex;
    o.error_handler = child_on_error;
    if (afdt_create_server_ex(cfg->path_ex, eb, &o, &C.hx) < 0)
        return 5;
    if (write(cfg->ready[1], "r", 1) != 1)
        return 3;
    close(cfg->ready[1]);
    event_base_dispatch(eb); /* until "?quit" closed both servers and they drained */
    event_base_free(eb);
    close(C.devnull);
    return fd_count() == C.fds_before - 1 ? 0 : 10; /* minus the ready pipe */
}

static pid_t start_server(struct server_cfg *cfg) {
    cfg->path = tmp_path("soak");
    cfg->path_ex = tmp_path("soakx");
    CHECK_INT(pipe2(cfg->ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(server_child, cfg);
    close(cfg->ready[1]);
    char c;
    CHECK_INT(read(cfg->ready[0], &c, 1), ==, 1);
    close(cfg->ready[0]);
    return pid;
}

/* One exchange with @path; returns the response as a number, closing any descriptor. */
static long ask(const char *path, const char *q) {
    uint8_t resp[64];
    uint32_t len = sizeof(resp) - 1;
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {10, 0};
    int r =
        afdt_sync_client(path, (const uint8_t *)q, (uint32_t)strlen(q), resp, &len, &fd, &tv, &err);
    int e = errno;
    if (r < 0)
        harness_fail(__FILE__, __LINE__, "asking %s: %s %s errno %d (%s)", q,
                     afdt_operation_str(err.operation), err.message, e, strerror(e));
    if (fd >= 0)
        close(fd);
    resp[len] = '\0';
    return atol((const char *)resp);
}

static long ask_count(const char *path, enum afdt_operation op, int eno) {
    char q[64];
    snprintf(q, sizeof(q), "?count %d %d", (int)op, eno);
    return ask(path, q);
}

/* A good echo exchange with a descriptor, through the sync client. */
static void check_echo(const char *path) {
    uint8_t resp[16];
    uint32_t len = sizeof(resp);
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {10, 0};
    CHECK_INT(afdt_sync_client(path, (const uint8_t *)"echo", 4, resp, &len, &fd, &tv, &err), ==,
              0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(resp, "echo", 4);
    CHECK(fd >= 0);
    CHECK(is_cloexec(fd));
    close(fd);
}

/* Wait (at most 30 s) until the server's descriptor count is @want. */
static long wait_server_fds(const char *path, long want) {
    long got = -1;
    for (int i = 0; i < 3000 && (got = ask(path, "?fds")) != want; i++)
        sleep_ms(10);
    return got;
}

static void stop_server(struct server_cfg *cfg, pid_t pid) {
    CHECK_INT(ask(cfg->path, "?quit"), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
}

/* ---------------------------------------------------------------------------
 * Many connections.
 * ------------------------------------------------------------------------- */

static int connect_raw(const char *path) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    /* Blocking: waits while the backlog is full, as the server drains it. */
    CHECK_INT(connect(s, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    return s;
}

#define MAX_SILENT 10000

TEST(server_ex_holds_10000_silent_connections_answers_and_cleans_up) {
    static int socks[MAX_SILENT];
    const long n = MAX_SILENT;
    need_descriptors((rlim_t)n + 256); /* each side holds n, in its own process */
    struct server_cfg cfg = {.max_conns = (uint32_t)n, .conn_timeout_ms = 120000};
    pid_t pid = start_server(&cfg);
    long base = ask(cfg.path, "?fds");
    long rss_before = ask(cfg.path, "?rss");

    for (long i = 0; i < n; i++)
        socks[i] = connect_raw(cfg.path_ex);
    /* All held at once: the cap is exactly n, and none was dropped. */
    CHECK_INT(wait_server_fds(cfg.path, base + n), ==, base + n);
    CHECK_INT(ask_count(cfg.path, AFDT_RECVMSG, ECONNABORTED), ==, 0);
    long rss_peak = ask(cfg.path, "?rss");

    /* Still answering: a good client on the full extended server makes room
     * by dropping the oldest silent one. */
    check_echo(cfg.path_ex);
    CHECK_INT(ask_count(cfg.path, AFDT_RECVMSG, ECONNABORTED), ==, 1);
    check_echo(cfg.path);

    for (long i = 0; i < n; i++)
        close(socks[i]);
    CHECK_INT(wait_server_fds(cfg.path, base), ==, base);
    /* Every silent connection but the dropped one ended at its end of file. */
    CHECK_INT(ask_count(cfg.path, AFDT_RECVMSG, 0), ==, n - 1);
    check_echo(cfg.path_ex);
    printf("%ld silent connections held; server %s %ld KiB before, %ld KiB at peak, %ld "
           "KiB after\n",
           n, MEM_NAME, rss_before, rss_peak, ask(cfg.path, "?rss"));
    fflush(stdout); /* the harness ends each test with _exit */
    stop_server(&cfg, pid);
}

/* ---------------------------------------------------------------------------
 * Long runs: descriptors and memory stay flat.
 * ------------------------------------------------------------------------- */

TEST(low_level_transfers_keep_descriptors_and_memory_flat) {
    const long n = env_count("AFDT_SOAK_N", 200000);
    const long warm = n / 10 > 1000 ? n / 10 : 1000 < n ? 1000 : n / 2;
    int sv[2];
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(devnull >= 0);
    int three[3] = {devnull, devnull, devnull};
    int fds_warm = -1;
    long rss_warm = -1;
    for (long i = 0; i < n; i++) {
        if (i == warm) {
            fds_warm = fd_count();
            rss_warm = mem_kib();
        }
        uint8_t msg[32], buf[32];
        memset(msg, (int)(i & 0x7f), sizeof(msg));
        uint32_t len = sizeof(buf);
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        if (i % 2 == 0) {
            /* One descriptor, the 2009 calls. */
            int fd = -1;
            CHECK_INT(afdt_send_fd_msg(sv[0], msg, sizeof(msg), devnull, &err), ==, 0);
            CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), ==, 0);
            CHECK(fd >= 0);
            close(fd);
        } else {
            /* Three, the extended calls. */
            int got[4] = {-1, -1, -1, -1};
            uint32_t nfds = 4;
            CHECK_INT(afdt_send_fds_msg(sv[0], msg, sizeof(msg), three, 3, &err), ==, 0);
            CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, got, &nfds, &err), ==, 0);
            CHECK_INT(nfds, ==, 3);
            for (int k = 0; k < 3; k++)
                close(got[k]);
        }
        CHECK_INT(len, ==, sizeof(msg));
        CHECK_MEM(buf, msg, sizeof(msg));
    }
    int fds_end = fd_count();
    long rss_end = mem_kib();
    printf("%ld low-level transfers: descriptors %d after warm-up, %d at the end; %s %ld KiB "
           "after warm-up, %ld KiB at the end\n",
           n, fds_warm, fds_end, MEM_NAME, rss_warm, rss_end);
    fflush(stdout); /* the harness ends each test with _exit */
    CHECK_INT(fds_end, ==, fds_warm);
    CHECK_INT(rss_end - rss_warm, <, flat_kib());
    close(sv[0]);
    close(sv[1]);
    close(devnull);
}

TEST(sync_client_exchanges_keep_descriptors_and_memory_flat_on_both_sides) {
    const long n = env_count("AFDT_SOAK_SYNC_N", 20000);
    const long warm = n / 10 > 100 ? n / 10 : n / 2;
    struct server_cfg cfg = {0};
    pid_t pid = start_server(&cfg);
    int fds_warm = -1;
    long rss_warm = -1, srv_fds_warm = -1, srv_rss_warm = -1;
    for (long i = 0; i < n; i++) {
        if (i == warm) {
            fds_warm = fd_count();
            rss_warm = mem_kib();
            srv_fds_warm = ask(cfg.path, "?fds");
            srv_rss_warm = ask(cfg.path, "?rss");
        }
        check_echo(i % 2 ? cfg.path : cfg.path_ex);
    }
    int fds_end = fd_count();
    long rss_end = mem_kib();
    long srv_fds_end = ask(cfg.path, "?fds"), srv_rss_end = ask(cfg.path, "?rss");
    printf("%ld sync exchanges: client descriptors %d -> %d, %s %ld -> %ld KiB; server "
           "descriptors %ld -> %ld, %s %ld -> %ld KiB (after warm-up -> end)\n",
           n, fds_warm, fds_end, MEM_NAME, rss_warm, rss_end, srv_fds_warm, srv_fds_end, MEM_NAME,
           srv_rss_warm, srv_rss_end);
    fflush(stdout); /* the harness ends each test with _exit */
    CHECK_INT(fds_end, ==, fds_warm);
    CHECK_INT(rss_end - rss_warm, <, flat_kib());
    CHECK_INT(srv_fds_end, ==, srv_fds_warm);
    CHECK_INT(srv_rss_end - srv_rss_warm, <, flat_kib());
    CHECK_INT(ask(cfg.path, "?errors"), ==, 0);
    stop_server(&cfg, pid);
}

/* ---------------------------------------------------------------------------
 * Request handlers that misbehave: each answer is reported, the client sees
 * the connection end, nothing leaks, and the next client is served.
 * ------------------------------------------------------------------------- */

#define BAD_ROUNDS 50

/* Send @req to @path and expect the connection to end without an answer. */
static void expect_no_answer(const char *path, const char *req) {
    uint8_t resp[16];
    uint32_t len = sizeof(resp);
    int fd = -7;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {10, 0};
    int r = afdt_sync_client(path, (const uint8_t *)req, (uint32_t)strlen(req), resp, &len, &fd,
                             &tv, &err);
    int e = errno;
    CHECK_INT(r, <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, 0, e);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, <=, sizeof(resp));
}

static void misbehave(const char *path, const char *req, enum afdt_operation op, int eno) {
    struct server_cfg cfg = {0};
    pid_t pid = start_server(&cfg);
    const char *target = strcmp(path, "ex") == 0 ? cfg.path_ex : cfg.path;
    long base = ask(cfg.path, "?fds");
    for (int i = 0; i < BAD_ROUNDS; i++) {
        expect_no_answer(target, req);
        check_echo(target);
    }
    CHECK_INT(ask_count(cfg.path, op, eno), ==, BAD_ROUNDS);
    CHECK_INT(ask(cfg.path, "?errors"), ==, BAD_ROUNDS);
    CHECK_INT(ask(cfg.path, "?fds"), ==, base);
    stop_server(&cfg, pid);
}

TEST(server_reports_handler_returning_a_bad_descriptor_and_keeps_serving) {
    misbehave("legacy", "bad-fd", AFDT_SENDMSG, EBADF);
}

TEST(server_reports_handler_response_longer_than_msglen_and_keeps_serving) {
    misbehave("legacy", "too-long", AFDT_FORMAT, 0);
}

TEST(server_ex_reports_handler_returning_a_bad_descriptor_among_many_and_keeps_serving) {
    misbehave("ex", "ex-bad-fd", AFDT_SENDMSG, EBADF);
}

TEST(server_ex_reports_handler_returning_more_than_253_descriptors_and_keeps_serving) {
    misbehave("ex", "too-many", AFDT_FORMAT, 0);
}

/* ---------------------------------------------------------------------------
 * Clients that send the most descriptors a frame can carry.
 * ------------------------------------------------------------------------- */

TEST(server_closes_253_descriptors_sent_with_each_request_and_answers_it) {
    struct server_cfg cfg = {0};
    pid_t pid = start_server(&cfg);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(devnull >= 0);
    int fds[AFDT_MAX_FDS];
    for (int i = 0; i < AFDT_MAX_FDS; i++)
        fds[i] = devnull;
    long base = ask(cfg.path, "?fds");
    const int rounds = 100;
    for (int i = 0; i < rounds; i++) {
        const char *path = i % 2 ? cfg.path_ex : cfg.path;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        int s = afdt_connect(path, &err);
        CHECK(s >= 0);
        CHECK_INT(afdt_send_fds_msg(s, (const uint8_t *)"echo", 4, fds, AFDT_MAX_FDS, &err), ==, 0);
        uint8_t resp[16];
        uint32_t len = sizeof(resp);
        int fd = -1;
        CHECK_INT(afdt_recv_fd_msg(s, resp, &len, &fd, &err), ==, 0);
        CHECK_INT(len, ==, 4);
        CHECK_MEM(resp, "echo", 4);
        CHECK(same_file(fd, devnull));
        close(fd);
        close(s);
    }
    /* One more than the kernel carries is refused before anything is sent. */
    int more[AFDT_MAX_FDS + 1];
    for (int i = 0; i <= AFDT_MAX_FDS; i++)
        more[i] = devnull;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int s = afdt_connect(cfg.path, &err);
    CHECK(s >= 0);
    CHECK_INT(afdt_send_fds_msg(s, (const uint8_t *)"echo", 4, more, AFDT_MAX_FDS + 1, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    close(s);

    CHECK_INT(wait_server_fds(cfg.path, base), ==, base);
    CHECK_INT(ask_count(cfg.path, AFDT_FORMAT, 0), ==, rounds);
    close(devnull);
    stop_server(&cfg, pid);
}
