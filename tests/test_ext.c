/* SPDX-License-Identifier: BSD-3-Clause */
/* The 1.x extensions: many descriptors per frame, the extended server, named sets, abstract
 * names and afdt_check_socket, against real sockets and real forked peers. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

/* ---------------------------------------------------------------------------
 * Descriptors to send, and ways to tell them apart on arrival.
 * ------------------------------------------------------------------------- */

/* A descriptor with an inode of its own, so same_file() tells it from others. */
static int distinct_fd(void) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    return fd;
}

static void open_distinct(int *fds, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        fds[i] = distinct_fd();
}

static void close_fds(const int *fds, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* The read end of a pipe that holds @tag: a receiver that has no copy to
 * compare with can still tell which descriptor it got, by reading it. */
static int tagged_fd(const char *tag) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    size_t n = strlen(tag);
    CHECK_INT(write(p[1], tag, n), ==, (ssize_t)n);
    close(p[1]);
    return p[0];
}

static void check_tag(int fd, const char *tag) {
    char buf[AFDT_NAME_MAX + 2];
    ssize_t n = read(fd, buf, sizeof(buf));
    CHECK_INT(n, ==, (ssize_t)strlen(tag));
    CHECK_MEM(buf, tag, (size_t)n);
}

/* Whether @sock has nothing to read (and is still open at the other end). */
static bool nothing_to_read(int sock) {
    char c;
    ssize_t n = recv(sock, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Whether the peer of @sock has closed it (end of file, nothing left). */
static bool peer_closed(int sock) {
    char c;
    return recv(sock, &c, 1, MSG_DONTWAIT) == 0;
}

/* Raise the soft RLIMIT_NOFILE to the hard limit if @more descriptors would
 * not fit; skip when even the hard limit is too low. */
static void need_descriptors(uint64_t more) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    uint64_t want = (uint64_t)fd_count() + more + 64;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        harness_skip("the RLIMIT_NOFILE hard limit is too low for this test");
    rl.rlim_cur = rl.rlim_max;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

/* The highest descriptor number open in this process. */
static int highest_fd(void) {
    int top = -1;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            top = fd;
    return top;
}

/* Leave room for exactly @room more descriptors under RLIMIT_NOFILE.  The
 * limit caps descriptor numbers, not their count, so first fill every hole
 * in the table (with /dev/null, kept open: only forked children call this). */
static void limit_headroom(int room) {
    int top = highest_fd();
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        if (fd > top) {
            close(fd);
            break;
        }
    }
    CHECK_FD_COUNT(top + 1);
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    rl.rlim_cur = (rlim_t)(top + 1 + room);
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

static struct afdt_named_fd *named_new(uint32_t n) {
    struct afdt_named_fd *set = calloc(n ? n : 1, sizeof(*set));
    CHECK(set != NULL);
    return set;
}

/* ---------------------------------------------------------------------------
 * Running a loop: until a callback breaks it, a count is reached, a forked
 * peer exits, or no event is left.
 * ------------------------------------------------------------------------- */

static bool guard_fired;

static void on_guard(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    guard_fired = true;
    event_base_loopbreak(arg);
}

/* Run @eb until a callback breaks it or @ms pass; false if the time ran out. */
static bool run_loop(struct event_base *eb, int64_t ms) {
    struct event *t = evtimer_new(eb, on_guard, eb);
    CHECK(t != NULL);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    guard_fired = false;
    CHECK_INT(evtimer_add(t, &tv), ==, 0);
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    event_free(t);
    return !guard_fired;
}

/* Run @eb until *@count reaches @target (callbacks break the loop when they
 * count) or @ms pass. */
static bool run_until(struct event_base *eb, const int *count, int target, int64_t ms) {
    int64_t end = now_ms() + ms;
    while (*count < target && now_ms() < end)
        run_loop(eb, end - now_ms());
    return *count >= target;
}

struct child_watch {
    struct event_base *eb;
    pid_t pid;
    int code;
    int done;
};

static void on_child_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct child_watch *w = arg;
    int st;
    if (waitpid(w->pid, &st, WNOHANG) == w->pid) {
        w->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        w->done = 1;
        event_base_loopbreak(w->eb);
    }
}

/* Serve on @eb until the forked peer @pid exits; returns its exit code. */
static int serve_until_exit(struct event_base *eb, pid_t pid) {
    struct child_watch w = {eb, pid, -1, 0};
    struct event *tick = event_new(eb, -1, EV_PERSIST, on_child_tick, &w);
    struct timeval tv = {0, 2000};
    CHECK(tick != NULL);
    CHECK_INT(event_add(tick, &tv), ==, 0);
    bool done = run_until(eb, &w.done, 1, 8000);
    event_free(tick);
    if (!done) {
        kill(pid, SIGKILL);
        wait_exit(pid);
        harness_fail(__FILE__, __LINE__, "the forked peer did not finish in time");
    }
    return w.code;
}

/* Run @eb until nothing is left in it: the server let every connection go. */
static void drain(struct event_base *eb) {
    for (int i = 0; i < 3000; i++) {
        int r = event_base_loop(eb, EVLOOP_NONBLOCK);
        CHECK(r >= 0);
        if (r == 1)
            return;
        sleep_ms(1);
    }
    harness_fail(__FILE__, __LINE__, "events are still pending in the loop after 3 s");
}

/* ---------------------------------------------------------------------------
 * A server whose callbacks record what they saw, and clients that record
 * what came back.
 * ------------------------------------------------------------------------- */

static struct {
    struct event_base *eb; /* set by serve(): every post and error breaks its loop */
    /* What the request handler answers. */
    const char *answer;
    const int *fds;
    uint32_t nfds;
    const struct afdt_named_fd *named;
    uint32_t nnamed;
    int ret;
    uint32_t bogus_nfds; /* if not 0, the count the handler claims instead */
    int allow;           /* what authorize answers */
    /* What happened. */
    int requests, posts, failed_posts, errors, authorizes;
    int post_error; /* of the last failed post */
    struct afdt_peer peer, auth_peer;
    uint8_t req[AFDT_MSGLEN];
    uint32_t req_len;
    uint32_t post_nfds, post_nnamed;
    struct afdt_error_t err;
    int err_errno;
} S;

static int srv_request(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                       struct afdt_reply *reply, void *ud) {
    (void)ud;
    S.requests++;
    S.peer = *peer;
    CHECK_INT(len, <=, AFDT_MSGLEN);
    memcpy(S.req, req, len);
    S.req_len = len;
    CHECK_INT(reply->content_length, ==, 0);
    CHECK_INT(reply->nfds, ==, 0);
    CHECK(reply->named == NULL);
    if (S.ret < 0)
        return S.ret;
    if (S.answer) {
        reply->content_length = (uint32_t)strlen(S.answer);
        memcpy(reply->content, S.answer, reply->content_length);
    }
    if (S.nfds)
        memcpy(reply->fds, S.fds, sizeof(int) * S.nfds);
    reply->nfds = S.bogus_nfds ? S.bogus_nfds : S.nfds;
    reply->named = S.named;
    reply->nnamed = S.nnamed;
    return 0;
}

static void srv_post(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                     const struct afdt_reply *reply, int error, void *ud) {
    (void)peer, (void)req, (void)len, (void)ud;
    if (error) {
        /* The exchange failed after the handler answered: the error handler
         * was told first, and the reply is ours to release now. */
        CHECK_INT(S.errors, >, 0);
        S.failed_posts++;
        S.post_error = error;
        return;
    }
    S.posts++;
    S.post_nfds = reply->nfds;
    S.post_nnamed = reply->nnamed;
    if (S.eb)
        event_base_loopbreak(S.eb);
}

static void srv_error(const struct afdt_error_t *e, void *ud) {
    int en = errno;
    (void)ud;
    S.errors++;
    S.err = *e;
    S.err_errno = en;
    fprintf(stderr, "server error: %s %s \"%s\" errno %d\n", afdt_phase_str(e->phase),
            afdt_operation_str(e->operation), e->message, en);
    if (S.eb)
        event_base_loopbreak(S.eb);
}

static int srv_authorize(const struct afdt_peer *peer, void *ud) {
    (void)ud;
    S.authorizes++;
    S.auth_peer = *peer;
    return S.allow;
}

static struct afdt_server_options server_opts(void) {
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.request_handler = srv_request;
    o.post_handler = srv_post;
    o.error_handler = srv_error;
    return o;
}

static void *serve(struct event_base *eb, const char *path, const struct afdt_server_options *o) {
    void *h = NULL;
    CHECK_INT(afdt_create_server_ex(path, eb, o, &h), >=, 0);
    CHECK(h != NULL);
    S.eb = eb;
    return h;
}

/* Close the server, wait until it holds nothing in the loop, free the loop. */
static void stop(struct event_base *eb, void *h) {
    CHECK_INT(afdt_close_server(h), ==, 0);
    drain(eb);
    event_base_free(eb);
}

static struct {
    int calls, responses, errors;
    uint8_t content[AFDT_MSGLEN];
    uint32_t len;
    int fds[AFDT_MAX_FDS];
    uint32_t nfds;
    struct afdt_named_fd *named;
    uint32_t nnamed;
    int fd; /* what the 2009 response handler got */
    struct afdt_error_t err;
    int err_errno;
} C;

static void cli_response_ex(struct afdt_response *r, void *ud) {
    C.calls++;
    C.responses++;
    CHECK_INT(r->content_length, <=, AFDT_MSGLEN);
    memcpy(C.content, r->content, r->content_length);
    C.len = r->content_length;
    CHECK_INT(r->nfds, <=, AFDT_MAX_FDS);
    memcpy(C.fds, r->fds, sizeof(int) * r->nfds);
    C.nfds = r->nfds;
    C.named = r->named; /* now ours */
    C.nnamed = r->nnamed;
    event_base_loopbreak(ud);
}

static void cli_response(const uint8_t *r, uint32_t len, int fd, void *ud) {
    C.calls++;
    C.responses++;
    memcpy(C.content, r, len);
    C.len = len;
    C.fd = fd;
    event_base_loopbreak(ud);
}

static void cli_error(const struct afdt_error_t *e, void *ud) {
    int en = errno;
    C.calls++;
    C.errors++;
    C.err = *e;
    C.err_errno = en;
    event_base_loopbreak(ud);
}

/* Ask @path once with the extended async client, in @eb, and wait for the answer. */
struct ask {
    struct event_base *eb;
    const char *path, *req;
    struct queued_pair q;
};

static void ask_start(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct ask *a = arg;
    struct timeval tv = {5, 0};
    CHECK_INT(afdt_create_client_ex(a->path, a->eb, (const uint8_t *)a->req,
                                    (uint32_t)strlen(a->req), cli_response_ex, cli_error, &tv,
                                    a->eb),
              ==, 0);
}

static void ask_nothing_more(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
}

/* Ask with the extended async client, from outside the loop or (@busy) from a
 * callback with another queued behind it, so that the client first looks for
 * its answer on the loop's next turn. */
static void ask_async_ex_from(struct event_base *eb, const char *path, const char *req, bool busy) {
    struct ask a;
    memset(&a, 0, sizeof(a));
    a.eb = eb;
    a.path = path;
    a.req = req;
    memset(&C, 0, sizeof(C));
    C.fd = -100;
    if (busy)
        queue_pair(&a.q, eb, ask_start, ask_nothing_more, &a);
    else
        ask_start(-1, 0, &a);
    CHECK(run_until(eb, &C.calls, 1, 6000));
    CHECK_INT(C.calls, ==, 1);
}

static void ask_async_ex(struct event_base *eb, const char *path, const char *req) {
    ask_async_ex_from(eb, path, req, false);
}

/* The same with the 2009 async client. */
static void ask_async(struct event_base *eb, const char *path, const char *req) {
    struct timeval tv = {5, 0};
    memset(&C, 0, sizeof(C));
    C.fd = -100;
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)req, (uint32_t)strlen(req),
                                 cli_response, cli_error, &tv, eb),
              ==, 0);
    CHECK(run_until(eb, &C.calls, 1, 6000));
    CHECK_INT(C.calls, ==, 1);
}

/* Expect @C to hold the answer @answer carrying exactly @fds. */
static void check_answer(const char *answer, const int *fds, uint32_t n) {
    CHECK_INT(C.responses, ==, 1);
    CHECK_INT(C.len, ==, strlen(answer));
    CHECK_MEM(C.content, answer, C.len);
    CHECK_INT(C.nfds, ==, n);
    for (uint32_t i = 0; i < n; i++) {
        CHECK(same_file(C.fds[i], fds[i]));
        CHECK(is_cloexec(C.fds[i]));
    }
}

/* ---------------------------------------------------------------------------
 * afdt_send_fds_msg / afdt_recv_fds_msg
 * ------------------------------------------------------------------------- */

TEST(fds_msg_round_trips_0_1_and_253_descriptors) {
    static const uint32_t counts[] = {0, 1, AFDT_MAX_FDS};
    int sv[2];
    make_pair(sv);
    for (size_t t = 0; t < sizeof(counts) / sizeof(counts[0]); t++) {
        uint32_t n = counts[t];
        int sent[AFDT_MAX_FDS], got[AFDT_MAX_FDS];
        open_distinct(sent, n);
        char msg[32];
        snprintf(msg, sizeof(msg), "frame with %u", n);
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(
            afdt_send_fds_msg(sv[0], (const uint8_t *)msg, (uint32_t)strlen(msg), sent, n, &err),
            ==, 0);
        uint8_t buf[AFDT_MSGLEN];
        uint32_t len = sizeof(buf), cap = AFDT_MAX_FDS;
        int before = fd_count();
        CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, got, &cap, &err), ==, 0);
        CHECK_INT(len, ==, strlen(msg));
        CHECK_MEM(buf, msg, len);
        CHECK_INT(cap, ==, n);
        CHECK_FD_COUNT(before + (int)n);
        for (uint32_t i = 0; i < n; i++) {
            CHECK(got[i] != sent[i]);
            CHECK(same_file(got[i], sent[i]));
            CHECK(is_cloexec(got[i]));
        }
        close_fds(got, n);
        close_fds(sent, n);
    }
    close(sv[0]);
    close(sv[1]);
}

TEST(fds_msg_send_refuses_254_descriptors_and_null_array) {
    int sv[2];
    make_pair(sv);
    int d = distinct_fd();
    int fds[AFDT_MAX_FDS + 1];
    for (int i = 0; i < AFDT_MAX_FDS + 1; i++)
        fds[i] = d;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 0, fds, AFDT_MAX_FDS + 1, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);

    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 0, NULL, 2, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);

    /* Nothing went out. */
    CHECK(nothing_to_read(sv[1]));
    close(d);
    close(sv[0]);
    close(sv[1]);
}

TEST(fds_msg_over_capacity_fails_emsgsize_closes_all_and_stays_in_step) {
    int sv[2];
    make_pair(sv);
    int sent[10];
    open_distinct(sent, 10);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"ten", 3, sent, 10, &err), ==, 0);
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"next", 4, sent + 3, 1, &err), ==, 0);

    int before = fd_count();
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf), cap = 4;
    int got[4] = {-7, -7, -7, -7};
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, got, &cap, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EMSGSIZE, e);
    CHECK_INT(cap, ==, 0);
    CHECK_INT(len, <=, sizeof(buf));
    CHECK_FD_COUNT(before);

    /* The failed frame was consumed whole: the next one reads cleanly. */
    len = sizeof(buf);
    cap = 4;
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, got, &cap, &err), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(buf, "next", 4);
    CHECK_INT(cap, ==, 1);
    CHECK(same_file(got[0], sent[3]));
    close(got[0]);
    CHECK(nothing_to_read(sv[1]));
    close_fds(sent, 10);
    close(sv[0]);
    close(sv[1]);
}

TEST(fd_msg_compat_receiver_gets_first_of_five_and_the_rest_are_closed) {
    int sv[2];
    make_pair(sv);
    int sent[5];
    open_distinct(sent, 5);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"five", 4, sent, 5, &err), ==, 0);
    CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"after", 5, &err), ==, 0);

    int before = fd_count();
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(buf, "five", 4);
    CHECK(same_file(fd, sent[0]));
    CHECK(is_cloexec(fd));
    CHECK_FD_COUNT(before + 1);
    close(fd);

    len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, &err), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "after", 5);
    close_fds(sent, 5);
    close(sv[0]);
    close(sv[1]);
}

/* In a child with room for two more descriptors: a 10-descriptor frame is
 * truncated by the kernel (MSG_CTRUNC), which must read as EMFILE. */
static int recv_ten_with_room_for_two(void *arg) {
    int sock = *(int *)arg;
    limit_headroom(2);
    int before = fd_count();
    uint8_t buf[16];
    uint32_t len = sizeof(buf), cap = AFDT_MAX_FDS;
    int got[AFDT_MAX_FDS];
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fds_msg(sock, buf, &len, got, &cap, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, EMFILE, e);
    CHECK_INT(cap, ==, 0);
    CHECK_FD_COUNT(before);
    return 0;
}

TEST(fds_msg_truncated_by_descriptor_limit_is_emfile_without_leak) {
    int sv[2];
    make_pair(sv);
    int sent[10];
    open_distinct(sent, 10);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"ten", 3, sent, 10, &err), ==, 0);
    close_fds(sent, 10);
    pid_t pid = spawn(recv_ten_with_room_for_two, &sv[1]);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(sv[0]);
    close(sv[1]);
}

/* In a child with room for five more descriptors, receive a set of ten. */
static int recv_named_ten_with_room_for_five(void *arg) {
    int sock = *(int *)arg;
    limit_headroom(5);
    int before = fd_count();
    struct afdt_named_fd *set = (void *)&before; /* must be left as it was */
    uint32_t n = 77, len = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_named_fds(sock, NULL, &len, &set, &n, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, EMFILE, e);
    CHECK(set == (void *)&before);
    CHECK_INT(n, ==, 77);
    CHECK_FD_COUNT(before);
    /* "Before any arrives": it did not ask for them, so none was even sent. */
    uint32_t hdr = 0;
    CHECK_INT(recv(sock, &hdr, sizeof(hdr), MSG_PEEK | MSG_DONTWAIT), ==, -1);
    CHECK_INT(errno, ==, EAGAIN);
    return 0;
}

TEST(named_set_larger_than_headroom_fails_emfile_before_taking_descriptors) {
    int sv[2];
    make_pair(sv);
    struct afdt_named_fd *set = named_new(10);
    for (uint32_t i = 0; i < 10; i++) {
        set[i].fd = distinct_fd();
        snprintf(set[i].name, sizeof(set[i].name), "fd-%u", i);
    }
    pid_t pid = spawn(recv_named_ten_with_room_for_five, &sv[1]);
    close(sv[1]);
    /* The receiver gives up and exits without asking. */
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_named_fds(sv[0], NULL, 0, set, 10, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, 0, e);
    CHECK(strstr(err.message, "did not ask") != NULL);
    CHECK_INT(wait_exit(pid), ==, 0);
    for (uint32_t i = 0; i < 10; i++)
        close(set[i].fd);
    free(set);
    close(sv[0]);
}

/* ---------------------------------------------------------------------------
 * afdt_create_server_ex: options
 * ------------------------------------------------------------------------- */

TEST(server_ex_rejects_bad_options) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    void *h = NULL;
    errno = 0;
    CHECK_INT(afdt_create_server_ex(p, eb, NULL, &h), <, 0);
    CHECK_INT(errno, ==, EINVAL);

    struct afdt_server_options o = server_opts();
    o.size = 0;
    errno = 0;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    CHECK_INT(errno, ==, EINVAL);
    o.size = sizeof(o) - sizeof(void *);
    errno = 0;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    CHECK_INT(errno, ==, EINVAL);

    /* No error handler: nobody to call. */
    o = server_opts();
    o.error_handler = NULL;
    errno = 0;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    CHECK_INT(errno, ==, EINVAL);
    CHECK_INT(S.errors, ==, 0);

    /* A uid list without its array. */
    o = server_opts();
    o.n_allowed_uids = 2;
    errno = 0;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    int e = errno;
    CHECK_INT(S.errors, ==, 1);
    CHECK_ERR(S.err, AFDT_CREATE_SERVER, AFDT_NO_OPERATION, EINVAL, e);
    CHECK_INT(S.err_errno, ==, EINVAL);

    CHECK(h == NULL);
    CHECK(access(p, F_OK) != 0);
    event_base_free(eb);
}

TEST(server_ex_without_request_handler_reports_no_operation_einval) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    o.request_handler = NULL;
    void *h = NULL;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    int e = errno;
    CHECK_INT(S.errors, ==, 1);
    CHECK_ERR(S.err, AFDT_CREATE_SERVER, AFDT_NO_OPERATION, EINVAL, e);
    CHECK(h == NULL);
    CHECK(access(p, F_OK) != 0);
    event_base_free(eb);
}

TEST(server_ex_zero_fields_take_their_defaults) {
    mode_t old_mask = umask(027);
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    /* A caller built against a later, longer struct: the library reads what
     * it knows. */
    struct {
        struct afdt_server_options o;
        uint8_t later[64];
    } big;
    memset(&big, 0, sizeof(big));
    big.o = server_opts();
    big.o.size = sizeof(big);
    S.answer = "ok";
    void *h = serve(eb, p, &big.o);
    umask(old_mask);

    /* socket_mode 0: the umask decides. */
    struct stat st;
    CHECK_INT(stat(p, &st), ==, 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_INT(st.st_mode & 0777, ==, 0750);

    /* max_conns 0 is not "no connection", conn_timeout_ms 0 is not "no
     * time": twenty silent clients stay connected while a good one is
     * answered. */
    int silent[20];
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    for (int i = 0; i < 20; i++)
        CHECK((silent[i] = afdt_connect(p, &err)) >= 0);
    ask_async_ex(eb, p, "hi");
    check_answer("ok", NULL, 0);
    run_loop(eb, 300);
    CHECK_INT(S.errors, ==, 0);
    for (int i = 0; i < 20; i++)
        CHECK(nothing_to_read(silent[i]));
    close_fds(silent, 20);
    stop(eb, h);
}

/* ---------------------------------------------------------------------------
 * afdt_create_server_ex: who is asking, and what it gets
 * ------------------------------------------------------------------------- */

#define PEER_UID 23456u
#define PEER_GID 12345u

/* A client that becomes another user (when it can) before it asks. */
static int ask_as_other_user(void *arg) {
    if (geteuid() == 0) {
        CHECK_INT(setgid(PEER_GID), ==, 0);
        CHECK_INT(setuid(PEER_UID), ==, 0);
    }
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = AFDT_MAX_FDS;
    int fds[AFDT_MAX_FDS];
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(arg, (const uint8_t *)"who", 3, resp, &len, fds, &nfds, NULL,
                                  NULL, &tv, &err),
              ==, 0);
    CHECK_INT(len, ==, 2);
    CHECK_MEM(resp, "ok", 2);
    CHECK_INT(nfds, ==, 0);
    return 0;
}

TEST(server_ex_request_handler_sees_the_peer_credentials) {
    struct event_base *eb = event_base_new();
    /* Abstract: a client that changed its uid needs no access to our
     * private directory. */
    char name[64];
    snprintf(name, sizeof(name), "@afdt-test-ext-%d-peer", (int)getpid());
    struct afdt_server_options o = server_opts();
    S.answer = "ok";
    void *h = serve(eb, name, &o);
    uid_t uid = geteuid() == 0 ? PEER_UID : getuid();
    gid_t gid = geteuid() == 0 ? PEER_GID : getgid();
    pid_t pid = spawn(ask_as_other_user, name);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK_INT(S.requests, ==, 1);
    CHECK_INT(S.req_len, ==, 3);
    CHECK_MEM(S.req, "who", 3);
    CHECK_INT(S.peer.pid, ==, pid);
    CHECK_INT(S.peer.uid, ==, uid);
    CHECK_INT(S.peer.gid, ==, gid);
    CHECK_INT(S.posts, ==, 1);
    stop(eb, h);
}

static int hundred[100];

static int ask_for_hundred_ex(void *arg) {
    int before = fd_count();
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = AFDT_MAX_FDS, nnamed = 99;
    int fds[AFDT_MAX_FDS];
    struct afdt_named_fd *named = (void *)&before;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(arg, (const uint8_t *)"many", 4, resp, &len, fds, &nfds, &named,
                                  &nnamed, &tv, &err),
              ==, 0);
    CHECK_INT(len, ==, 7);
    CHECK_MEM(resp, "hundred", 7);
    CHECK_INT(nfds, ==, 100);
    CHECK(named == NULL);
    CHECK_INT(nnamed, ==, 0);
    CHECK_FD_COUNT(before + 100);
    for (int i = 0; i < 100; i++) {
        CHECK(same_file(fds[i], hundred[i]));
        CHECK(is_cloexec(fds[i]));
    }
    close_fds(fds, 100);
    return 0;
}

/* A server answering "hundred" with the 100 descriptors of @hundred, which it
 * opens (close_fds(hundred, 100) after stop). */
static void *serve_hundred(struct event_base *eb, const char *path) {
    open_distinct(hundred, 100);
    struct afdt_server_options o = server_opts();
    S.answer = "hundred";
    S.fds = hundred;
    S.nfds = 100;
    return serve(eb, path, &o);
}

TEST(server_ex_sends_100_descriptors_in_one_frame_to_sync_client_ex) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    void *h = serve_hundred(eb, p);
    pid_t pid = spawn(ask_for_hundred_ex, (void *)p);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK_INT(S.posts, ==, 1);
    CHECK_INT(S.post_nfds, ==, 100);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    close_fds(hundred, 100);
}

TEST(server_ex_sends_100_descriptors_in_one_frame_to_async_client_ex) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    void *h = serve_hundred(eb, p);
    ask_async_ex(eb, p, "many");
    check_answer("hundred", hundred, 100);
    CHECK(C.named == NULL);
    CHECK_INT(C.nnamed, ==, 0);
    close_fds(C.fds, C.nfds);
    CHECK_INT(S.posts, ==, 1);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    close_fds(hundred, 100);
}

static int ask_compat_for_many(void *arg) {
    int before = fd_count();
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp);
    int fd = -7;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(arg, (const uint8_t *)"one?", 4, resp, &len, &fd, &tv, &err), ==, 0);
    CHECK_INT(len, ==, 7);
    CHECK_MEM(resp, "hundred", 7);
    CHECK(same_file(fd, hundred[0]));
    CHECK(is_cloexec(fd));
    CHECK_FD_COUNT(before + 1);
    close(fd);
    return 0;
}

TEST(compat_clients_get_the_first_of_many_descriptors_and_leak_nothing) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    void *h = serve_hundred(eb, p);

    pid_t pid = spawn(ask_compat_for_many, (void *)p);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);

    int before = fd_count();
    ask_async(eb, p, "one?");
    CHECK_INT(C.responses, ==, 1);
    CHECK_INT(C.len, ==, 7);
    CHECK(same_file(C.fd, hundred[0]));
    CHECK(is_cloexec(C.fd));
    run_loop(eb, 50); /* let the server finish its side */
    CHECK_FD_COUNT(before + 1);
    close(C.fd);
    CHECK_INT(S.posts, ==, 2);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    close_fds(hundred, 100);
}

/* Expect @C to hold a refusal, and the server to have reported it. */
static void check_refused(void) {
    CHECK_INT(C.responses, ==, 1);
    CHECK_INT(C.len, ==, strlen(AFDT_REFUSED_RESPONSE));
    CHECK_MEM(C.content, AFDT_REFUSED_RESPONSE, C.len);
    CHECK_INT(C.nfds, ==, 0);
    CHECK(C.named == NULL);
    CHECK_INT(S.requests, ==, 0);
    CHECK_INT(S.posts, ==, 0);
    CHECK_INT(S.errors, ==, 1);
    CHECK_ERR(S.err, AFDT_HANDLE_REQUEST, AFDT_NO_OPERATION, EACCES, S.err_errno);
}

TEST(server_ex_refuses_a_uid_not_on_the_allow_list) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    int d = distinct_fd();
    uint32_t uids[2] = {getuid() + 1, getuid() + 2};
    struct afdt_server_options o = server_opts();
    o.n_allowed_uids = 2;
    o.allowed_uids = uids;
    S.answer = "secret";
    S.fds = &d;
    S.nfds = 1;
    void *h = serve(eb, p, &o);
    uids[1] = getuid(); /* the server keeps its own copy */
    int before = fd_count();
    ask_async_ex(eb, p, "please");
    check_refused();
    CHECK_INT(fd_count(), <=, before);
    stop(eb, h);
    close(d);
}

TEST(server_ex_refuses_when_authorize_says_no) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    int d = distinct_fd();
    struct afdt_server_options o = server_opts();
    o.authorize = srv_authorize;
    S.allow = 0;
    S.answer = "secret";
    S.fds = &d;
    S.nfds = 1;
    void *h = serve(eb, p, &o);
    ask_async_ex(eb, p, "please");
    check_refused();
    CHECK_INT(S.authorizes, ==, 1);
    CHECK_INT(S.auth_peer.pid, ==, getpid());
    CHECK_INT(S.auth_peer.uid, ==, geteuid());
    CHECK_INT(S.auth_peer.gid, ==, getegid());
    stop(eb, h);
    close(d);
}

TEST(server_ex_answers_when_allow_list_and_authorize_let_in) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    int d = distinct_fd();
    uint32_t uids[2] = {getuid() + 1, getuid()};
    struct afdt_server_options o = server_opts();
    o.n_allowed_uids = 2;
    o.allowed_uids = uids;
    o.authorize = srv_authorize;
    S.allow = 1;
    S.answer = "secret";
    S.fds = &d;
    S.nfds = 1;
    void *h = serve(eb, p, &o);
    ask_async_ex(eb, p, "please");
    check_answer("secret", &d, 1);
    close_fds(C.fds, C.nfds);
    CHECK_INT(S.authorizes, ==, 1);
    CHECK_INT(S.requests, ==, 1);
    CHECK_INT(S.posts, ==, 1);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    close(d);
}

TEST(server_ex_sets_the_socket_file_mode) {
    mode_t old_mask = umask(077);
    static const uint32_t modes[] = {0600, 0666};
    for (int i = 0; i < 2; i++) {
        struct event_base *eb = event_base_new();
        const char *p = tmp_path("s");
        struct afdt_server_options o = server_opts();
        o.socket_mode = modes[i];
        S.answer = "ok";
        void *h = serve(eb, p, &o);
        struct stat st;
        CHECK_INT(stat(p, &st), ==, 0);
        CHECK(S_ISSOCK(st.st_mode));
        CHECK_INT(st.st_mode & 0777, ==, modes[i]);
        ask_async_ex(eb, p, "hi");
        check_answer("ok", NULL, 0);
        stop(eb, h);
    }
    umask(old_mask);
}

TEST(server_ex_drops_a_silent_client_after_conn_timeout_ms) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    o.conn_timeout_ms = 200;
    void *h = serve(eb, p, &o);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int64_t t0 = now_ms();
    int silent = afdt_connect(p, &err);
    CHECK(silent >= 0);
    CHECK(run_until(eb, &S.errors, 1, 5000));
    int64_t elapsed = now_ms() - t0;
    CHECK_ERR(S.err, AFDT_HANDLE_REQUEST, AFDT_TIMEOUT, ETIMEDOUT, S.err_errno);
    CHECK_INT(elapsed, >=, 180);
    CHECK_INT(elapsed, <, 5000);
    CHECK(peer_closed(silent));
    CHECK_INT(S.requests, ==, 0);
    close(silent);
    stop(eb, h);
}

TEST(server_ex_connection_cap_drops_the_oldest_silent_client_for_a_good_one) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    o.max_conns = 4;
    S.answer = "welcome";
    void *h = serve(eb, p, &o);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int silent[4];
    for (int i = 0; i < 4; i++)
        CHECK((silent[i] = afdt_connect(p, &err)) >= 0);
    run_loop(eb, 50); /* the server takes all four */
    CHECK_INT(S.errors, ==, 0);
    ask_async_ex(eb, p, "hello");
    check_answer("welcome", NULL, 0);
    CHECK_INT(S.requests, ==, 1);
    CHECK_INT(S.errors, ==, 1);
    CHECK(peer_closed(silent[0]));
    for (int i = 1; i < 4; i++)
        CHECK(nothing_to_read(silent[i]));
    close_fds(silent, 4);
    stop(eb, h);
}

TEST(server_ex_request_handler_failing_closes_without_answer) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    S.ret = -1;
    void *h = serve(eb, p, &o);
    ask_async_ex(eb, p, "hello");
    CHECK_INT(C.errors, ==, 1);
    CHECK_INT(C.err.phase, ==, AFDT_HANDLE_RESPONSE);
    CHECK_STR(afdt_operation_str(C.err.operation), "AFDT_RECVMSG");
    CHECK_INT(S.requests, ==, 1);
    CHECK_INT(S.posts, ==, 0);
    stop(eb, h);
}

static int ask_for_hundred_with_room_for_ten(void *arg) {
    int before = fd_count();
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = 10;
    int fds[10];
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(arg, (const uint8_t *)"many", 4, resp, &len, fds, &nfds, NULL,
                                  NULL, &tv, &err),
              <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EMSGSIZE, e);
    CHECK_INT(len, <=, sizeof(resp));
    CHECK_FD_COUNT(before);
    return 0;
}

TEST(sync_client_ex_with_too_little_room_fails_emsgsize_without_leak) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    void *h = serve_hundred(eb, p);
    pid_t pid = spawn(ask_for_hundred_with_room_for_ten, (void *)p);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    stop(eb, h);
    close_fds(hundred, 100);
}

TEST(server_ex_reports_a_reply_with_more_than_253_descriptors) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    int d = distinct_fd();
    struct afdt_server_options o = server_opts();
    S.answer = "too many";
    S.fds = &d;
    S.nfds = 1;
    S.bogus_nfds = AFDT_MAX_FDS + 1;
    void *h = serve(eb, p, &o);
    int before = fd_count();
    ask_async_ex(eb, p, "hi");
    CHECK_INT(C.errors, ==, 1);
    CHECK_INT(S.errors, ==, 1);
    CHECK_INT(S.err.phase, ==, AFDT_HANDLE_REQUEST);
    CHECK_INT(S.posts, ==, 0);
    CHECK_INT(fd_count(), <=, before);
    stop(eb, h);
    close(d);
}

/* ---------------------------------------------------------------------------
 * Socket files: stale ones, live ones, and who removes them
 * ------------------------------------------------------------------------- */

/* A socket file nobody listens on, as a crashed server leaves it. */
static void make_stale(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    CHECK(s >= 0);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    CHECK_INT(bind(s, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    CHECK_INT(listen(s, 1), ==, 0);
    close(s);
    struct stat st;
    CHECK_INT(stat(path, &st), ==, 0);
    CHECK(S_ISSOCK(st.st_mode));
}

TEST(replace_stale_takes_over_a_stale_socket_file) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    make_stale(p);
    struct afdt_server_options o = server_opts();
    o.flags = AFDT_SERVER_REPLACE_STALE;
    S.answer = "fresh";
    void *h = serve(eb, p, &o);
    ask_async_ex(eb, p, "hi");
    check_answer("fresh", NULL, 0);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    CHECK(access(p, F_OK) != 0);
}

TEST(stale_socket_file_without_the_flag_is_eaddrinuse) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    make_stale(p);
    struct afdt_server_options o = server_opts();
    void *h = NULL;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    int e = errno;
    CHECK_ERR(S.err, AFDT_CREATE_SERVER, AFDT_BIND, EADDRINUSE, e);
    CHECK(h == NULL);
    CHECK(access(p, F_OK) == 0); /* not ours to remove */
    event_base_free(eb);
}

TEST(replace_stale_never_removes_a_file_that_is_not_a_socket) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    int f = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(f >= 0);
    CHECK_INT(write(f, "data", 4), ==, 4);
    close(f);
    struct afdt_server_options o = server_opts();
    o.flags = AFDT_SERVER_REPLACE_STALE;
    void *h = NULL;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h), <, 0);
    int e = errno;
    CHECK_ERR(S.err, AFDT_CREATE_SERVER, AFDT_BIND, EADDRINUSE, e);
    struct stat st;
    CHECK_INT(stat(p, &st), ==, 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK_INT(st.st_size, ==, 4);
    event_base_free(eb);
}

TEST(replace_stale_leaves_a_live_servers_file_alone) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    S.answer = "first";
    void *h = serve(eb, p, &o);
    struct stat before, after;
    CHECK_INT(stat(p, &before), ==, 0);

    o.flags = AFDT_SERVER_REPLACE_STALE;
    void *h2 = NULL;
    CHECK_INT(afdt_create_server_ex(p, eb, &o, &h2), <, 0);
    int e = errno;
    CHECK_ERR(S.err, AFDT_CREATE_SERVER, AFDT_BIND, EADDRINUSE, e);
    CHECK(h2 == NULL);
    CHECK_INT(stat(p, &after), ==, 0);
    CHECK_INT(after.st_ino, ==, before.st_ino);

    ask_async_ex(eb, p, "hi");
    check_answer("first", NULL, 0);
    stop(eb, h);
}

struct racer {
    const char *path;
    int start[2];  /* the racers start when the parent closes the write end */
    int result[2]; /* each writes 'W' won, 'L' lost with EADDRINUSE, 'E' other */
    int hold[2];   /* the winner serves until the parent closes the write end */
};

static int race_to_create(void *arg) {
    struct racer *r = arg;
    char c;
    close(r->start[1]); /* ours would keep the pipe from ever reading as closed */
    close(r->hold[1]);
    CHECK_INT(read(r->start[0], &c, 1), ==, 0);
    struct event_base *eb = event_base_new();
    struct afdt_server_options o = server_opts();
    o.flags = AFDT_SERVER_REPLACE_STALE;
    void *h = NULL;
    int ret = afdt_create_server_ex(r->path, eb, &o, &h);
    int e = errno;
    c = ret >= 0 ? 'W' : e == EADDRINUSE ? 'L' : 'E';
    CHECK_INT(write(r->result[1], &c, 1), ==, 1);
    CHECK_INT(read(r->hold[0], &c, 1), ==, 0);
    if (ret >= 0)
        afdt_close_server(h);
    event_base_free(eb);
    return 0;
}

TEST(replace_stale_race_between_two_processes_has_exactly_one_winner) {
    for (int round = 0; round < 10; round++) {
        const char *p = tmp_path("race");
        make_stale(p);
        struct racer r = {.path = p};
        CHECK_INT(pipe2(r.start, O_CLOEXEC), ==, 0);
        CHECK_INT(pipe2(r.result, O_CLOEXEC), ==, 0);
        CHECK_INT(pipe2(r.hold, O_CLOEXEC), ==, 0);
        pid_t a = spawn(race_to_create, &r);
        pid_t b = spawn(race_to_create, &r);
        close(r.start[0]);
        close(r.start[1]); /* go */
        char got[2];
        for (int i = 0; i < 2; i++)
            CHECK_INT(read(r.result[0], &got[i], 1), ==, 1);
        CHECK((got[0] == 'W' && got[1] == 'L') || (got[0] == 'L' && got[1] == 'W'));
        close(r.hold[1]); /* both may go now */
        CHECK_INT(wait_exit(a), ==, 0);
        CHECK_INT(wait_exit(b), ==, 0);
        close(r.hold[0]);
        close(r.result[0]);
        close(r.result[1]);
        CHECK(access(p, F_OK) != 0); /* the winner removed its file */
    }
}

TEST(close_server_removes_its_socket_file) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    void *h = serve(eb, p, &o);
    CHECK(access(p, F_OK) == 0);
    CHECK_INT(afdt_close_server(h), ==, 0);
    CHECK(access(p, F_OK) != 0);
    CHECK_INT(errno, ==, ENOENT);
    drain(eb);
    event_base_free(eb);
}

TEST(close_server_with_keep_file_leaves_the_socket_file) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    o.flags = AFDT_SERVER_KEEP_FILE;
    void *h = serve(eb, p, &o);
    CHECK_INT(afdt_close_server(h), ==, 0);
    struct stat st;
    CHECK_INT(stat(p, &st), ==, 0);
    CHECK(S_ISSOCK(st.st_mode));
    drain(eb);
    event_base_free(eb);
}

TEST(close_server_leaves_a_replacement_socket_file_alone) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    S.answer = "old";
    void *old = serve(eb, p, &o);
    CHECK_INT(unlink(p), ==, 0);
    S.answer = "new";
    void *h = serve(eb, p, &o);
    struct stat st;
    CHECK_INT(stat(p, &st), ==, 0);

    CHECK_INT(afdt_close_server(old), ==, 0);
    struct stat now;
    CHECK_INT(stat(p, &now), ==, 0);
    CHECK_INT(now.st_ino, ==, st.st_ino);
    ask_async_ex(eb, p, "hi");
    check_answer("new", NULL, 0);

    CHECK_INT(afdt_close_server(h), ==, 0);
    CHECK(access(p, F_OK) != 0);
    drain(eb);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * Named sets over a socket pair
 * ------------------------------------------------------------------------- */

struct send_named {
    int sock;
    const struct afdt_named_fd *set;
    uint32_t n;
    const char *content;
};

static int send_named_child(void *arg) {
    struct send_named *a = arg;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    const char *c = a->content ? a->content : "";
    CHECK_INT(
        afdt_send_named_fds(a->sock, (const uint8_t *)c, (uint32_t)strlen(c), a->set, a->n, &err),
        ==, 0);
    return 0;
}

TEST(named_set_round_trips_0_1_and_300_descriptors) {
    static const uint32_t counts[] = {0, 1, 300};
    for (size_t t = 0; t < sizeof(counts) / sizeof(counts[0]); t++) {
        uint32_t n = counts[t];
        struct afdt_named_fd *set = named_new(n);
        for (uint32_t i = 0; i < n; i++) {
            set[i].fd = distinct_fd();
            /* Unique names of every length from 8 to 255, of every printable
             * byte but ':'. */
            size_t len = 8 + i % (AFDT_NAME_MAX - 7);
            snprintf(set[i].name, sizeof(set[i].name), "%07u.", i);
            for (size_t k = 8; k < len; k++) {
                char ch = (char)(0x20 + (i + k * 7) % 95);
                set[i].name[k] = ch == ':' ? '_' : ch;
            }
            set[i].name[len] = '\0';
        }
        int sv[2];
        make_pair(sv);
        struct send_named a = {sv[0], set, n, "set content"};
        pid_t pid = spawn(send_named_child, &a);
        close(sv[0]);

        uint8_t content[64];
        uint32_t len = sizeof(content), got_n = 0;
        struct afdt_named_fd *got = NULL;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        int before = fd_count();
        CHECK_INT(afdt_recv_named_fds(sv[1], content, &len, &got, &got_n, &err), ==, 0);
        CHECK_INT(wait_exit(pid), ==, 0);
        CHECK_INT(len, ==, 11);
        CHECK_MEM(content, "set content", 11);
        CHECK_INT(got_n, ==, n);
        CHECK(got != NULL || n == 0);
        CHECK_FD_COUNT(before + (int)n);
        for (uint32_t i = 0; i < n; i++) {
            CHECK_STR(got[i].name, set[i].name);
            CHECK(same_file(got[i].fd, set[i].fd));
            CHECK(is_cloexec(got[i].fd));
        }
        if (n > 0) {
            CHECK_INT(afdt_named_fds_find(got, n, set[n / 2].name), ==, got[n / 2].fd);
            CHECK_INT(afdt_named_fds_find(got, n, set[n - 1].name), ==, got[n - 1].fd);
        }
        CHECK_INT(afdt_named_fds_find(got, n, "no such name"), ==, -1);
        CHECK_INT(afdt_named_fds_find(NULL, 0, "x"), ==, -1);
        afdt_named_fds_free(got, n, 1);
        CHECK_FD_COUNT(before);
        for (uint32_t i = 0; i < n; i++)
            close(set[i].fd);
        free(set);
        close(sv[1]);
    }
    afdt_named_fds_free(NULL, 0, 1);
}

TEST(named_fds_free_without_closing_leaves_descriptors_open) {
    int sv[2];
    make_pair(sv);
    struct afdt_named_fd one = {distinct_fd(), "only"};
    struct send_named a = {sv[0], &one, 1, NULL};
    pid_t pid = spawn(send_named_child, &a);
    close(sv[0]);
    uint32_t len = 0, n = 0;
    struct afdt_named_fd *got = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_named_fds(sv[1], NULL, &len, &got, &n, &err), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK_INT(n, ==, 1);
    CHECK_INT(len, ==, 0);
    int fd = got[0].fd;
    afdt_named_fds_free(got, n, 0);
    CHECK(same_file(fd, one.fd));
    close(fd);
    close(one.fd);
    close(sv[1]);
}

static int send_10000_tagged(void *arg) {
    int sock = *(int *)arg;
    struct afdt_named_fd *set = named_new(10000);
    for (uint32_t i = 0; i < 10000; i++) {
        snprintf(set[i].name, sizeof(set[i].name), "svc-%05u", i);
        set[i].fd = tagged_fd(set[i].name);
    }
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_named_fds(sock, NULL, 0, set, 10000, &err), ==, 0);
    afdt_named_fds_free(set, 10000, 1); /* sent: the copies are the receiver's */
    return 0;
}

TEST(named_set_of_10000_descriptors_round_trips) {
    need_descriptors(10000);
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(send_10000_tagged, &sv[0]);
    close(sv[0]);
    uint32_t len = 0, n = 0;
    struct afdt_named_fd *got = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int before = fd_count();
    CHECK_INT(afdt_recv_named_fds(sv[1], NULL, &len, &got, &n, &err), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK_INT(n, ==, 10000);
    CHECK_FD_COUNT(before + 10000);
    for (uint32_t i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof(want), "svc-%05u", i);
        CHECK_STR(got[i].name, want);
        check_tag(got[i].fd, want);
        CHECK(is_cloexec(got[i].fd));
    }
    CHECK(afdt_named_fds_find(got, n, "svc-09999") == got[9999].fd);
    afdt_named_fds_free(got, n, 1);
    CHECK_FD_COUNT(before);
    close(sv[1]);
}

/* The receiver's side of named-set protocol version 2, by hand: acknowledge @count
 * descriptors; take the offer (returning the count it announces) and ask for the set. */
static void raw_ack(int s, uint32_t count) {
    uint8_t ack[12];
    memcpy(ack, "AFDTACK2", 8);
    memcpy(ack + 8, &count, 4);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(s, ack, sizeof(ack), &err), ==, 0);
}

static uint32_t raw_take_offer(int s) {
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf), nfds = 0, count;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fds_msg(s, buf, &len, NULL, &nfds, &err), ==, 0);
    CHECK_INT(len, >=, 14);
    CHECK_MEM(buf, "AFDTNAMED2", 10);
    memcpy(&count, buf + 10, 4);
    raw_ack(s, 0);
    return count;
}

/* A receiver that takes the whole set by hand and acknowledges a wrong count at the end. */
static int ack_wrong_count(void *arg) {
    int *sv = arg;
    int s = sv[1];
    close(sv[0]); /* so that the sender closing it reads as end of file */
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len, nfds, count = raw_take_offer(s), got = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    while (got < count) {
        int fds[AFDT_MAX_FDS];
        len = sizeof(buf);
        nfds = AFDT_MAX_FDS;
        CHECK_INT(afdt_recv_fds_msg(s, buf, &len, fds, &nfds, &err), ==, 0);
        close_fds(fds, nfds);
        got += nfds;
        raw_ack(s, got < count ? got : got + 1);
    }
    char c;
    CHECK_INT(recv(s, &c, 1, 0), ==, 0);
    return 0;
}

TEST(named_set_send_rejects_a_wrong_acknowledgement) {
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(ack_wrong_count, sv);
    close(sv[1]);
    struct afdt_named_fd set[3];
    for (uint32_t i = 0; i < 3; i++) {
        set[i].fd = distinct_fd();
        snprintf(set[i].name, sizeof(set[i].name), "n%u", i);
    }
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_named_fds(sv[0], NULL, 0, set, 3, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    close(sv[0]);
    CHECK_INT(wait_exit(pid), ==, 0);
    for (uint32_t i = 0; i < 3; i++) /* still ours */
        CHECK_INT(close(set[i].fd), ==, 0);
}

TEST(named_set_send_rejects_bad_names_and_sends_nothing) {
    int sv[2];
    make_pair(sv);
    int d = distinct_fd();
    struct afdt_named_fd set[2] = {{d, "good"}, {d, ""}};
    char long_name[AFDT_NAME_MAX + 1];
    memset(long_name, 'a', sizeof(long_name));
    const char *bad[] = {"", "a:b", "a\nb", "tab\there", "del\x7f", "caf\xc3\xa9"};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) + 1; i++) {
        if (i < sizeof(bad) / sizeof(bad[0]))
            snprintf(set[1].name, sizeof(set[1].name), "%s", bad[i]);
        else
            memcpy(set[1].name, long_name, sizeof(set[1].name)); /* 256 bytes, no NUL */
        err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_send_named_fds(sv[0], NULL, 0, set, 2, &err), <, 0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
        err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_send_named_fds(sv[0], NULL, 0, set + 1, 1, &err), <, 0);
        e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    }
    /* A 255-byte name is good: here the negative descriptor is what fails. */
    memset(set[1].name, 'a', AFDT_NAME_MAX);
    set[1].name[AFDT_NAME_MAX] = '\0';
    set[1].fd = -1;
    CHECK_INT(afdt_send_named_fds(sv[0], NULL, 0, set, 2, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    CHECK_INT(afdt_send_named_fds(sv[0], NULL, 0, NULL, 2, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    uint8_t content[AFDT_MSGLEN] = {0};
    CHECK_INT(afdt_send_named_fds(sv[0], content, AFDT_MSGLEN - 13, set, 1, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    CHECK(nothing_to_read(sv[1]));
    close(d);
    close(sv[0]);
    close(sv[1]);
}

/* Frames of the AFDTNAMED1 convention, built by hand. */
static void send_named_header(int sock, uint32_t count, const char *content, int fd) {
    uint8_t buf[AFDT_MSGLEN];
    memcpy(buf, "AFDTNAMED1", 10);
    memcpy(buf + 10, &count, 4);
    size_t clen = strlen(content);
    memcpy(buf + 14, content, clen);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sock, buf, (uint32_t)(14 + clen), &fd, fd >= 0, &err), ==, 0);
}

/* A data frame: @names is a space-separated list of names, where "-" stands
 * for an empty name (a zero length byte). */
static void send_named_data(int sock, const char *names, const int *fds, uint32_t nfds) {
    uint8_t buf[AFDT_MSGLEN];
    uint32_t used = 0;
    char copy[AFDT_MSGLEN];
    snprintf(copy, sizeof(copy), "%s", names);
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        size_t len = strcmp(tok, "-") == 0 ? 0 : strlen(tok);
        buf[used++] = (uint8_t)len;
        memcpy(buf + used, tok, len);
        used += (uint32_t)len;
    }
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sock, buf, used, fds, nfds, &err), ==, 0);
}

/* Receive a named set from @sock and expect it to fail with @op and @eno,
 * leaving the caller's outputs and descriptors as they were. */
static void expect_named_failure(int sock, uint32_t cap, enum afdt_operation op, int eno) {
    int before = fd_count();
    struct afdt_named_fd *set = (void *)&before;
    uint32_t n = 77, len = cap;
    uint8_t content[AFDT_MSGLEN];
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_named_fds(sock, content, &len, &set, &n, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, op, eno, e);
    CHECK(set == (void *)&before);
    CHECK_INT(n, ==, 77);
    CHECK_FD_COUNT(before);
}

TEST(named_set_receiver_rejects_garbage_and_leaks_nothing) {
    int d[4];
    open_distinct(d, 4);
    for (int c = 0; c < 11; c++) {
        int sv[2];
        make_pair(sv);
        uint32_t cap = AFDT_MSGLEN;
        enum afdt_operation op = AFDT_FORMAT;
        int eno = 0;
        switch (c) {
        case 0: /* not a named set at all */
            CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"hello", 5, d, 2, NULL), ==, 0);
            break;
        case 1: /* a header that carries a descriptor */
            send_named_header(sv[0], 1, "", d[0]);
            send_named_data(sv[0], "a", d, 1);
            break;
        case 2: /* fewer descriptors than names */
            send_named_header(sv[0], 3, "", -1);
            send_named_data(sv[0], "a b c", d, 2);
            break;
        case 3: /* more descriptors than names */
            send_named_header(sv[0], 3, "", -1);
            send_named_data(sv[0], "a b", d, 3);
            break;
        case 4: /* a data frame without descriptors */
            send_named_header(sv[0], 2, "", -1);
            send_named_data(sv[0], "a b", d, 0);
            break;
        case 5: /* more descriptors than announced */
            send_named_header(sv[0], 2, "", -1);
            send_named_data(sv[0], "a b c", d, 3);
            break;
        case 6: /* a bad name, after a good frame */
            send_named_header(sv[0], 3, "", -1);
            send_named_data(sv[0], "a", d, 1);
            send_named_data(sv[0], "b c:d", d + 1, 2);
            break;
        case 7: /* an empty name */
            send_named_header(sv[0], 2, "", -1);
            send_named_data(sv[0], "a -", d, 2);
            break;
        case 8: { /* a frame length past AFDT_MSGLEN */
            send_named_header(sv[0], 2, "", -1);
            send_named_data(sv[0], "a", d, 1);
            uint32_t huge = 0x10000;
            CHECK_INT(send(sv[0], &huge, 4, MSG_NOSIGNAL), ==, 4);
            break;
        }
        case 9: /* end of file in the middle of the set */
            send_named_header(sv[0], 4, "", -1);
            send_named_data(sv[0], "a b", d, 2);
            op = AFDT_RECVMSG;
            break;
        case 10: /* content longer than the caller's buffer */
            send_named_header(sv[0], 1, "0123456789", -1);
            send_named_data(sv[0], "a", d, 1);
            cap = 4;
            break;
        }
        close(sv[0]); /* a receiver waiting for more sees end of file */
        fprintf(stderr, "garbage case %d\n", c);
        expect_named_failure(sv[1], cap, op, eno);
        close(sv[1]);
    }
    close_fds(d, 4);
}

/* A server that starts a named set, then stalls: for each of @arg's two
 * connections, a header announcing five and a frame of two. */
static int stalling_named_server(void *arg) {
    int lfd = *(int *)arg;
    for (int i = 0; i < 2; i++) {
        int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        CHECK(s >= 0);
        uint8_t buf[AFDT_MSGLEN];
        uint32_t len = sizeof(buf);
        CHECK_INT(afdt_recv_plain_msg(s, buf, &len, NULL), ==, 0);
        send_named_header(s, 5, "", -1);
        int fds[2];
        open_distinct(fds, 2);
        send_named_data(s, "a b", fds, 2);
        close_fds(fds, 2);
        char c;
        CHECK_INT(recv(s, &c, 1, 0), ==, 0); /* until the client gives up */
        close(s);
    }
    return 0;
}

TEST(extended_clients_time_out_inside_a_named_set_without_leak) {
    const char *p = tmp_path("s");
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int lfd = afdt_listen(p, &err);
    CHECK(lfd >= 0);
    pid_t pid = spawn(stalling_named_server, &lfd);

    int before = fd_count();
    uint8_t resp[16];
    uint32_t len = sizeof(resp), nfds = AFDT_MAX_FDS, nnamed = 77;
    int fds[AFDT_MAX_FDS];
    struct afdt_named_fd *named = (void *)&before;
    struct timeval tv = {0, 300 * 1000};
    CHECK_INT(afdt_sync_client_ex(p, (const uint8_t *)"all", 3, resp, &len, fds, &nfds, &named,
                                  &nnamed, &tv, &err),
              <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_TIMEOUT, ETIMEDOUT, e);
    CHECK(named == (void *)&before);
    CHECK_FD_COUNT(before);

    struct event_base *eb = event_base_new();
    memset(&C, 0, sizeof(C));
    CHECK_INT(afdt_create_client_ex(p, eb, (const uint8_t *)"all", 3, cli_response_ex, cli_error,
                                    &tv, eb),
              ==, 0);
    CHECK(run_until(eb, &C.calls, 1, 5000));
    CHECK_INT(C.errors, ==, 1);
    CHECK_ERR(C.err, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT, C.err_errno);
    drain(eb);
    event_base_free(eb);
    CHECK_FD_COUNT(before);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(lfd);
    unlink(p);
}

/* ---------------------------------------------------------------------------
 * Named sets from the extended server
 * ------------------------------------------------------------------------- */

static struct afdt_named_fd *big_set;

/* The parent's copies are of no use here and would double our count. */
static void close_inherited_big_set(uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        close(big_set[i].fd);
}

static int ask_for_10000_named(void *arg) {
    close_inherited_big_set(10000);
    int before = fd_count();
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = AFDT_MAX_FDS, nnamed = 0;
    int fds[AFDT_MAX_FDS];
    struct afdt_named_fd *named = NULL;
    struct timeval tv = {8, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(arg, (const uint8_t *)"all", 3, resp, &len, fds, &nfds, &named,
                                  &nnamed, &tv, &err),
              ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(resp, "named", 5);
    CHECK_INT(nfds, ==, 0);
    CHECK_INT(nnamed, ==, 10000);
    CHECK_FD_COUNT(before + 10000);
    for (uint32_t i = 0; i < nnamed; i++) {
        CHECK_STR(named[i].name, big_set[i].name);
        check_tag(named[i].fd, big_set[i].name);
        CHECK(is_cloexec(named[i].fd));
    }
    afdt_named_fds_free(named, nnamed, 1);
    CHECK_FD_COUNT(before);
    return 0;
}

static void make_big_set(uint32_t n) {
    big_set = named_new(n);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(big_set[i].name, sizeof(big_set[i].name), "listener-%u", i);
        big_set[i].fd = tagged_fd(big_set[i].name);
    }
}

static void free_big_set(uint32_t n) {
    close_inherited_big_set(n);
    free(big_set);
    big_set = NULL;
}

/* A server with options @o answering "named" with a big set of @n
 * (free_big_set(n) after stop). */
static void *serve_big_set(struct event_base *eb, const char *path,
                           const struct afdt_server_options *o, uint32_t n) {
    make_big_set(n);
    S.answer = "named";
    S.named = big_set;
    S.nnamed = n;
    return serve(eb, path, o);
}

TEST(server_ex_named_set_of_10000_reaches_sync_client_ex_then_post_runs_once) {
    need_descriptors(10000);
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    void *h = serve_big_set(eb, p, &o, 10000);
    pid_t pid = spawn(ask_for_10000_named, (void *)p);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    run_loop(eb, 50);
    CHECK_INT(S.requests, ==, 1);
    CHECK_INT(S.posts, ==, 1);
    CHECK_INT(S.post_nnamed, ==, 10000);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    free_big_set(10000);
}

static void named_set_reaches_async_client_ex(bool busy) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    const uint32_t n = 600;
    struct afdt_named_fd *set = named_new(n);
    for (uint32_t i = 0; i < n; i++) {
        set[i].fd = distinct_fd();
        snprintf(set[i].name, sizeof(set[i].name), "conn/%u", i);
    }
    struct afdt_server_options o = server_opts();
    S.answer = "set";
    S.named = set;
    S.nnamed = n;
    void *h = serve(eb, p, &o);
    int before = fd_count();
    ask_async_ex_from(eb, p, "all", busy);
    CHECK_INT(C.responses, ==, 1);
    CHECK_INT(C.len, ==, 3);
    CHECK_MEM(C.content, "set", 3);
    CHECK_INT(C.nfds, ==, 0);
    CHECK_INT(C.nnamed, ==, n);
    CHECK(C.named != NULL);
    for (uint32_t i = 0; i < n; i++) {
        CHECK_STR(C.named[i].name, set[i].name);
        CHECK(same_file(C.named[i].fd, set[i].fd));
        CHECK(is_cloexec(C.named[i].fd));
    }
    CHECK(run_until(eb, &S.posts, 1, 3000));
    CHECK_FD_COUNT(before + (int)n);
    afdt_named_fds_free(C.named, C.nnamed, 1);
    CHECK_INT(S.errors, ==, 0);
    stop(eb, h);
    for (uint32_t i = 0; i < n; i++)
        close(set[i].fd);
    free(set);
}

TEST(server_ex_named_set_reaches_async_client_ex) {
    named_set_reaches_async_client_ex(false);
}

/* The client's first look finds the set's header frame and goes on from there. */
TEST(server_ex_named_set_reaches_async_client_ex_through_its_first_look) {
    named_set_reaches_async_client_ex(true);
}

static struct afdt_response two[2];
static int two_calls;

static void two_response(struct afdt_response *r, void *ud) {
    CHECK_INT(two_calls, <, 2);
    two[two_calls++] = *r; /* the named set is ours now; the rest is not kept */
    event_base_loopbreak(ud);
}

TEST(server_ex_serves_two_named_set_clients_at_once) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    const uint32_t n = 700;
    struct afdt_named_fd *set = named_new(n);
    for (uint32_t i = 0; i < n; i++) {
        set[i].fd = distinct_fd();
        snprintf(set[i].name, sizeof(set[i].name), "shared-%u", i);
    }
    struct afdt_server_options o = server_opts();
    S.named = set;
    S.nnamed = n;
    void *h = serve(eb, p, &o);
    struct timeval tv = {5, 0};
    for (int i = 0; i < 2; i++)
        CHECK_INT(afdt_create_client_ex(p, eb, (const uint8_t *)"all", 3, two_response, cli_error,
                                        &tv, eb),
                  ==, 0);
    CHECK(run_until(eb, &two_calls, 2, 5000));
    CHECK(run_until(eb, &S.posts, 2, 5000));
    CHECK_INT(C.errors, ==, 0);
    CHECK_INT(S.errors, ==, 0);
    for (int k = 0; k < 2; k++) {
        CHECK_INT(two[k].nnamed, ==, n);
        for (uint32_t i = 0; i < n; i++) {
            CHECK_STR(two[k].named[i].name, set[i].name);
            CHECK(same_file(two[k].named[i].fd, set[i].fd));
        }
        afdt_named_fds_free(two[k].named, two[k].nnamed, 1);
    }
    stop(eb, h);
    for (uint32_t i = 0; i < n; i++)
        close(set[i].fd);
    free(set);
}

static int ask_for_named_without_room(void *arg) {
    int before = fd_count();
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = AFDT_MAX_FDS;
    int fds[AFDT_MAX_FDS];
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(arg, (const uint8_t *)"all", 3, resp, &len, fds, &nfds, NULL,
                                  NULL, &tv, &err),
              <, 0);
    CHECK_STR(afdt_operation_str(err.operation), "AFDT_FORMAT");
    CHECK_FD_COUNT(before);
    return 0;
}

TEST(sync_client_ex_without_ret_named_fails_on_a_named_set_without_leak) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_named_fd set[3];
    for (uint32_t i = 0; i < 3; i++) {
        set[i].fd = distinct_fd();
        snprintf(set[i].name, sizeof(set[i].name), "n%u", i);
    }
    struct afdt_server_options o = server_opts();
    S.named = set;
    S.nnamed = 3;
    void *h = serve(eb, p, &o);
    pid_t pid = spawn(ask_for_named_without_room, (void *)p);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK(run_until(eb, &S.errors, 1, 3000));
    CHECK_INT(S.posts, ==, 0);
    stop(eb, h);
    for (uint32_t i = 0; i < 3; i++)
        close(set[i].fd);
}

/* A hand-written client: reads the whole set frame by frame, tells the
 * parent, and acknowledges only when the parent says so (or never). */
struct raw_client {
    const char *path;
    int ready[2];        /* the client writes one byte once everything is in */
    int go[2];           /* the parent writes one byte to acknowledge, or closes */
    uint32_t stop_after; /* data frames to read before dying; 0: all */
};

static int raw_named_client(void *arg) {
    struct raw_client *r = arg;
    if (r->go[1] >= 0)
        close(r->go[1]); /* ours would keep the parent's close from being seen */
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int s = afdt_connect(r->path, &err);
    CHECK(s >= 0);
    CHECK_INT(afdt_send_plain_msg(s, (const uint8_t *)"all", 3, &err), ==, 0);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len, nfds, count = raw_take_offer(s), got = 0, frames = 0;
    while (got < count) {
        int fds[AFDT_MAX_FDS];
        len = sizeof(buf);
        nfds = AFDT_MAX_FDS;
        CHECK_INT(afdt_recv_fds_msg(s, buf, &len, fds, &nfds, &err), ==, 0);
        CHECK_INT(nfds, >, 0);
        /* Each entry: a length byte, then the name. */
        uint32_t pos = 0;
        for (uint32_t i = 0; i < nfds; i++) {
            char want[32];
            snprintf(want, sizeof(want), "listener-%u", got + i);
            CHECK_INT(buf[pos], ==, strlen(want));
            CHECK_MEM(buf + pos + 1, want, buf[pos]);
            pos += 1u + buf[pos];
        }
        CHECK_INT(pos, ==, len);
        close_fds(fds, nfds);
        got += nfds;
        if (++frames == r->stop_after)
            return 0; /* die with the rest unread */
        if (got < count)
            raw_ack(s, got); /* so the sender goes on: all but the last */
    }
    char c = 'R';
    CHECK_INT(write(r->ready[1], &c, 1), ==, 1);
    if (read(r->go[0], &c, 1) != 1)
        return 0;
    raw_ack(s, count);
    /* The server hangs up once it has the acknowledgement. */
    len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(s, buf, &len, &err), <, 0);
    CHECK_STR(afdt_operation_str(err.operation), "AFDT_RECVMSG");
    close(s);
    return 0;
}

static int ready_count;

static void on_ready(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    char c;
    if (read(fd, &c, 1) == 1)
        ready_count++;
    event_base_loopbreak(arg);
}

TEST(server_ex_post_handler_waits_for_the_named_set_acknowledgement) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    void *h = serve_big_set(eb, p, &o, 600);
    struct raw_client r = {.path = p};
    CHECK_INT(pipe2(r.ready, O_CLOEXEC), ==, 0);
    CHECK_INT(pipe2(r.go, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(raw_named_client, &r);
    struct event *ev = event_new(eb, r.ready[0], EV_READ | EV_PERSIST, on_ready, eb);
    CHECK_INT(event_add(ev, NULL), ==, 0);

    /* Everything sent and received, nothing acknowledged: no post yet. */
    CHECK(run_until(eb, &ready_count, 1, 5000));
    run_loop(eb, 300);
    CHECK_INT(S.requests, ==, 1);
    CHECK_INT(S.posts, ==, 0);
    CHECK_INT(S.errors, ==, 0);

    char c = 'G';
    CHECK_INT(write(r.go[1], &c, 1), ==, 1);
    CHECK(run_until(eb, &S.posts, 1, 5000));
    CHECK_INT(S.post_nnamed, ==, 600);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK_INT(S.posts, ==, 1);
    CHECK_INT(S.errors, ==, 0);
    event_free(ev);
    close_fds(r.ready, 2);
    close_fds(r.go, 2);
    stop(eb, h);
    free_big_set(600);
}

TEST(server_ex_drops_a_named_set_client_that_never_acknowledges) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    o.conn_timeout_ms = 300;
    void *h = serve_big_set(eb, p, &o, 300);
    struct raw_client r = {.path = p};
    CHECK_INT(pipe2(r.ready, O_CLOEXEC), ==, 0);
    CHECK_INT(pipe2(r.go, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(raw_named_client, &r);
    struct event *ev = event_new(eb, r.ready[0], EV_READ | EV_PERSIST, on_ready, eb);
    CHECK_INT(event_add(ev, NULL), ==, 0);
    CHECK(run_until(eb, &ready_count, 1, 5000));
    CHECK(run_until(eb, &S.errors, 1, 5000));
    CHECK_ERR(S.err, AFDT_HANDLE_REQUEST, AFDT_TIMEOUT, ETIMEDOUT, S.err_errno);
    CHECK_INT(S.posts, ==, 0);
    /* The post handler still runs, with the error, so the set can be released. */
    CHECK_INT(S.failed_posts, ==, 1);
    CHECK_INT(S.post_error, ==, ETIMEDOUT);
    close(r.go[1]); /* the client gives up without acknowledging */
    r.go[1] = -1;
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK_INT(S.posts, ==, 0);
    event_free(ev);
    close_fds(r.ready, 2);
    close_fds(r.go, 2);
    stop(eb, h);
    free_big_set(300);
}

/* Read all that is there; whether the peer hung up after it. */
static bool hung_up_after_the_rest(int sock) {
    char buf[4096];
    ssize_t n;
    while ((n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        continue;
    return n == 0;
}

TEST(server_ex_connection_cap_drops_the_oldest_client_stalled_on_its_named_set) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    o.max_conns = 2;
    void *h = serve_big_set(eb, p, &o, 3);
    /* Two clients ask for the set and never acknowledge it: the server
     * waits on them, with no connection left waiting for its request. */
    int stalled[2];
    for (int i = 0; i < 2; i++) {
        CHECK((stalled[i] = afdt_connect(p, NULL)) >= 0);
        CHECK_INT(afdt_send_plain_msg(stalled[i], (const uint8_t *)"set?", 4, NULL), ==, 0);
    }
    CHECK(run_until(eb, &S.requests, 2, 5000));
    run_loop(eb, 50);
    CHECK_INT(S.errors, ==, 0);
    /* A good client still gets in, in place of the oldest stalled one. */
    S.named = NULL;
    S.nnamed = 0;
    ask_async_ex(eb, p, "hello");
    check_answer("named", NULL, 0);
    CHECK_INT(S.requests, ==, 3);
    CHECK_INT(S.errors, ==, 1);
    CHECK_ERR(S.err, AFDT_HANDLE_REQUEST, AFDT_SENDMSG, ECONNABORTED, S.err_errno);
    CHECK_INT(S.failed_posts, ==, 1); /* so the server can release that set */
    CHECK_INT(S.post_error, ==, ECONNABORTED);
    CHECK(hung_up_after_the_rest(stalled[0]));
    CHECK(!hung_up_after_the_rest(stalled[1]));
    close_fds(stalled, 2);
    stop(eb, h);
    free_big_set(3);
}

TEST(server_ex_named_receiver_dying_half_way_is_reported_without_leak) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    struct afdt_server_options o = server_opts();
    void *h = serve_big_set(eb, p, &o, 3000);
    struct raw_client r = {p, {-1, -1}, {-1, -1}, 1};
    pid_t pid = spawn(raw_named_client, &r);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK(run_until(eb, &S.errors, 1, 5000));
    CHECK_INT(S.err.phase, ==, AFDT_HANDLE_REQUEST);
    CHECK_INT(S.posts, ==, 0);
    stop(eb, h); /* returns only once the connection is gone */
    CHECK_INT(S.failed_posts, ==, 1);
    CHECK_INT(S.post_error, !=, 0);
    free_big_set(3000);
}

/* ---------------------------------------------------------------------------
 * Abstract names
 * ------------------------------------------------------------------------- */

static int ask_abstract_sync(void *arg) {
    uint8_t resp[16];
    uint32_t len = sizeof(resp), nfds = AFDT_MAX_FDS;
    int fds[AFDT_MAX_FDS], fd = -7;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(arg, (const uint8_t *)"x", 1, resp, &len, fds, &nfds, NULL, NULL,
                                  &tv, &err),
              ==, 0);
    CHECK_INT(len, ==, 8);
    CHECK_MEM(resp, "abstract", 8);
    CHECK_INT(nfds, ==, 1);
    CHECK(same_file(fds[0], hundred[0]));
    close(fds[0]);
    len = sizeof(resp);
    CHECK_INT(afdt_sync_client(arg, (const uint8_t *)"x", 1, resp, &len, &fd, &tv, &err), ==, 0);
    CHECK(same_file(fd, hundred[0]));
    close(fd);
    return 0;
}

/* Whether /proc/net/unix lists a socket bound to exactly @name ("@..."). */
static bool proc_net_unix_has(const char *name) {
    FILE *f = fopen("/proc/net/unix", "re");
    CHECK(f != NULL);
    char line[512];
    bool found = false;
    size_t n = strlen(name);
    while (!found && fgets(line, sizeof(line), f)) {
        size_t l = strcspn(line, "\n");
        found = l >= n + 1 && line[l - n - 1] == ' ' && memcmp(line + l - n, name, n) == 0;
    }
    fclose(f);
    return found;
}

TEST(abstract_names_work_for_server_ex_sync_and_async_clients) {
    struct event_base *eb = event_base_new();
    char name[64];
    snprintf(name, sizeof(name), "@afdt-test-ext-%d-abstract", (int)getpid());
    open_distinct(hundred, 1);
    struct afdt_server_options o = server_opts();
    o.flags = AFDT_SERVER_REPLACE_STALE;
    S.answer = "abstract";
    S.fds = hundred;
    S.nfds = 1;
    void *h = serve(eb, name, &o);
    /* The exact length: no trailing NULs, which /proc would show as '@'. */
    CHECK(proc_net_unix_has(name));

    ask_async_ex(eb, name, "x");
    check_answer("abstract", hundred, 1);
    close_fds(C.fds, C.nfds);
    ask_async(eb, name, "x");
    CHECK_INT(C.responses, ==, 1);
    CHECK(same_file(C.fd, hundred[0]));
    close(C.fd);
    pid_t pid = spawn(ask_abstract_sync, name);
    CHECK_INT(serve_until_exit(eb, pid), ==, 0);
    CHECK_INT(S.errors, ==, 0);
    CHECK_INT(S.posts, ==, 4);

    /* The name is taken while the server lives, and free once it closed. */
    void *h2 = NULL;
    CHECK_INT(afdt_create_server_ex(name, eb, &o, &h2), <, 0);
    CHECK_INT(errno, ==, EADDRINUSE);
    stop(eb, h);
    CHECK(!proc_net_unix_has(name));
    close(hundred[0]);
}

/* ---------------------------------------------------------------------------
 * afdt_check_socket
 * ------------------------------------------------------------------------- */

static int inet_socket(int type, struct sockaddr_in *addr) {
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    socklen_t len = sizeof(*addr);
    CHECK_INT(getsockname(fd, (struct sockaddr *)addr, &len), ==, 0);
    CHECK(addr->sin_port != 0);
    return fd;
}

static struct afdt_socket_expect expect(int type, int family, int listening, const void *addr,
                                        uint32_t addr_len) {
    struct afdt_socket_expect w;
    memset(&w, 0, sizeof(w));
    w.size = sizeof(w);
    w.type = type;
    w.family = family;
    w.listening = listening;
    w.addr = addr;
    w.addr_len = addr_len;
    return w;
}

static void check_mismatch(int fd, struct afdt_socket_expect w, int eno) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, -1);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, eno, e);
}

TEST(check_socket_accepts_a_matching_tcp_listener) {
    struct sockaddr_in a;
    int fd = inet_socket(SOCK_STREAM, &a);
    CHECK_INT(listen(fd, 8), ==, 0);
    struct afdt_socket_expect w = expect(SOCK_STREAM, AF_INET, 1, &a, sizeof(a));
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    w = expect(0, 0, 0, NULL, 0);
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    close(fd);
}

TEST(check_socket_mismatches_give_the_documented_errno) {
    struct sockaddr_in a;
    int fd = inet_socket(SOCK_STREAM, &a);
    CHECK_INT(listen(fd, 8), ==, 0);
    check_mismatch(fd, expect(SOCK_DGRAM, AF_INET, 1, &a, sizeof(a)), EPROTOTYPE);
    check_mismatch(fd, expect(SOCK_STREAM, AF_INET6, 1, &a, sizeof(a)), EAFNOSUPPORT);
    check_mismatch(fd, expect(SOCK_STREAM, AF_UNIX, 1, &a, sizeof(a)), EAFNOSUPPORT);
    check_mismatch(fd, expect(SOCK_STREAM, AF_INET, -1, &a, sizeof(a)), EINVAL);
    struct sockaddr_in other = a;
    other.sin_port = htons((uint16_t)(ntohs(a.sin_port) ^ 1));
    check_mismatch(fd, expect(SOCK_STREAM, AF_INET, 1, &other, sizeof(other)), EADDRNOTAVAIL);
    other = a;
    other.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1);
    check_mismatch(fd, expect(SOCK_STREAM, AF_INET, 1, &other, sizeof(other)), EADDRNOTAVAIL);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    check_mismatch(fd, expect(0, 0, 0, &sun, sizeof(sun)), EADDRNOTAVAIL);

    /* Bound but not listening. */
    struct sockaddr_in b;
    int idle = inet_socket(SOCK_STREAM, &b);
    check_mismatch(idle, expect(SOCK_STREAM, AF_INET, 1, &b, sizeof(b)), EINVAL);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct afdt_socket_expect w = expect(SOCK_STREAM, AF_INET, -1, &b, sizeof(b));
    CHECK_INT(afdt_check_socket(idle, &w, &err), ==, 0);
    close(idle);
    close(fd);
}

TEST(check_socket_checks_a_udp_socket) {
    struct sockaddr_in a;
    int fd = inet_socket(SOCK_DGRAM, &a);
    struct afdt_socket_expect w = expect(SOCK_DGRAM, AF_INET, -1, &a, sizeof(a));
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    check_mismatch(fd, expect(SOCK_DGRAM, AF_INET, 1, &a, sizeof(a)), EINVAL);
    check_mismatch(fd, expect(SOCK_STREAM, AF_INET, -1, &a, sizeof(a)), EPROTOTYPE);
    close(fd);
}

TEST(check_socket_checks_unix_sockets_by_path_and_abstract_name) {
    const char *p = tmp_path("chk");
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int fd = afdt_listen(p, &err);
    CHECK(fd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", p);
    uint32_t exact = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p));
    struct afdt_socket_expect w = expect(SOCK_STREAM, AF_UNIX, 1, &sun, sizeof(sun));
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    w = expect(SOCK_STREAM, AF_UNIX, 1, &sun, exact + 1);
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    w = expect(SOCK_STREAM, AF_UNIX, 1, &sun, exact);
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    struct sockaddr_un other = sun;
    other.sun_path[strlen(p) - 1] ^= 1;
    check_mismatch(fd, expect(SOCK_STREAM, AF_UNIX, 1, &other, sizeof(other)), EADDRNOTAVAIL);
    check_mismatch(fd, expect(SOCK_DGRAM, AF_UNIX, 1, &sun, sizeof(sun)), EPROTOTYPE);
    close(fd);
    unlink(p);

    char name[64];
    snprintf(name, sizeof(name), "@afdt-test-ext-%d-check", (int)getpid());
    fd = afdt_listen(name, &err);
    CHECK(fd >= 0);
    struct sockaddr_un abs = {.sun_family = AF_UNIX};
    memcpy(abs.sun_path + 1, name + 1, strlen(name) - 1);
    uint32_t abs_len = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name));
    w = expect(SOCK_STREAM, AF_UNIX, 1, &abs, abs_len);
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    /* The same name padded with NULs is another abstract address. */
    check_mismatch(fd, expect(SOCK_STREAM, AF_UNIX, 1, &abs, sizeof(abs)), EADDRNOTAVAIL);
    check_mismatch(fd, expect(SOCK_STREAM, AF_UNIX, 1, &sun, sizeof(sun)), EADDRNOTAVAIL);
    close(fd);
}

TEST(check_socket_says_a_pipe_is_not_a_socket) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    check_mismatch(p[0], expect(0, 0, 0, NULL, 0), ENOTSOCK);
    check_mismatch(p[1], expect(SOCK_STREAM, 0, 0, NULL, 0), ENOTSOCK);
    close(p[0]);
    close(p[1]);
}

TEST(check_socket_on_a_closed_descriptor_fails) {
    int fd = distinct_fd();
    close(fd);
    struct afdt_socket_expect w = expect(0, 0, 0, NULL, 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, -1);
    int e = errno;
    CHECK(e == EBADF || e == ENOTSOCK);
    CHECK_STR(afdt_operation_str(err.operation), "AFDT_NO_OPERATION");
    CHECK_INT(afdt_check_socket(-1, &w, &err), ==, -1);
    e = errno;
    CHECK(e == EBADF || e == ENOTSOCK);
}

TEST(check_socket_reads_only_the_first_size_bytes_of_the_expectation) {
    struct sockaddr_in a;
    int fd = inet_socket(SOCK_STREAM, &a);
    CHECK_INT(listen(fd, 8), ==, 0);
    /* A caller built against a version that had only @type: the fields past
     * its size are not looked at, whatever they hold. */
    struct afdt_socket_expect w = expect(SOCK_STREAM, AF_INET6, -1, &a, 3);
    w.size = (uint32_t)offsetof(struct afdt_socket_expect, family);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_check_socket(fd, &w, &err), ==, 0);
    w.type = SOCK_DGRAM;
    check_mismatch(fd, w, EPROTOTYPE);
    close(fd);
}
