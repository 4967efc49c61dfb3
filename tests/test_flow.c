/* SPDX-License-Identifier: BSD-3-Clause */
/* Named sets under a user's limit on descriptors in flight: flow control and back pressure. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

/* The kernel counts every descriptor a user has in flight (sent, not yet received) against
 * the sender's RLIMIT_NOFILE, and fails sendmsg with ETOOMANYREFS past it; root is exempt.  So
 * these tests send as an unprivileged user: as root, a user of each test's own; run unprivileged
 * (CI's second run), the user we are.  The count is per user, across every process and test
 * running at the same time: the names ending in "by_descriptor_limit" make them run alone. */
#define SET_N 1500
#define SENDER_NOFILE 2048
#define SMALL_NOFILE 512

/* @n copies of /dev/null, named "fd-<i>". */
static struct afdt_named_fd *open_set(uint32_t n) {
    struct afdt_named_fd *set = calloc(n, sizeof(*set));
    CHECK(set != NULL);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(null >= 0);
    for (uint32_t i = 0; i < n; i++) {
        set[i].fd = i == 0 ? null : fcntl(null, F_DUPFD_CLOEXEC, 0);
        CHECK(set[i].fd >= 0);
        snprintf(set[i].name, sizeof(set[i].name), "fd-%u", i);
    }
    return set;
}

static void close_fds_pair(int sv[2]) {
    close(sv[0]);
    close(sv[1]);
}

/* Room for a set and then some, whatever the machine's default. */
static void raise_nofile(unsigned n) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_cur < n) {
        rl.rlim_cur = n;
        if (rl.rlim_max < n)
            rl.rlim_max = n;
        CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    }
}

/* Receive a whole named set of @n on @sock and check it. */
static void recv_set(int sock, uint32_t n) {
    struct afdt_named_fd *set = NULL;
    uint32_t got = 0, len = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_recv_named_fds(sock, NULL, &len, &set, &got, &err) < 0)
        harness_fail(__FILE__, __LINE__, "receive: %s %s (%s)", afdt_operation_str(err.operation),
                     err.message, strerror(errno));
    CHECK_INT(got, ==, n);
    for (uint32_t i = 0; i < n; i += 499)
        CHECK_INT(strtoul(set[i].name + 3, NULL, 10), ==, i);
    afdt_named_fds_free(set, got, 1);
}

/* ---------------------------------------------------------------------------
 * Two sets at once from an extended server, to clients that read a second late
 * ------------------------------------------------------------------------- */

struct served {
    const char *path;
    int ready[2];
    int posts, failed;
};

static int give_set(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                    struct afdt_reply *reply, void *ud) {
    (void)peer, (void)req, (void)len;
    static struct afdt_named_fd *set;
    if (set == NULL)
        set = open_set(SET_N);
    (void)ud;
    reply->named = set;
    reply->nnamed = SET_N;
    return 0;
}

static void set_posted(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                       const struct afdt_reply *reply, int error, void *ud) {
    (void)peer, (void)req, (void)len, (void)reply;
    struct served *s = ud;
    s->posts++;
    if (error) {
        fprintf(stderr, "named set failed: %s\n", strerror(error));
        s->failed++;
    }
}

static void serve_error(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    fprintf(stderr, "server: %s %s: %s (%s)\n", afdt_phase_str(e->phase),
            afdt_operation_str(e->operation), e->message, strerror(errno));
}

/* Serve the set until @n clients have taken it; fail if any failed. */
static int serve_until(struct served *s, int n) {
    close(s->ready[0]);
    struct event_base *eb = event_base_new();
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.request_handler = give_set;
    o.post_handler = set_posted;
    o.error_handler = serve_error;
    o.userdata = s;
    void *h = NULL;
    CHECK_INT(afdt_create_server_ex(s->path, eb, &o, &h), >=, 0);
    CHECK_INT(write(s->ready[1], "L", 1), ==, 1);
    while (s->posts < n)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    afdt_close_server(h);
    event_base_free(eb);
    return s->failed ? 1 : 0;
}

/* As the user: serve two clients. */
static int serve_two(void *arg) {
    return serve_until(arg, 2);
}

/* Start @fn serving @s as @u with RLIMIT_NOFILE @nofile, and wait until it listens. */
static pid_t start_server(struct served *s, const struct test_user *u, unsigned nofile,
                          int (*fn)(void *)) {
    CHECK_INT(pipe2(s->ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn_as_user(u, nofile, fn, s);
    close(s->ready[1]);
    char c;
    CHECK_INT(read(s->ready[0], &c, 1), ==, 1);
    close(s->ready[0]);
    return pid;
}

/* Ask for the set at @path, wait @delay_ms before reading anything, then take it all. */
static void ask_for_set(const char *path, int delay_ms) {
    raise_nofile(4 * SET_N);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int s = afdt_connect(path, &err);
    CHECK(s >= 0);
    CHECK_INT(afdt_send_plain_msg(s, (const uint8_t *)"set", 3, &err), ==, 0);
    sleep_ms(delay_ms);
    recv_set(s, SET_N);
    close(s);
}

static int late_client(void *arg) {
    ask_for_set(arg, 1000);
    return 0;
}

TEST(two_named_sets_of_1500_arrive_though_capped_by_descriptor_limit) {
    struct test_user u;
    test_user_or_self("afdt-test-flow1", &u);
    struct served s = {user_tmp_path(&u, "two"), {-1, -1}, 0, 0};
    pid_t server = start_server(&s, &u, SENDER_NOFILE, serve_two);
    pid_t a = spawn(late_client, (void *)s.path), b = spawn(late_client, (void *)s.path);
    CHECK_INT(wait_exit(a), ==, 0);
    CHECK_INT(wait_exit(b), ==, 0);
    CHECK_INT(wait_exit(server), ==, 0);
}

/* ---------------------------------------------------------------------------
 * The same with the blocking call, from two processes of the user
 * ------------------------------------------------------------------------- */

static int send_one(void *arg) {
    int sock = *(int *)arg;
    struct afdt_named_fd *set = open_set(SET_N);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_send_named_fds(sock, NULL, 0, set, SET_N, &err) < 0)
        harness_fail(__FILE__, __LINE__, "send: %s %s (%s)", afdt_operation_str(err.operation),
                     err.message, strerror(errno));
    afdt_named_fds_free(set, SET_N, 1);
    return 0;
}

static int late_receiver(void *arg) {
    int sock = *(int *)arg;
    raise_nofile(4 * SET_N);
    sleep_ms(1000);
    recv_set(sock, SET_N);
    return 0;
}

TEST(two_blocking_sends_of_1500_arrive_though_capped_by_descriptor_limit) {
    struct test_user u;
    test_user_or_self("afdt-test-flow2", &u);
    int a[2], b[2];
    make_pair(a);
    make_pair(b);
    pid_t ra = spawn(late_receiver, &a[1]), rb = spawn(late_receiver, &b[1]);
    pid_t sa = spawn_as_user(&u, SENDER_NOFILE, send_one, &a[0]);
    pid_t sb = spawn_as_user(&u, SENDER_NOFILE, send_one, &b[0]);
    close_fds_pair(a);
    close_fds_pair(b);
    CHECK_INT(wait_exit(sa), ==, 0);
    CHECK_INT(wait_exit(sb), ==, 0);
    CHECK_INT(wait_exit(ra), ==, 0);
    CHECK_INT(wait_exit(rb), ==, 0);
}

/* ---------------------------------------------------------------------------
 * Back pressure: ETOOMANYREFS waits for room instead of failing
 * ------------------------------------------------------------------------- */

/* More descriptors in flight than this user's limit allows, in a socket a child of ours starts
 * reading only @delay_ms later. */
struct pressure {
    int sock, null;
    pid_t drainer;
};

static void drain(int sock) {
    char buf[64];
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(int) * AFDT_MAX_FDS)];
    } cm;
    for (;;) {
        struct iovec iov = {buf, sizeof(buf)};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
        m.msg_control = cm.b;
        m.msg_controllen = sizeof(cm.b);
        if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) <= 0)
            return;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            int *fds = (int *)(void *)CMSG_DATA(c);
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                close(fds[i]);
        }
    }
}

static void pressure_start(struct pressure *p, int delay_ms) {
    int stuff[2];
    make_pair(stuff);
    p->null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(p->null >= 0);
    int many[AFDT_MAX_FDS];
    for (int i = 0; i < AFDT_MAX_FDS; i++)
        many[i] = p->null;
    while (raw_sendmsg(stuff[0], "x", 1, many, AFDT_MAX_FDS) == 1)
        continue;
    CHECK_INT(errno, ==, ETOOMANYREFS); /* the kernel's limit is reached */
    fflush(NULL);
    p->drainer = fork();
    CHECK(p->drainer >= 0);
    if (p->drainer == 0) {
        close(stuff[0]);
        sleep_ms(delay_ms);
        drain(stuff[1]);
        _exit(0);
    }
    close(stuff[1]);
    p->sock = stuff[0];
}

static void pressure_end(struct pressure *p) {
    close(p->sock);
    close(p->null);
    CHECK_INT(wait_exit(p->drainer), ==, 0);
}

/* As the user, under pressure for 300 ms: the set must wait, then arrive. */
static int send_under_pressure(void *arg) {
    int sock = *(int *)arg;
    struct pressure p;
    pressure_start(&p, 300);
    struct afdt_named_fd *set = open_set(300);
    int64_t start = now_ms();
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_send_named_fds(sock, NULL, 0, set, 300, &err) < 0)
        harness_fail(__FILE__, __LINE__, "send: %s %s (%s)", afdt_operation_str(err.operation),
                     err.message, strerror(errno));
    CHECK_INT(now_ms() - start, >=, 250); /* it waited for the drainer */
    afdt_named_fds_free(set, 300, 1);
    pressure_end(&p);
    return 0;
}

static int eager_receiver(void *arg) {
    recv_set(*(int *)arg, 300);
    return 0;
}

TEST(named_set_send_waits_out_etoomanyrefs_capped_by_descriptor_limit) {
    struct test_user u;
    test_user_or_self("afdt-test-flow3", &u);
    int sv[2];
    make_pair(sv);
    pid_t rx = spawn(eager_receiver, &sv[1]);
    pid_t tx = spawn_as_user(&u, SMALL_NOFILE, send_under_pressure, &sv[0]);
    close_fds_pair(sv);
    CHECK_INT(wait_exit(tx), ==, 0);
    CHECK_INT(wait_exit(rx), ==, 0);
}

/* As the user: serve the set once, under pressure for 300 ms. */
static int serve_under_pressure(void *arg) {
    struct served *s = arg;
    struct pressure p;
    pressure_start(&p, 300);
    s->posts = 0;
    int r = serve_until(s, 1);
    pressure_end(&p);
    return r;
}

static int eager_client(void *arg) {
    ask_for_set(arg, 0);
    return 0;
}

TEST(server_named_set_waits_out_etoomanyrefs_capped_by_descriptor_limit) {
    struct test_user u;
    test_user_or_self("afdt-test-flow4", &u);
    struct served s = {user_tmp_path(&u, "pressed"), {-1, -1}, 0, 0};
    pid_t server = start_server(&s, &u, SMALL_NOFILE + SET_N, serve_under_pressure);
    pid_t client = spawn(eager_client, (void *)s.path);
    CHECK_INT(wait_exit(client), ==, 0);
    CHECK_INT(wait_exit(server), ==, 0);
}

/* ---------------------------------------------------------------------------
 * Only a client that asks gets a set
 * ------------------------------------------------------------------------- */

/* What a 2009 client does: one request, one frame back, hang up.  Nothing may follow the
 * offer, descriptors least of all. */
static int client_2009(void *arg) {
    const char *path = arg;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int s = afdt_connect(path, &err);
    CHECK(s >= 0);
    CHECK_INT(afdt_send_plain_msg(s, (const uint8_t *)"set", 3, &err), ==, 0);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = -2;
    CHECK_INT(afdt_recv_fd_msg(s, buf, &len, &fd, &err), ==, 0);
    CHECK_INT(fd, ==, -1);
    sleep_ms(200);
    char c;
    CHECK_INT(recv(s, &c, 1, MSG_PEEK | MSG_DONTWAIT), ==, -1);
    CHECK_INT(errno, ==, EAGAIN);
    CHECK_INT(len, >=, 14);
    CHECK_MEM(buf, "AFDTNAMED2", 10);
    close(s);
    return 0;
}

struct offer_state {
    struct event_base *eb;
    int posts, post_error, errors;
    struct afdt_error_t err;
};

static int offer_three(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                       struct afdt_reply *reply, void *ud) {
    (void)peer, (void)req, (void)len, (void)ud;
    static struct afdt_named_fd set[3] = {{0, "in"}, {1, "out"}, {2, "err"}};
    reply->named = set;
    reply->nnamed = 3;
    return 0;
}

static void offer_posted(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                         const struct afdt_reply *reply, int error, void *ud) {
    (void)peer, (void)req, (void)len, (void)reply;
    struct offer_state *o = ud;
    o->posts++;
    o->post_error = error;
    event_base_loopbreak(o->eb);
}

static void offer_error(const struct afdt_error_t *e, void *ud) {
    struct offer_state *o = ud;
    o->errors++;
    o->err = *e;
}

TEST(a_2009_client_is_offered_a_named_set_and_sent_no_descriptor) {
    struct offer_state st = {event_base_new(), 0, 0, 0, AFDT_ERROR_T_INIT};
    const char *path = tmp_path("offer");
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.request_handler = offer_three;
    o.post_handler = offer_posted;
    o.error_handler = offer_error;
    o.userdata = &st;
    void *h = NULL;
    CHECK_INT(afdt_create_server_ex(path, st.eb, &o, &h), >=, 0);
    pid_t pid = spawn(client_2009, (void *)path);
    while (st.posts == 0)
        CHECK_INT(event_base_loop(st.eb, EVLOOP_ONCE), >=, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK_INT(st.post_error, !=, 0);
    CHECK_INT(st.errors, ==, 1);
    CHECK(strstr(st.err.message, "did not ask") != NULL);
    afdt_close_server(h);
    event_base_free(st.eb);
}

/* A set from a libafdt 1.0 sender (version 1: everything at once, one acknowledgement at the
 * end), written by hand: still received, and answered in version 1 only. */
TEST(a_version_1_set_from_a_1_0_sender_is_still_received) {
    int sv[2];
    make_pair(sv);
    uint8_t hdr[14 + 2];
    uint32_t count = 3;
    memcpy(hdr, "AFDTNAMED1", 10);
    memcpy(hdr + 10, &count, 4);
    memcpy(hdr + 14, "v1", 2);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(sv[0], hdr, sizeof(hdr), &err), ==, 0);
    const uint8_t data[] = {1, 'a', 1, 'b', 1, 'c'};
    int fds[3] = {0, 1, 2};
    CHECK_INT(afdt_send_fds_msg(sv[0], data, sizeof(data), fds, 3, &err), ==, 0);

    uint8_t content[8];
    uint32_t len = sizeof(content), n = 0;
    struct afdt_named_fd *set = NULL;
    CHECK_INT(afdt_recv_named_fds(sv[1], content, &len, &set, &n, &err), ==, 0);
    CHECK_INT(len, ==, 2);
    CHECK_MEM(content, "v1", 2);
    CHECK_INT(n, ==, 3);
    CHECK_STR(set[2].name, "c");
    CHECK(same_file(set[1].fd, 1));
    afdt_named_fds_free(set, n, 1);

    uint8_t ack[AFDT_MSGLEN];
    len = sizeof(ack);
    CHECK_INT(afdt_recv_plain_msg(sv[0], ack, &len, &err), ==, 0);
    CHECK_INT(len, ==, 12);
    CHECK_MEM(ack, "AFDTACK1", 8);
    CHECK_MEM(ack + 8, &count, 4);
    char c;
    CHECK_INT(recv(sv[0], &c, 1, MSG_DONTWAIT), ==, -1); /* nothing else: no version 2 request */
    CHECK_INT(errno, ==, EAGAIN);
    close_fds_pair(sv);
}
