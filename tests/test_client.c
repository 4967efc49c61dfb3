/* SPDX-License-Identifier: BSD-3-Clause */
/* The libevent client (afdt_create_client) against real servers and misbehaving peers. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

/* ---------------------------------------------------------------------------
 * Client side: a record of every callback.
 * ------------------------------------------------------------------------- */

static void set_flag(evutil_socket_t fd, short what, void *ud) {
    (void)fd;
    (void)what;
    *(bool *)ud = true;
}

/* Keep the loop running for @ms more, so a second callback would show. */
static void run_for_ms(struct event_base *eb, int ms) {
    bool done = false;
    struct event *t = evtimer_new(eb, set_flag, &done);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!done)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    event_free(t);
}

static const struct timeval five_s = {5, 0};

/* A pipe whose ends are descriptors with their own inode, so same_file()
 * cannot match by accident. */
static void token(int p[2]) {
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
}

static void close_token(int p[2]) {
    close(p[0]);
    close(p[1]);
}

/* ---------------------------------------------------------------------------
 * A real afdt server in this process's loop.
 * ------------------------------------------------------------------------- */

struct srv {
    const char *path;
    void *handle;
    int fd_to_send;
    const char *answer;
    int requests;
    uint8_t req[AFDT_MSGLEN];
    uint32_t req_len;
};

static int srv_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                       void *ud) {
    struct srv *s = ud;
    s->requests++;
    memcpy(s->req, req, len);
    s->req_len = len;
    *resp_len = (uint32_t)strlen(s->answer);
    memcpy(resp, s->answer, *resp_len);
    return s->fd_to_send;
}

static void srv_error(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    harness_fail(__FILE__, __LINE__, "server error: %s %s %s", afdt_phase_str(e->phase),
                 afdt_operation_str(e->operation), e->message);
}

static void srv_start(struct srv *s, struct event_base *eb, int fd_to_send, const char *answer) {
    memset(s, 0, sizeof(*s));
    s->path = tmp_path("srv");
    s->fd_to_send = fd_to_send;
    s->answer = answer;
    CHECK_INT(afdt_create_server(s->path, eb, srv_request, NULL, srv_error, &s->handle, s), ==, 0);
}

/* ---------------------------------------------------------------------------
 * Raw peers: plain sockets and hand-made frames, independent of the library.
 * ------------------------------------------------------------------------- */

static int raw_listen(const char *path, int backlog) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_INT(fd, >=, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    CHECK_INT(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    CHECK_INT(listen(fd, backlog), ==, 0);
    return fd;
}

/* A non-blocking connect: the socket, or -errno. */
static int raw_connect_nb(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK_INT(fd, >=, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
        return fd;
    int e = errno;
    close(fd);
    return -e;
}

/* Fill the backlog of a listener that never accepts; returns how many
 * connections it took. */
static int fill_backlog(const char *path, int *socks, int max) {
    for (int n = 0; n < max; n++) {
        int fd = raw_connect_nb(path);
        if (fd == -EAGAIN)
            return n;
        CHECK_INT(fd, >=, 0);
        socks[n] = fd;
    }
    harness_fail(__FILE__, __LINE__, "backlog did not fill after %d connections", max);
}

static bool read_full(int fd, void *buf, size_t n) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* Read one request frame. */
static bool raw_read_request(int c) {
    uint32_t len;
    uint8_t buf[AFDT_MSGLEN];
    return read_full(c, &len, sizeof(len)) && len <= AFDT_MSGLEN && read_full(c, buf, len);
}

/* Send @n raw bytes with @nfds descriptors in one sendmsg. */
static bool raw_send(int s, const void *bytes, size_t n, const int *fds, int nfds) {
    return raw_sendmsg(s, bytes, n, fds, (unsigned)nfds) == (ssize_t)n;
}

/* Send a well-formed frame. */
static bool raw_send_frame(int s, const char *payload, const int *fds, int nfds) {
    uint8_t frame[AFDT_FULL_MSGLEN];
    uint32_t len = (uint32_t)strlen(payload);
    memcpy(frame, &len, sizeof(len));
    memcpy(frame + sizeof(len), payload, len);
    return raw_send(s, frame, sizeof(len) + len, fds, nfds);
}

enum peer_mode {
    PEER_SILENT,        /* accept, read the request, never answer */
    PEER_CLOSE,         /* accept, read the request, hang up */
    PEER_TRUNCATED,     /* answer with a frame cut short, then hang up */
    PEER_OVERSIZED,     /* answer with a length beyond AFDT_MSGLEN and a descriptor */
    PEER_TWO_FDS,       /* answer "two" with two descriptors */
    PEER_SLOW,          /* answer "slow" with a descriptor after delay_ms */
    PEER_AFTER_BACKLOG, /* after delay_ms, accept nfill idle connections, then answer */
    PEER_DRIBBLE,       /* answer "dribble": one byte and a descriptor, the rest after delay_ms */
};

struct peer {
    enum peer_mode mode;
    int lfd;
    int tok[2];
    int delay_ms;
    int nfill;
};

static int peer_main(void *arg) {
    struct peer *p = arg;
    if (p->mode == PEER_AFTER_BACKLOG) {
        sleep_ms(p->delay_ms);
        for (int i = 0; i < p->nfill; i++)
            if (accept(p->lfd, NULL, NULL) < 0)
                return 20;
    }
    int c = accept(p->lfd, NULL, NULL);
    if (c < 0 || !raw_read_request(c))
        return 21;
    switch (p->mode) {
    case PEER_SILENT: break;
    case PEER_CLOSE: close(c); break;
    case PEER_TRUNCATED: {
        uint8_t frame[7] = {0};
        uint32_t len = 10; /* promises 10 bytes, sends 3 */
        memcpy(frame, &len, sizeof(len));
        memcpy(frame + 4, "abc", 3);
        if (!raw_send(c, frame, sizeof(frame), NULL, 0))
            return 22;
        close(c);
        break;
    }
    case PEER_OVERSIZED: {
        uint32_t len = AFDT_MSGLEN + 1;
        if (!raw_send(c, &len, sizeof(len), &p->tok[0], 1))
            return 23;
        break;
    }
    case PEER_TWO_FDS:
        if (!raw_send_frame(c, "two", p->tok, 2))
            return 24;
        break;
    case PEER_SLOW:
        sleep_ms(p->delay_ms);
        /* The client may have given up: that is fine. */
        (void)raw_send_frame(c, "slow", &p->tok[0], 1);
        break;
    case PEER_AFTER_BACKLOG:
        if (!raw_send_frame(c, "room", &p->tok[0], 1))
            return 25;
        break;
    case PEER_DRIBBLE: {
        uint8_t frame[4 + 7];
        uint32_t len = 7;
        memcpy(frame, &len, sizeof(len));
        memcpy(frame + 4, "dribble", 7);
        for (size_t i = 0; i < sizeof(frame); i++) {
            if (!raw_send(c, frame + i, 1, i ? NULL : &p->tok[0], i ? 0 : 1))
                return 26;
            sleep_ms(i ? 2 : p->delay_ms);
        }
        break;
    }
    }
    for (;;)
        pause();
}

/* Start a forked peer listening at a fresh path; the listening socket exists
 * before the fork, so there is no start-up race. */
static pid_t peer_start(struct peer *p, enum peer_mode mode, int delay_ms, const char **path) {
    memset(p, 0, sizeof(*p));
    p->mode = mode;
    p->delay_ms = delay_ms;
    token(p->tok);
    *path = tmp_path("peer");
    p->lfd = raw_listen(*path, 16);
    pid_t pid = spawn(peer_main, p);
    close(p->lfd);
    return pid;
}

/* Stop the peer; it must not have failed on its own. */
static void peer_stop(struct peer *p, pid_t pid) {
    CHECK_INT(kill(pid, SIGKILL), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 128 + SIGKILL);
    close_token(p->tok);
}

/* A real afdt server in a child process with its own loop. */
struct child_server {
    const char *path;
    int tok;
    int ready; /* write end: one byte once the server listens */
};

static int child_server_main(void *arg) {
    struct child_server *cs = arg;
    struct event_base *eb = event_base_new();
    struct srv s;
    memset(&s, 0, sizeof(s));
    s.fd_to_send = cs->tok;
    s.answer = "pong";
    if (afdt_create_server(cs->path, eb, srv_request, NULL, srv_error, &s.handle, &s) < 0)
        return 30;
    if (write(cs->ready, "r", 1) != 1)
        return 31;
    event_base_dispatch(eb);
    return 32;
}

/* ---------------------------------------------------------------------------
 * Successful exchanges.
 * ------------------------------------------------------------------------- */

TEST(client_exchange_with_server_in_same_loop) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, tok[0], "pong");
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"ping", 4, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.errors, ==, 0);
    CHECK_INT(r.len, ==, 4);
    CHECK_MEM(r.buf, "pong", 4);
    CHECK(same_file(r.fd, tok[0]));
    CHECK(is_cloexec(r.fd));
    CHECK_INT(s.req_len, ==, 4);
    CHECK_MEM(s.req, "ping", 4);
    close(r.fd);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    event_base_free(eb);
    close_token(tok);
}

/* Start child_server_main at @path, sending @tok; returns once it listens. */
static pid_t fork_server(const char *path, int tok) {
    int ready[2];
    CHECK_INT(pipe2(ready, O_CLOEXEC), ==, 0);
    struct child_server cs = {path, tok, ready[1]};
    pid_t pid = spawn(child_server_main, &cs);
    char c;
    CHECK_INT(read(ready[0], &c, 1), ==, 1);
    close_token(ready);
    return pid;
}

static void kill_server(pid_t pid) {
    CHECK_INT(kill(pid, SIGKILL), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 128 + SIGKILL);
}

TEST(client_exchange_with_server_in_forked_process) {
    int tok[2];
    token(tok);
    const char *path = tmp_path("forked");
    pid_t pid = fork_server(path, tok[0]);

    struct event_base *eb = event_base_new();
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"ping", 4, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    /* The client alone is in this loop: once it is done the loop runs dry. */
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 4);
    CHECK_MEM(r.buf, "pong", 4);
    CHECK(same_file(r.fd, tok[0]));
    CHECK(is_cloexec(r.fd));
    close(r.fd);
    CHECK_FD_COUNT(before);
    event_base_free(eb);
    kill_server(pid);
    close_token(tok);
}

TEST(client_calls_response_handler_exactly_once_and_error_handler_never) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "once");
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    /* Well past the response, and past where a stray timeout could fire
     * if the exchange's timer were left armed. */
    struct timeval short_to = {0, 300000};
    struct reply r2;
    reply_init(&r2, eb);
    r2.break_loop = false;
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &short_to, &r2),
              >=, 0);
    run_for_ms(eb, 600);
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.errors, ==, 0);
    CHECK_INT(r2.calls, ==, 1);
    CHECK_INT(r2.responses, ==, 1);
    CHECK_INT(r2.errors, ==, 0);
    CHECK_INT(s.requests, ==, 2);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    event_base_free(eb);
}

TEST(client_delivers_response_from_loop_not_inside_create_client) {
    int tok[2];
    token(tok);
    const char *path = tmp_path("forked");
    pid_t pid = fork_server(path, tok[0]);
    struct event_base *eb = event_base_new();
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"ping", 4, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    /* Even if the answer is already waiting, it is delivered from the loop. */
    sleep_ms(50);
    CHECK_INT(r.calls, ==, 0);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    close(r.fd);
    event_base_free(eb);
    kill_server(pid);
    close_token(tok);
}

TEST(client_response_without_descriptor_gives_negative_fd) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "no fd");
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.fd, <, 0);
    CHECK_INT(r.len, ==, 5);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(client_sends_request_of_exactly_msglen) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "full");
    uint8_t req[AFDT_MSGLEN];
    for (size_t i = 0; i < sizeof(req); i++)
        req[i] = (uint8_t)(i * 13);
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(s.path, eb, req, AFDT_MSGLEN, reply_on_response, reply_on_error,
                                 &five_s, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(s.req_len, ==, AFDT_MSGLEN);
    CHECK_MEM(s.req, req, AFDT_MSGLEN);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(client_sends_empty_request_given_null_buffer) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "");
    s.req_len = 77;
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(
        afdt_create_client(s.path, eb, NULL, 0, reply_on_response, reply_on_error, &five_s, &r), >=,
        0);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 0);
    CHECK_INT(s.requests, ==, 1);
    CHECK_INT(s.req_len, ==, 0);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

/* The request buffer is the caller's again as soon as create_client returns. */
TEST(client_copies_request_before_create_client_returns) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "k");
    uint8_t *req = malloc(8);
    memcpy(req, "original", 8);
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(
        afdt_create_client(s.path, eb, req, 8, reply_on_response, reply_on_error, &five_s, &r), >=,
        0);
    memcpy(req, "XXXXXXXX", 8);
    free(req);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_MEM(s.req, "original", 8);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

struct owner {
    struct reply r;
    int tok;
    bool same_in_handler;
    bool cloexec_in_handler;
};

static void owner_response(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct owner *o = ud;
    o->same_in_handler = same_file(fd, o->tok);
    o->cloexec_in_handler = is_cloexec(fd);
    reply_on_response(resp, len, fd, &o->r);
}

static void owner_error(const struct afdt_error_t *e, void *ud) {
    struct owner *o = ud;
    reply_on_error(e, &o->r);
}

TEST(client_response_handler_owns_received_descriptor) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, tok[1], "yours");
    struct owner o;
    reply_init(&o.r, eb);
    o.tok = tok[1];
    int before = fd_count();
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"mine?", 5, owner_response,
                                 owner_error, &five_s, &o),
              >=, 0);
    wait_reply(&o.r);
    CHECK_INT(o.r.responses, ==, 1);
    CHECK(o.r.fd_open_in_handler);
    CHECK(o.same_in_handler);
    CHECK(o.cloexec_in_handler);
    /* Once the handler returned the library keeps its hands off: the
     * descriptor is still open and still the same pipe. */
    run_for_ms(eb, 50);
    CHECK(same_file(o.r.fd, tok[1]));
    CHECK_FD_COUNT(before + 1);
    CHECK_INT(write(o.r.fd, "w", 1), ==, 1);
    char c = 0;
    CHECK_INT(read(tok[0], &c, 1), ==, 1);
    CHECK_INT(c, ==, 'w');
    close(o.r.fd);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(client_sockets_are_close_on_exec) {
    struct event_base *eb = event_base_new();
    int ln = raw_listen(tmp_path("idle"), 16);
    char path[108];
    struct sockaddr_un sun;
    socklen_t sl = sizeof(sun);
    CHECK_INT(getsockname(ln, (struct sockaddr *)&sun, &sl), ==, 0);
    strcpy(path, sun.sun_path);
    int inheritable = count_inheritable();
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    struct timeval to = {0, 50000};
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    /* The client's socket is open now, waiting for an answer. */
    CHECK_FD_COUNT(before + 1);
    CHECK_INT(count_inheritable(), ==, inheritable);
    wait_reply(&r);
    CHECK_INT(r.errors, ==, 1);
    CHECK_FD_COUNT(before);
    close(ln);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * Failures inside afdt_create_client.
 * ------------------------------------------------------------------------- */

TEST(client_missing_server_reports_connect_enoent_inside_create_client) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("missing");
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    errno = 0;
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              <, 0);
    int e = errno;
    CHECK_INT(e, ==, ENOENT);
    /* Called before create_client returned, exactly once. */
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.errors, ==, 1);
    CHECK_ERR(r.err, AFDT_CREATE_CLIENT, AFDT_CONNECT, ENOENT, r.err_errno);
    CHECK_INT(strlen(r.err.message), <, 1000); /* the message outlives the call */
    CHECK_FD_COUNT(before);
    /* Nothing was left in the loop. */
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    CHECK_INT(r.calls, ==, 1);
    event_base_free(eb);
}

TEST(client_stale_socket_file_reports_connect_econnrefused) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("stale");
    /* Bound, never listening, then closed: the file stays, nobody is there. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    CHECK_INT(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    close(fd);
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              <, 0);
    int e = errno;
    CHECK_INT(e, ==, ECONNREFUSED);
    CHECK_INT(r.calls, ==, 1);
    CHECK_ERR(r.err, AFDT_CREATE_CLIENT, AFDT_CONNECT, ECONNREFUSED, r.err_errno);
    CHECK_FD_COUNT(before);
    event_base_free(eb);
}

TEST(client_request_longer_than_msglen_reports_format_inside_create_client) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "never");
    uint8_t req[AFDT_MSGLEN + 1];
    memset(req, 'r', sizeof(req));
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(s.path, eb, req, AFDT_MSGLEN + 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              <, 0);
    int e = errno;
    CHECK_INT(e, ==, 0);
    CHECK_INT(r.calls, ==, 1);
    CHECK_ERR(r.err, AFDT_CREATE_CLIENT, AFDT_FORMAT, 0, r.err_errno);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_create_client(s.path, eb, req, UINT32_MAX, reply_on_response, reply_on_error,
                                 &five_s, &r),
              <, 0);
    CHECK_INT(r.calls, ==, 2);
    CHECK_ERR(r.err, AFDT_CREATE_CLIENT, AFDT_FORMAT, 0, r.err_errno);
    /* The server never heard of either. */
    run_for_ms(eb, 20);
    CHECK_INT(s.requests, ==, 0);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(client_null_arguments_are_reported_not_crashed_on) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("null");
    struct reply r;
    reply_init(&r, eb);
    errno = 0;
    CHECK_INT(
        afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response, NULL, &five_s, &r),
        <, 0);
    int e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(
        afdt_create_client(path, eb, (const uint8_t *)"q", 1, NULL, reply_on_error, &five_s, &r), <,
        0);
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.err.phase, ==, AFDT_CREATE_CLIENT);
    CHECK_INT(afdt_create_client(path, NULL, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              <, 0);
    CHECK_INT(r.calls, ==, 2);
    CHECK_INT(r.err.phase, ==, AFDT_CREATE_CLIENT);
    CHECK_INT(afdt_create_client(NULL, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              <, 0);
    CHECK_INT(r.calls, ==, 3);
    CHECK_INT(r.err.phase, ==, AFDT_CREATE_CLIENT);
    CHECK_INT(r.err.operation, ==, AFDT_PATHNAME);
    CHECK_INT(afdt_create_client(path, eb, NULL, 5, reply_on_response, reply_on_error, &five_s, &r),
              <, 0);
    CHECK_INT(r.calls, ==, 4);
    CHECK_INT(r.err.phase, ==, AFDT_CREATE_CLIENT);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * Failures from the loop.
 * ------------------------------------------------------------------------- */

TEST(client_times_out_on_silent_server) {
    struct peer p;
    const char *path;
    pid_t pid = peer_start(&p, PEER_SILENT, 0, &path);
    struct event_base *eb = event_base_new();
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    struct timeval to = {0, 300000};
    int64_t t0 = now_ms();
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"hello?", 6, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    CHECK_INT(r.calls, ==, 0);
    /* The client is alone in the loop: dispatch returns once it gave up. */
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    int64_t elapsed = now_ms() - t0;
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.errors, ==, 1);
    CHECK_ERR(r.err, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT, r.err_errno);
    CHECK_INT(strlen(r.err.message), <, 1000); /* the message outlives the call */
    CHECK_INT(elapsed, >=, 300);
    CHECK_FD_COUNT(before);
    event_base_free(eb);
    peer_stop(&p, pid);
}

TEST(client_calls_error_handler_once_and_ignores_response_after_timeout) {
    struct peer p;
    const char *path;
    pid_t pid = peer_start(&p, PEER_SLOW, 300, &path);

    struct event_base *eb = event_base_new();
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    struct timeval to = {0, 100000};
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    run_for_ms(eb, 600);
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.errors, ==, 1);
    CHECK_INT(r.responses, ==, 0);
    CHECK_ERR(r.err, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT, r.err_errno);
    CHECK_FD_COUNT(before);
    event_base_free(eb);
    peer_stop(&p, pid);
}

static void tick(evutil_socket_t fd, short what, void *ud) {
    (void)fd;
    (void)what;
    (*(int *)ud)++;
}

TEST(client_timeout_covers_connect_to_full_backlog_without_blocking_loop) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("full");
    int ln = raw_listen(path, 1);
    int fill[16];
    int nfill = fill_backlog(path, fill, 16);
    CHECK_INT(nfill, >=, 1);
    /* The backlog really is full: a plain connect would wait. */
    CHECK_INT(raw_connect_nb(path), ==, -EAGAIN);

    int ticks = 0;
    struct event *ticker = event_new(eb, -1, EV_PERSIST, tick, &ticks);
    struct timeval ten_ms = {0, 10000};
    event_add(ticker, &ten_ms);

    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    struct timeval to = {0, 500000};
    int64_t t0 = now_ms();
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    int64_t call_ms = now_ms() - t0;
    CHECK_INT(r.calls, ==, 0);
    /* A create_client that waited in connect would have used up the timeout. */
    CHECK_INT(call_ms, <, 500);
    wait_reply(&r);
    int64_t elapsed = now_ms() - t0;
    CHECK_INT(r.calls, ==, 1);
    CHECK_ERR(r.err, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT, r.err_errno);
    CHECK_INT(elapsed, >=, 500);
    /* The loop kept turning while the client waited (about 50 ticks). */
    CHECK_INT(ticks, >=, 10);
    CHECK_FD_COUNT(before);

    event_free(ticker);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(ln);
    event_base_free(eb);
}

TEST(client_connect_retries_until_backlog_has_room) {
    struct peer p;
    memset(&p, 0, sizeof(p));
    p.mode = PEER_AFTER_BACKLOG;
    p.delay_ms = 300;
    token(p.tok);
    const char *path = tmp_path("later");
    p.lfd = raw_listen(path, 1);
    int fill[16];
    p.nfill = fill_backlog(path, fill, 16);
    pid_t pid = spawn(peer_main, &p);
    close(p.lfd);

    struct event_base *eb = event_base_new();
    int ticks = 0;
    struct event *ticker = event_new(eb, -1, EV_PERSIST, tick, &ticks);
    struct timeval ten_ms = {0, 10000};
    event_add(ticker, &ten_ms);
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    CHECK_INT(r.calls, ==, 0);
    wait_reply(&r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 4);
    CHECK_MEM(r.buf, "room", 4);
    CHECK(same_file(r.fd, p.tok[0]));
    close(r.fd);
    CHECK_INT(ticks, >=, 5);
    event_free(ticker);
    event_base_free(eb);
    for (int i = 0; i < p.nfill; i++)
        close(fill[i]);
    peer_stop(&p, pid);
}

TEST(client_reports_connect_error_once_when_listener_goes_away_during_retry) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("gone");
    int ln = raw_listen(path, 1);
    int fill[16];
    int nfill = fill_backlog(path, fill, 16);
    int before = fd_count();
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    run_for_ms(eb, 50); /* the client is retrying its connect */
    CHECK_INT(r.calls, ==, 0);
    /* The file stays, nobody listens any more: the next try is refused. */
    close(ln);
    while (r.calls == 0)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    run_for_ms(eb, 100);
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.errors, ==, 1);
    CHECK_INT(r.err.operation, ==, AFDT_CONNECT);
    CHECK_INT(r.err_errno, ==, ECONNREFUSED);
    CHECK_FD_COUNT(before - 1); /* the listener is gone, the client's socket too */
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    event_base_free(eb);
}

/* Once create_client has returned >= 0, a failure is no longer "inside
 * afdt_create_client": a 2009 program that handles AFDT_CREATE_CLIENT errors
 * through the return value alone would never hear of this one. */
TEST(client_failure_after_create_client_returned_is_not_reported_as_create_client) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("gone");
    int ln = raw_listen(path, 1);
    int fill[16];
    int nfill = fill_backlog(path, fill, 16);
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              >=, 0);
    run_for_ms(eb, 50);
    close(ln);
    wait_reply(&r);
    CHECK_INT(r.errors, ==, 1);
    CHECK_INT(r.err.operation, ==, AFDT_CONNECT);
    CHECK_STR(afdt_phase_str(r.err.phase), afdt_phase_str(AFDT_HANDLE_RESPONSE));
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    event_base_free(eb);
}

/* A timeout far beyond any wait must not wrap around into "already expired". */
static void check_huge_timeout(const struct timeval *to) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, -1, "in time");
    struct reply r;
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, to, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(r.errors, ==, 0);
    CHECK_INT(r.responses, ==, 1);
    CHECK_MEM(r.buf, "in time", 7);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(client_huge_tv_sec_timeout_does_not_expire_at_once) {
    struct timeval to = {LONG_MAX, 0};
    check_huge_timeout(&to);
}

TEST(client_huge_tv_usec_timeout_does_not_expire_at_once) {
    struct timeval to = {0, LONG_MAX};
    check_huge_timeout(&to);
}

TEST(client_timeout_near_int64_microseconds_does_not_expire_at_once) {
    struct timeval to = {LONG_MAX / 1000000, 999999};
    check_huge_timeout(&to);
}

TEST(client_non_normalised_timeout_counts_in_full) {
    struct peer p;
    const char *path;
    pid_t pid = peer_start(&p, PEER_SILENT, 0, &path);
    struct event_base *eb = event_base_new();
    struct reply r;
    reply_init(&r, eb);
    struct timeval to = {0, 1200000}; /* 1.2 s, spelt with tv_usec over a million */
    int64_t t0 = now_ms();
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    wait_reply(&r);
    int64_t elapsed = now_ms() - t0;
    CHECK_ERR(r.err, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT, r.err_errno);
    CHECK_INT(elapsed, >=, 1200);
    event_base_free(eb);
    peer_stop(&p, pid);
}

TEST(client_non_normalised_timeout_against_full_backlog_counts_in_full) {
    struct event_base *eb = event_base_new();
    const char *path = tmp_path("full");
    int ln = raw_listen(path, 1);
    int fill[16];
    int nfill = fill_backlog(path, fill, 16);
    struct reply r;
    reply_init(&r, eb);
    struct timeval to = {0, 1200000};
    int64_t t0 = now_ms();
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_ERR(r.err, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT, r.err_errno);
    CHECK_INT(now_ms() - t0, >=, 1200);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(ln);
    event_base_free(eb);
}

TEST(client_null_timeout_waits_for_slow_server) {
    struct peer p;
    const char *path;
    pid_t pid = peer_start(&p, PEER_SLOW, 400, &path);
    struct event_base *eb = event_base_new();
    struct reply r;
    reply_init(&r, eb);
    int64_t t0 = now_ms();
    CHECK_INT(afdt_create_client(path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, NULL, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(now_ms() - t0, >=, 400);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 4);
    CHECK_MEM(r.buf, "slow", 4);
    CHECK(same_file(r.fd, p.tok[0]));
    close(r.fd);
    event_base_free(eb);
    peer_stop(&p, pid);
}

/* ---------------------------------------------------------------------------
 * Many clients.
 * ------------------------------------------------------------------------- */

struct flight {
    struct reply r[100];
    int done;
};

TEST(client_hundred_clients_in_flight_are_all_answered) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_start(&s, eb, tok[0], "many");
    int before = fd_count();
    static struct flight f;
    for (int i = 0; i < 100; i++) {
        reply_init(&f.r[i], eb);
        f.r[i].break_loop = false;
        char req[8];
        int n = snprintf(req, sizeof(req), "%d", i);
        CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)req, (uint32_t)n,
                                     reply_on_response, reply_on_error, &five_s, &f.r[i]),
                  >=, 0);
    }
    /* All 100 are connected or connecting before the loop runs once. */
    CHECK_INT(fd_count(), >=, before + 100);
    int answered = 0;
    while (answered < 100) {
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
        answered = 0;
        for (int i = 0; i < 100; i++)
            answered += f.r[i].calls;
    }
    for (int i = 0; i < 100; i++) {
        CHECK_INT(f.r[i].calls, ==, 1);
        CHECK_INT(f.r[i].responses, ==, 1);
        CHECK_MEM(f.r[i].buf, "many", 4);
        CHECK(same_file(f.r[i].fd, tok[0]));
        close(f.r[i].fd);
    }
    CHECK_INT(s.requests, ==, 100);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    event_base_free(eb);
    close_token(tok);
}

struct chain {
    struct event_base *eb;
    struct srv s;
    int links;
    int errors;
    int fds_at_first;
    int fds_at_last;
};

static void chain_error(const struct afdt_error_t *e, void *ud) {
    struct chain *c = ud;
    c->errors++;
    (void)e;
}

static void chain_response(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct chain *c = ud;
    CHECK_INT(len, ==, 5);
    CHECK_MEM(resp, "chain", 5);
    CHECK(same_file(fd, c->s.fd_to_send));
    close(fd);
    c->links++;
    if (c->links == 1)
        c->fds_at_first = fd_count();
    if (c->links < 10) {
        CHECK_INT(afdt_create_client(c->s.path, c->eb, (const uint8_t *)"next", 4, chain_response,
                                     chain_error, &five_s, c),
                  >=, 0);
    } else {
        c->fds_at_last = fd_count();
        CHECK_INT(afdt_close_server(c->s.handle), ==, 0);
    }
}

TEST(client_response_handler_can_start_next_client_chain_of_ten) {
    int tok[2];
    token(tok);
    struct chain c;
    memset(&c, 0, sizeof(c));
    c.eb = event_base_new();
    srv_start(&c.s, c.eb, tok[0], "chain");
    CHECK_INT(afdt_create_client(c.s.path, c.eb, (const uint8_t *)"first", 5, chain_response,
                                 chain_error, &five_s, &c),
              >=, 0);
    /* Nothing breaks the loop; it ends when the last link closes the server. */
    CHECK_INT(event_base_dispatch(c.eb), >=, 0);
    CHECK_INT(c.links, ==, 10);
    CHECK_INT(c.errors, ==, 0);
    CHECK_INT(c.s.requests, ==, 10);
    CHECK_INT(c.fds_at_last, ==, c.fds_at_first);
    event_base_free(c.eb);
    close_token(tok);
}

/* An error handler that tries the next place: a missing server (reported
 * inside create_client), then a listener that never answers (a timeout from
 * the loop), then a real server. */
struct fallback {
    struct event_base *eb;
    const char *paths[3];
    int step;
    struct reply r;
};

static void fallback_response(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct fallback *fb = ud;
    reply_on_response(resp, len, fd, &fb->r);
}

static void fallback_error(const struct afdt_error_t *e, void *ud) {
    struct fallback *fb = ud;
    reply_on_error(e, &fb->r);
    fb->step++;
    struct timeval to = {0, 100000};
    CHECK_INT(fb->step, <, 3);
    int rc = afdt_create_client(fb->paths[fb->step], fb->eb, (const uint8_t *)"q", 1,
                                fallback_response, fallback_error, &to, fb);
    CHECK_INT(rc, >=, 0);
}

TEST(client_error_handler_can_start_a_new_client) {
    struct fallback fb;
    memset(&fb, 0, sizeof(fb));
    fb.eb = event_base_new();
    reply_init(&fb.r, fb.eb);
    fb.r.break_loop = false;
    struct srv s;
    srv_start(&s, fb.eb, -1, "third time");
    const char *idle = tmp_path("idle");
    int ln = raw_listen(idle, 16);
    fb.paths[0] = tmp_path("missing");
    fb.paths[1] = idle;
    fb.paths[2] = s.path;
    int before = fd_count();
    struct timeval to = {0, 100000};
    /* Fails inside, and the handler's own attempt is under way when it returns. */
    CHECK_INT(afdt_create_client(fb.paths[0], fb.eb, (const uint8_t *)"q", 1, fallback_response,
                                 fallback_error, &to, &fb),
              <, 0);
    CHECK_INT(fb.step, ==, 1);
    while (fb.r.responses == 0)
        CHECK_INT(event_base_loop(fb.eb, EVLOOP_ONCE), >=, 0);
    CHECK_INT(fb.step, ==, 2);
    CHECK_INT(fb.r.errors, ==, 2);
    CHECK_INT(fb.r.responses, ==, 1);
    CHECK_MEM(fb.r.buf, "third time", 10);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_close_server(s.handle), ==, 0);
    event_base_dispatch(fb.eb);
    close(ln);
    event_base_free(fb.eb);
}

/* ---------------------------------------------------------------------------
 * No descriptor leaks, path by path.
 * ------------------------------------------------------------------------- */

TEST(client_error_paths_leave_descriptor_count_unchanged) {
    struct event_base *eb = event_base_new();
    int before = fd_count();
    struct reply r;
    struct timeval to = {0, 50000};

    /* Missing server, oversized request, bad name: inside create_client. */
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(tmp_path("missing"), eb, (const uint8_t *)"q", 1,
                                 reply_on_response, reply_on_error, &to, &r),
              <, 0);
    CHECK_FD_COUNT(before);
    static uint8_t big[AFDT_MSGLEN + 1];
    CHECK_INT(afdt_create_client(tmp_path("big"), eb, big, sizeof(big), reply_on_response,
                                 reply_on_error, &to, &r),
              <, 0);
    CHECK_FD_COUNT(before);
    CHECK_INT(afdt_create_client("", eb, (const uint8_t *)"q", 1, reply_on_response, reply_on_error,
                                 &to, &r),
              <, 0);
    CHECK_INT(r.errors, ==, 3);
    CHECK_FD_COUNT(before);

    /* A timeout while connecting and one while waiting for the answer. */
    const char *full = tmp_path("full");
    int ln = raw_listen(full, 1);
    int fill[16];
    int nfill = fill_backlog(full, fill, 16);
    int with_fill = fd_count();
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(full, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(r.err.operation, ==, AFDT_TIMEOUT);
    CHECK_FD_COUNT(with_fill);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(ln);

    const char *idle = tmp_path("idle");
    ln = raw_listen(idle, 16);
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(idle, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &to, &r),
              >=, 0);
    wait_reply(&r);
    CHECK_INT(r.err.operation, ==, AFDT_TIMEOUT);
    close(ln);
    CHECK_FD_COUNT(before);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * Every outcome of a peer, and the first look.  A client started while the
 * loop has other callbacks to run looks for its answer on the loop's next
 * turn before registering with epoll; every outcome must come out the same
 * through that path as through epoll.
 * ------------------------------------------------------------------------- */

struct starter {
    const char *path;
    struct timeval timeout;
    struct reply *r;
    struct queued_pair q;
};

static void start_client(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct starter *b = arg;
    CHECK_INT(afdt_create_client(b->path, b->r->eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &b->timeout, b->r),
              ==, 0);
}

/* The other work queued behind it: long enough for a peer that answers at
 * once to have answered before the look. */
static void busy_other_work(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
    sleep_ms(50);
}

/* Every outcome a peer can give, from a client started outside the loop or
 * (@busy) through its first look; none leaves a descriptor behind. */
static void check_every_outcome(bool busy) {
    static const struct {
        enum peer_mode mode;
        int delay_ms;
        int timeout_ms;
        enum afdt_operation op; /* for a failure */
        int eno;
        const char *answer; /* for a response */
    } cases[] = {
        {PEER_SLOW, 0, 5000, 0, 0, "slow"},         /* answered at once */
        {PEER_TWO_FDS, 0, 5000, 0, 0, "two"},       /* the second descriptor is closed */
        {PEER_DRIBBLE, 150, 5000, 0, 0, "dribble"}, /* a look finds one byte */
        {PEER_SILENT, 0, 300, AFDT_TIMEOUT, ETIMEDOUT, NULL},
        {PEER_CLOSE, 0, 5000, AFDT_RECVMSG, 0, NULL},    /* hangs up without answering */
        {PEER_TRUNCATED, 0, 5000, AFDT_FORMAT, 0, NULL}, /* hangs up inside the frame */
        {PEER_OVERSIZED, 0, 5000, AFDT_FORMAT, 0, NULL}, /* its descriptor is closed */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct peer p;
        struct starter b;
        memset(&b, 0, sizeof(b));
        pid_t pid = peer_start(&p, cases[i].mode, cases[i].delay_ms, &b.path);
        struct event_base *eb = event_base_new();
        int before = fd_count();
        struct reply r;
        reply_init(&r, eb);
        b.timeout = (struct timeval){0, cases[i].timeout_ms * 1000};
        b.r = &r;
        if (busy)
            queue_pair(&b.q, eb, start_client, busy_other_work, &b);
        else
            start_client(-1, 0, &b);
        wait_reply(&r);
        CHECK_INT(r.calls, ==, 1);
        if (cases[i].answer) {
            CHECK_INT(r.responses, ==, 1);
            CHECK_INT(r.len, ==, strlen(cases[i].answer));
            CHECK_MEM(r.buf, cases[i].answer, r.len);
            CHECK(same_file(r.fd, p.tok[0]));
            CHECK_FD_COUNT(before + 1); /* that one alone arrived */
            close(r.fd);
        } else {
            CHECK_ERR(r.err, AFDT_HANDLE_RESPONSE, cases[i].op, cases[i].eno, r.err_errno);
        }
        CHECK_FD_COUNT(before);
        event_base_free(eb);
        peer_stop(&p, pid);
    }
}

TEST(client_gives_every_outcome_of_a_peer) {
    check_every_outcome(false);
}

TEST(client_first_look_gives_every_outcome_as_the_loop_does) {
    check_every_outcome(true);
}
