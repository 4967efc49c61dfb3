/* SPDX-License-Identifier: BSD-3-Clause */
/* The libevent server (afdt_create_server, afdt_close_server) against real clients. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

/* ---------------------------------------------------------------------------
 * Fixtures: a server whose callbacks record what they saw, and clients that
 * record what came back.
 * ------------------------------------------------------------------------- */

enum close_from { CLOSE_NEVER, CLOSE_IN_REQUEST, CLOSE_IN_POST, CLOSE_IN_ERROR };

struct srv {
    struct event_base *eb;
    const char *path;
    void *handle;
    bool closed;
    enum close_from close_from;
    /* What the request handler answers. */
    int fd_to_send;
    uint8_t answer[AFDT_MSGLEN];
    uint32_t answer_len;
    /* Set *response_length to this instead of answer_len (0: do not). */
    uint32_t bogus_len;
    /* What the callbacks saw. */
    int requests, posts, errors;
    uint8_t req[AFDT_MSGLEN];
    uint32_t req_len;
    uint32_t resp_len_on_entry;
    uint8_t post_req[AFDT_MSGLEN];
    uint32_t post_req_len;
    uint8_t post_resp[AFDT_MSGLEN];
    uint32_t post_resp_len;
    int post_fd;
    struct afdt_error_t err;
    int err_errno;
    void *ud_request, *ud_post, *ud_error;
};

static void srv_init(struct srv *s, struct event_base *eb, int fd_to_send, const char *answer) {
    memset(s, 0, sizeof(*s));
    s->eb = eb;
    s->path = tmp_path("srv");
    s->fd_to_send = fd_to_send;
    s->answer_len = (uint32_t)strlen(answer);
    memcpy(s->answer, answer, s->answer_len);
    s->post_fd = -100;
    s->err_errno = -1;
}

static void srv_close(struct srv *s) {
    if (!s->closed) {
        CHECK_INT(afdt_close_server(s->handle), ==, 0);
        s->closed = true;
    }
}

static int on_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                      void *ud) {
    struct srv *s = ud;
    s->ud_request = ud;
    s->requests++;
    s->resp_len_on_entry = *resp_len;
    CHECK_INT(len, <=, AFDT_MSGLEN);
    memcpy(s->req, req, len);
    s->req_len = len;
    /* Scribble over the whole buffer the library promised, so AddressSanitizer
     * sees it if the buffer is smaller than AFDT_MSGLEN. */
    memset(resp, 0xa5, *resp_len);
    memcpy(resp, s->answer, s->answer_len);
    *resp_len = s->bogus_len ? s->bogus_len : s->answer_len;
    if (s->close_from == CLOSE_IN_REQUEST)
        srv_close(s);
    return s->fd_to_send;
}

static void on_post(const uint8_t *req, uint32_t req_len, const uint8_t *resp, uint32_t resp_len,
                    int sent_fd, void *ud) {
    struct srv *s = ud;
    s->ud_post = ud;
    s->posts++;
    memcpy(s->post_req, req, req_len);
    s->post_req_len = req_len;
    memcpy(s->post_resp, resp, resp_len);
    s->post_resp_len = resp_len;
    s->post_fd = sent_fd;
    if (s->close_from == CLOSE_IN_POST)
        srv_close(s);
}

static void on_srv_error(const struct afdt_error_t *e, void *ud) {
    int saved = errno;
    struct srv *s = ud;
    s->ud_error = ud;
    s->errors++;
    s->err = *e;
    s->err_errno = saved;
    if (s->close_from == CLOSE_IN_ERROR)
        srv_close(s);
}

static void srv_start(struct srv *s) {
    CHECK_INT(afdt_create_server(s->path, s->eb, on_request, on_post, on_srv_error, &s->handle, s),
              ==, 0);
    CHECK(s->handle != NULL);
}

static const struct timeval five_s = {5, 0};

/* One asynchronous exchange in @s's loop; returns when the client is done. */
static void exchange(struct srv *s, const void *req, uint32_t len, struct reply *r) {
    reply_init(r, s->eb);
    CHECK_INT(
        afdt_create_client(s->path, s->eb, req, len, reply_on_response, reply_on_error, &five_s, r),
        ==, 0);
    while (r->calls == 0)
        CHECK_INT(event_base_loop(s->eb, EVLOOP_ONCE), >=, 0);
    CHECK_INT(r->calls, ==, 1);
}

/* A pipe whose read end serves as a descriptor with its own inode, so
 * same_file() cannot match by accident. */
static void token(int p[2]) {
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
}

static void close_token(int p[2]) {
    close(p[0]);
    close(p[1]);
}

static bool fd_is_open(int fd) {
    return fcntl(fd, F_GETFD) >= 0;
}

/* Run the loop without blocking until it has nothing left to do right now. */
static void loop_nonblock(struct event_base *eb) {
    for (int i = 0; i < 5; i++)
        CHECK_INT(event_base_loop(eb, EVLOOP_NONBLOCK), >=, 0);
}

/* ---------------------------------------------------------------------------
 * The request handler and what reaches the client.
 * ------------------------------------------------------------------------- */

TEST(server_request_handler_gets_request_bytes_and_msglen_response_buffer) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "ok");
    srv_start(&s);
    static const uint32_t sizes[] = {1, 37, AFDT_MSGLEN};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t req[AFDT_MSGLEN];
        for (uint32_t j = 0; j < sizes[i]; j++)
            req[j] = (uint8_t)(j * 7 + i);
        s.resp_len_on_entry = 0;
        struct reply r;
        exchange(&s, req, sizes[i], &r);
        CHECK_INT(r.responses, ==, 1);
        CHECK_INT(s.requests, ==, (int)i + 1);
        CHECK_INT(s.req_len, ==, sizes[i]);
        CHECK_MEM(s.req, req, sizes[i]);
        CHECK_INT(s.resp_len_on_entry, ==, AFDT_MSGLEN);
    }
    CHECK_INT(s.errors, ==, 0);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(server_request_handler_gets_empty_request) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "empty-ok");
    srv_start(&s);
    s.req_len = 99;
    struct reply r;
    exchange(&s, NULL, 0, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(s.requests, ==, 1);
    CHECK_INT(s.req_len, ==, 0);
    CHECK_INT(s.resp_len_on_entry, ==, AFDT_MSGLEN);
    CHECK_INT(r.len, ==, 8);
    CHECK_MEM(r.buf, "empty-ok", 8);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(server_delivers_response_bytes_and_descriptor_close_on_exec) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "");
    for (uint32_t i = 0; i < AFDT_MSGLEN; i++)
        s.answer[i] = (uint8_t)(255 - i);
    s.answer_len = AFDT_MSGLEN;
    srv_start(&s);
    struct reply r;
    exchange(&s, "give", 4, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.errors, ==, 0);
    CHECK_INT(r.len, ==, AFDT_MSGLEN);
    CHECK_MEM(r.buf, s.answer, AFDT_MSGLEN);
    CHECK(r.fd >= 0);
    CHECK(r.fd != tok[0]);
    CHECK(same_file(r.fd, tok[0]));
    CHECK(is_cloexec(r.fd));
    close(r.fd);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_sends_no_descriptor_when_request_handler_returns_negative) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "nothing for you");
    srv_start(&s);
    int before = fd_count();
    struct reply r;
    exchange(&s, "x", 1, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.fd, <, 0);
    CHECK_INT(r.len, ==, 15);
    CHECK_MEM(r.buf, "nothing for you", 15);
    CHECK_INT(s.posts, ==, 1);
    CHECK_INT(s.post_fd, <, 0);
    CHECK_FD_COUNT(before);
    /* Any negative value means "none", not only -1. */
    s.fd_to_send = -42;
    exchange(&s, "y", 1, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.fd, <, 0);
    CHECK_INT(s.errors, ==, 0);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(server_sends_empty_response_with_descriptor) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[1], "");
    srv_start(&s);
    struct reply r;
    exchange(&s, "fd only", 7, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 0);
    CHECK(same_file(r.fd, tok[1]));
    close(r.fd);
    CHECK_INT(s.posts, ==, 1);
    CHECK_INT(s.post_resp_len, ==, 0);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_passes_userdata_to_every_callback) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "u");
    srv_start(&s);
    struct reply r;
    exchange(&s, "u", 1, &r);
    /* A client that hangs up without a request makes the error handler run. */
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    close(c);
    while (s.errors == 0)
        event_base_loop(eb, EVLOOP_ONCE);
    CHECK(s.ud_request == &s);
    CHECK(s.ud_post == &s);
    CHECK(s.ud_error == &s);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * The post handler.
 * ------------------------------------------------------------------------- */

struct post_order {
    struct srv s;
    int client_sock;
    struct event *marker;
    int seq;
    int request_seq, post_seq, marker_seq;
    /* What the client socket held when the post handler ran. */
    int recv_ret;
    uint8_t got[AFDT_MSGLEN];
    uint32_t got_len;
    int got_fd;
};

static int order_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                         void *ud) {
    struct post_order *o = ud;
    o->request_seq = ++o->seq;
    /* Anything the loop would run next: the post handler must come first. */
    event_active(o->marker, EV_TIMEOUT, 1);
    return on_request(req, len, resp, resp_len, &o->s);
}

static void order_post(const uint8_t *req, uint32_t req_len, const uint8_t *resp, uint32_t resp_len,
                       int sent_fd, void *ud) {
    struct post_order *o = ud;
    o->post_seq = ++o->seq;
    /* The response must already be on its way: take it without waiting. */
    o->got_len = sizeof(o->got);
    o->got_fd = -100;
    o->recv_ret = afdt_recv_fd_msg(o->client_sock, o->got, &o->got_len, &o->got_fd, NULL);
    on_post(req, req_len, resp, resp_len, sent_fd, &o->s);
}

static void order_marker(evutil_socket_t fd, short what, void *ud) {
    (void)fd;
    (void)what;
    struct post_order *o = ud;
    o->marker_seq = ++o->seq;
    event_base_loopbreak(o->s.eb);
}

TEST(server_post_handler_runs_after_send_and_before_loop_resumes) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct post_order o;
    memset(&o, 0, sizeof(o));
    srv_init(&o.s, eb, tok[0], "the response");
    o.marker = event_new(eb, -1, 0, order_marker, &o);
    CHECK_INT(
        afdt_create_server(o.s.path, eb, order_request, order_post, on_srv_error, &o.s.handle, &o),
        ==, 0);
    o.client_sock = afdt_connect(o.s.path, NULL);
    CHECK_INT(o.client_sock, >=, 0);
    CHECK_INT(afdt_send_plain_msg(o.client_sock, (const uint8_t *)"the request", 11, NULL), ==, 0);
    CHECK_INT(fcntl(o.client_sock, F_SETFL, O_NONBLOCK), ==, 0);
    CHECK_INT(event_base_dispatch(eb), ==, 0);

    CHECK_INT(o.request_seq, ==, 1);
    CHECK_INT(o.post_seq, ==, 2);
    CHECK_INT(o.marker_seq, ==, 3);
    CHECK_INT(o.recv_ret, ==, 0);
    CHECK_INT(o.got_len, ==, 12);
    CHECK_MEM(o.got, "the response", 12);
    CHECK(same_file(o.got_fd, tok[0]));
    close(o.got_fd);
    /* The post handler sees the exchange as it happened. */
    CHECK_INT(o.s.posts, ==, 1);
    CHECK_INT(o.s.post_req_len, ==, 11);
    CHECK_MEM(o.s.post_req, "the request", 11);
    CHECK_INT(o.s.post_resp_len, ==, 12);
    CHECK_MEM(o.s.post_resp, "the response", 12);
    CHECK_INT(o.s.post_fd, ==, tok[0]);
    CHECK_INT(o.s.errors, ==, 0);

    close(o.client_sock);
    srv_close(&o.s);
    event_base_dispatch(eb);
    event_free(o.marker);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_accepts_null_post_handler) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "no post");
    CHECK_INT(afdt_create_server(s.path, eb, on_request, NULL, on_srv_error, &s.handle, &s), ==, 0);
    struct reply r;
    exchange(&s, "a", 1, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 7);
    CHECK(same_file(r.fd, tok[0]));
    close(r.fd);
    CHECK_INT(s.errors, ==, 0);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_afdt_no_post_does_nothing) {
    int before = fd_count();
    afdt_no_post(NULL, 0, NULL, 0, -1, NULL);
    afdt_no_post((const uint8_t *)"r", 1, (const uint8_t *)"s", 1, 0, &before);
    /* It must not have closed the descriptor it was shown. */
    CHECK(fd_is_open(0));
    CHECK_FD_COUNT(before);
}

TEST(server_never_closes_descriptor_returned_by_request_handler) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "keep");
    CHECK_INT(afdt_create_server(s.path, eb, on_request, afdt_no_post, on_srv_error, &s.handle, &s),
              ==, 0);
    for (int i = 0; i < 3; i++) {
        struct reply r;
        exchange(&s, "k", 1, &r);
        CHECK_INT(r.responses, ==, 1);
        close(r.fd);
        CHECK(fd_is_open(tok[0]));
    }
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    /* Still ours, still the pipe: not closed, not closed-and-reused. */
    CHECK(fd_is_open(tok[0]));
    CHECK_INT(write(tok[1], "z", 1), ==, 1);
    char c = 0;
    CHECK_INT(read(tok[0], &c, 1), ==, 1);
    CHECK_INT(c, ==, 'z');
    close_token(tok);
}

/* ---------------------------------------------------------------------------
 * afdt_close_server.
 * ------------------------------------------------------------------------- */

TEST(server_close_in_request_handler_still_delivers_that_response) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "bye");
    s.close_from = CLOSE_IN_REQUEST;
    srv_start(&s);
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"terminate", 9, reply_on_response,
                                 reply_on_error, &five_s, &r),
              ==, 0);
    /* Nothing breaks the loop: it must run dry by itself once the exchange is
     * over, because the closed server holds no event any more. */
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK(s.closed);
    CHECK_INT(r.calls, ==, 1);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 3);
    CHECK_MEM(r.buf, "bye", 3);
    CHECK(same_file(r.fd, tok[0]));
    close(r.fd);
    CHECK_INT(s.posts, ==, 1);
    CHECK_INT(s.errors, ==, 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(s.path, &err), <, 0);
    event_base_free(eb);
    close_token(tok);
}

struct terminate_arg {
    const char *path;
    int tok;
};

static int sync_terminate_client(void *arg) {
    struct terminate_arg *a = arg;
    uint8_t resp[16];
    uint32_t len = sizeof(resp);
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {5, 0};
    if (afdt_sync_client(a->path, (const uint8_t *)"terminate", 9, resp, &len, &fd, &tv, &err) < 0)
        return 10;
    if (len != 3 || memcmp(resp, "bye", 3) != 0)
        return 11;
    if (!same_file(fd, a->tok))
        return 12;
    return 0;
}

TEST(server_close_in_request_handler_answers_forked_terminate_client) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "bye");
    s.close_from = CLOSE_IN_REQUEST;
    srv_start(&s);
    struct terminate_arg a = {s.path, tok[0]};
    pid_t pid = spawn(sync_terminate_client, &a);
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK(s.closed);
    CHECK_INT(s.requests, ==, 1);
    CHECK_MEM(s.req, "terminate", 9);
    CHECK_INT(s.posts, ==, 1);
    CHECK_INT(s.errors, ==, 0);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_close_in_post_handler_lets_dispatch_return) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "last");
    s.close_from = CLOSE_IN_POST;
    srv_start(&s);
    struct reply r;
    reply_init(&r, eb);
    r.break_loop = false;
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"q", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              ==, 0);
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK(s.closed);
    CHECK_INT(r.responses, ==, 1);
    CHECK_MEM(r.buf, "last", 4);
    CHECK_INT(s.posts, ==, 1);
    CHECK_INT(afdt_connect(s.path, NULL), <, 0);
    event_base_free(eb);
}

TEST(server_close_in_error_handler_lets_dispatch_return) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "unused");
    s.close_from = CLOSE_IN_ERROR;
    srv_start(&s);
    /* A client that hangs up without a request is an error on its connection. */
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    close(c);
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK(s.closed);
    CHECK_INT(s.errors, ==, 1);
    CHECK_INT(s.err.phase, ==, AFDT_HANDLE_REQUEST);
    CHECK_INT(s.err.operation, ==, AFDT_RECVMSG);
    CHECK_INT(s.requests, ==, 0);
    CHECK_INT(afdt_connect(s.path, NULL), <, 0);
    event_base_free(eb);
}

struct in_progress {
    struct srv s;
    struct reply r;
    int a_sock;
};

/* B's answer arrived, so the server is closed: now A sends its request. */
static void send_late_request(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct in_progress *p = ud;
    reply_on_response(resp, len, fd, &p->r);
    CHECK_INT(afdt_send_plain_msg(p->a_sock, (const uint8_t *)"late A", 6, NULL), ==, 0);
}

static void in_progress_error(const struct afdt_error_t *e, void *ud) {
    struct in_progress *p = ud;
    reply_on_error(e, &p->r);
}

TEST(server_close_lets_accepted_exchange_in_progress_complete) {
    struct event_base *eb = event_base_new();
    struct in_progress p;
    memset(&p, 0, sizeof(p));
    srv_init(&p.s, eb, -1, "answer");
    p.s.close_from = CLOSE_IN_REQUEST;
    srv_start(&p.s);
    reply_init(&p.r, eb);
    p.r.break_loop = false;

    /* Client A connects and is accepted, but has not sent its request. */
    p.a_sock = afdt_connect(p.s.path, NULL);
    CHECK_INT(p.a_sock, >=, 0);
    int before = fd_count();
    loop_nonblock(eb);
    CHECK_FD_COUNT(before + 1); /* the server's end of A */
    CHECK_INT(p.s.requests, ==, 0);

    /* Client B's request closes the server; then A sends its request. */
    CHECK_INT(afdt_create_client(p.s.path, eb, (const uint8_t *)"close", 5, send_late_request,
                                 in_progress_error, &five_s, &p),
              ==, 0);
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK(p.s.closed);
    CHECK_INT(p.r.responses, ==, 1);
    CHECK_INT(p.s.requests, ==, 2);
    CHECK_INT(p.s.req_len, ==, 6);
    CHECK_MEM(p.s.req, "late A", 6);
    CHECK_INT(p.s.posts, ==, 2);
    CHECK_INT(p.s.errors, ==, 0);

    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -100;
    CHECK_INT(afdt_recv_fd_msg(p.a_sock, buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 6);
    CHECK_MEM(buf, "answer", 6);
    CHECK_INT(fd, <, 0);
    close(p.a_sock);
    event_base_free(eb);
}

TEST(server_refuses_connections_after_close) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "r");
    srv_start(&s);
    struct reply r;
    exchange(&s, "r", 1, &r);
    CHECK_INT(r.responses, ==, 1);
    int before = fd_count();
    srv_close(&s);
    CHECK_FD_COUNT(before - 1); /* the listening socket */
    /* With no exchange left the server holds nothing: dispatch returns now. */
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(s.path, &err), <, 0);
    int e = errno;
    CHECK_INT(err.operation, ==, AFDT_CONNECT);
    CHECK(e == ENOENT || e == ECONNREFUSED);
    reply_init(&r, eb);
    CHECK_INT(afdt_create_client(s.path, eb, (const uint8_t *)"r", 1, reply_on_response,
                                 reply_on_error, &five_s, &r),
              <, 0);
    CHECK_INT(r.errors, ==, 1);
    CHECK_INT(r.err.operation, ==, AFDT_CONNECT);
    CHECK_INT(s.requests, ==, 1);
    event_base_free(eb);
}

TEST(server_close_removes_its_own_socket_file) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "r");
    srv_start(&s);
    struct stat st;
    CHECK_INT(stat(s.path, &st), ==, 0);
    CHECK(S_ISSOCK(st.st_mode));
    srv_close(&s);
    CHECK_INT(access(s.path, F_OK), <, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(server_close_null_handle_fails_with_einval) {
    errno = 0;
    CHECK_INT(afdt_close_server(NULL), <, 0);
    int e = errno;
    CHECK_INT(e, ==, EINVAL);
}

/* ---------------------------------------------------------------------------
 * afdt_create_server failures.
 * ------------------------------------------------------------------------- */

TEST(server_create_on_path_of_running_server_fails_with_eaddrinuse) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "first");
    srv_start(&s);
    struct srv s2;
    srv_init(&s2, eb, -1, "second");
    s2.path = s.path;
    void *h = (void *)&s2; /* must not be written on failure */
    errno = 0;
    CHECK_INT(afdt_create_server(s.path, eb, on_request, on_post, on_srv_error, &h, &s2), <, 0);
    int e = errno;
    CHECK_INT(e, ==, EADDRINUSE);
    CHECK_INT(s2.errors, ==, 1);
    CHECK_ERR(s2.err, AFDT_CREATE_SERVER, AFDT_BIND, EADDRINUSE, s2.err_errno);
    CHECK(h == (void *)&s2);
    /* The failed attempt must leave the running server's file alone. */
    struct reply r;
    exchange(&s, "still", 5, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_MEM(r.buf, "first", 5);
    CHECK_INT(s2.requests, ==, 0);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(server_create_on_existing_regular_file_fails_and_keeps_the_file) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "x");
    int f = open(s.path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK_INT(f, >=, 0);
    CHECK_INT(write(f, "data", 4), ==, 4);
    close(f);
    int before = fd_count();
    CHECK_INT(afdt_create_server(s.path, eb, on_request, on_post, on_srv_error, NULL, &s), <, 0);
    int e = errno;
    CHECK_INT(e, ==, EADDRINUSE);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_CREATE_SERVER, AFDT_BIND, EADDRINUSE, s.err_errno);
    CHECK_FD_COUNT(before);
    struct stat st;
    CHECK_INT(stat(s.path, &st), ==, 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK_INT(st.st_size, ==, 4);
    /* The loop holds nothing from the failed attempt. */
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    event_base_free(eb);
}

TEST(server_create_with_too_long_path_fails_with_afdt_pathname) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "x");
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
    memset(path, 'p', sizeof(path) - 1);
    memcpy(path, "/tmp/", 5);
    path[sizeof(path) - 1] = '\0';
    int before = fd_count();
    errno = 0;
    CHECK_INT(afdt_create_server(path, eb, on_request, on_post, on_srv_error, NULL, &s), <, 0);
    int e = errno;
    CHECK_INT(e, ==, ENAMETOOLONG);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_CREATE_SERVER, AFDT_PATHNAME, ENAMETOOLONG, s.err_errno);
    CHECK_FD_COUNT(before);
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    event_base_free(eb);
}

TEST(server_create_in_missing_directory_fails_with_bind_enoent) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "x");
    char path[128];
    snprintf(path, sizeof(path), "%s.d/no/such/dir.sock", s.path);
    int before = fd_count();
    CHECK_INT(afdt_create_server(path, eb, on_request, on_post, on_srv_error, NULL, &s), <, 0);
    int e = errno;
    CHECK_INT(e, ==, ENOENT);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_CREATE_SERVER, AFDT_BIND, ENOENT, s.err_errno);
    CHECK_INT(strlen(s.err.message), <, 1000); /* the message outlives the call */
    CHECK_FD_COUNT(before);
    event_base_free(eb);
}

TEST(server_create_with_null_event_base_or_handler_reports_event_base_set) {
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "x");
    CHECK_INT(afdt_create_server(s.path, NULL, on_request, on_post, on_srv_error, NULL, &s), <, 0);
    int e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_CREATE_SERVER, AFDT_EVENT_BASE_SET, EINVAL, s.err_errno);
    CHECK_INT(afdt_create_server(s.path, eb, NULL, on_post, on_srv_error, NULL, &s), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(s.errors, ==, 2);
    CHECK_ERR(s.err, AFDT_CREATE_SERVER, AFDT_EVENT_BASE_SET, EINVAL, s.err_errno);
    CHECK_INT(access(s.path, F_OK), <, 0);
    event_base_free(eb);
}

TEST(server_create_with_null_error_handler_returns_einval) {
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("noerr");
    errno = 0;
    CHECK_INT(afdt_create_server(p, eb, on_request, on_post, NULL, NULL, NULL), ==, -1);
    int e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(access(p, F_OK), <, 0);
    event_base_free(eb);
}

static int unclosable_server(void *arg) {
    (void)arg;
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "orphan");
    if (afdt_create_server(s.path, eb, on_request, on_post, on_srv_error, NULL, &s) < 0)
        return 10;
    struct reply r;
    exchange(&s, "hello", 5, &r);
    if (r.responses != 1 || r.len != 6 || memcmp(r.buf, "orphan", 6) != 0)
        return 11;
    if (!same_file(r.fd, tok[0]))
        return 12;
    if (s.errors != 0)
        return 13;
    return 0;
}

TEST(server_accepts_null_close_handle) {
    /* Such a server can never be closed, so it lives in a child of its own. */
    CHECK_INT(wait_exit(spawn(unclosable_server, NULL)), ==, 0);
}

/* ---------------------------------------------------------------------------
 * Close-on-exec.
 * ------------------------------------------------------------------------- */

struct cloexec_probe {
    struct srv s;
    int inheritable_in_handler;
    int fds_in_handler;
};

static int probe_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                         void *ud) {
    struct cloexec_probe *p = ud;
    p->inheritable_in_handler = count_inheritable();
    p->fds_in_handler = fd_count();
    return on_request(req, len, resp, resp_len, &p->s);
}

TEST(server_sockets_are_close_on_exec) {
    struct event_base *eb = event_base_new();
    struct cloexec_probe p;
    srv_init(&p.s, eb, -1, "c");
    int inheritable = count_inheritable();
    int before = fd_count();
    CHECK_INT(
        afdt_create_server(p.s.path, eb, probe_request, on_post, on_srv_error, &p.s.handle, &p), ==,
        0);
    CHECK_FD_COUNT(before + 1);                      /* the listening socket... */
    CHECK_INT(count_inheritable(), ==, inheritable); /* ...is close-on-exec */
    /* A raw blocking client, so that only the server's accepted socket is new
     * while the request handler runs. */
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, p.s.path);
    CHECK_INT(connect(c, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    CHECK_INT(afdt_send_plain_msg(c, (const uint8_t *)"c", 1, NULL), ==, 0);
    while (p.s.requests == 0)
        event_base_loop(eb, EVLOOP_ONCE);
    CHECK_INT(p.fds_in_handler, ==, before + 3); /* plus the client and the accepted socket */
    CHECK_INT(p.inheritable_in_handler, ==, inheritable);
    close(c);
    srv_close(&p.s);
    event_base_dispatch(eb);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * Errors on one connection never stop the server.
 * ------------------------------------------------------------------------- */

/* The server must still answer a well-behaved client. */
static void check_still_serving(struct srv *s, int tok) {
    int fd_before = s->fd_to_send;
    uint32_t bogus = s->bogus_len;
    s->fd_to_send = tok;
    s->bogus_len = 0;
    struct reply r;
    exchange(s, "good", 4, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, s->answer_len);
    CHECK_MEM(r.buf, s->answer, s->answer_len);
    CHECK(same_file(r.fd, tok));
    close(r.fd);
    s->fd_to_send = fd_before;
    s->bogus_len = bogus;
}

TEST(server_reports_bad_descriptor_from_request_handler_and_keeps_serving) {
    CHECK(!fd_is_open(9999));
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, 9999, "bad fd");
    srv_start(&s);
    int before = fd_count();
    struct reply r;
    exchange(&s, "x", 1, &r);
    CHECK_INT(s.requests, ==, 1);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_HANDLE_REQUEST, AFDT_SENDMSG, EBADF, s.err_errno);
    CHECK_INT(strlen(s.err.message), <, 1000); /* the message outlives the call */
    /* Nothing was sent, so there is nothing to post-process. */
    CHECK_INT(s.posts, ==, 0);
    /* The client sees the connection close without an answer. */
    CHECK_INT(r.errors, ==, 1);
    CHECK_INT(r.err.phase, ==, AFDT_HANDLE_RESPONSE);
    CHECK_FD_COUNT(before);
    check_still_serving(&s, tok[0]);
    CHECK_INT(s.errors, ==, 1);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_reports_oversized_response_length_and_keeps_serving) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "too long");
    srv_start(&s);
    static const uint32_t lens[] = {AFDT_MSGLEN + 1, AFDT_FULL_MSGLEN, UINT32_MAX};
    for (int i = 0; i < 3; i++) {
        s.bogus_len = lens[i];
        s.errors = 0;
        int before = fd_count();
        struct reply r;
        exchange(&s, "x", 1, &r);
        CHECK_INT(s.errors, ==, 1);
        CHECK_ERR(s.err, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0, s.err_errno);
        CHECK_INT(s.posts, ==, 0);
        CHECK_INT(r.errors, ==, 1);
        CHECK_FD_COUNT(before);
        /* The descriptor the handler returned is still the caller's. */
        CHECK(fd_is_open(tok[0]));
    }
    s.bogus_len = 0;
    check_still_serving(&s, tok[0]);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_survives_client_that_hangs_up_before_response_without_sigpipe) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "nobody listens");
    srv_start(&s);
    /* The harness left SIGPIPE at its default: raising it would kill us. */
    struct sigaction sa;
    CHECK_INT(sigaction(SIGPIPE, NULL, &sa), ==, 0);
    CHECK(sa.sa_handler == SIG_DFL);
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    CHECK_INT(afdt_send_plain_msg(c, (const uint8_t *)"bye", 3, NULL), ==, 0);
    close(c);
    while (s.errors == 0)
        event_base_loop(eb, EVLOOP_ONCE);
    CHECK_INT(s.requests, ==, 1);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_HANDLE_REQUEST, AFDT_SENDMSG, EPIPE, s.err_errno);
    CHECK_INT(s.posts, ==, 0);
    CHECK(fd_is_open(tok[0]));
    check_still_serving(&s, tok[0]);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_survives_client_that_hangs_up_without_request) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "s");
    srv_start(&s);
    int before = fd_count();
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    close(c);
    while (s.errors == 0)
        event_base_loop(eb, EVLOOP_ONCE);
    CHECK_INT(s.requests, ==, 0);
    CHECK_ERR(s.err, AFDT_HANDLE_REQUEST, AFDT_RECVMSG, 0, s.err_errno);
    CHECK_FD_COUNT(before);
    check_still_serving(&s, tok[0]);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_reports_oversized_request_frame_and_keeps_serving) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, tok[0], "s");
    srv_start(&s);
    int before = fd_count();
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    uint32_t hdr = AFDT_MSGLEN + 1;
    CHECK_INT(write(c, &hdr, sizeof(hdr)), ==, (ssize_t)sizeof(hdr));
    while (s.errors == 0)
        event_base_loop(eb, EVLOOP_ONCE);
    CHECK_INT(s.requests, ==, 0);
    CHECK_ERR(s.err, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0, s.err_errno);
    close(c);
    CHECK_FD_COUNT(before);
    check_still_serving(&s, tok[0]);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_closes_descriptors_sent_with_request_and_answers_it) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "answered");
    srv_start(&s);
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    int before = fd_count();
    int two[2] = {tok[0], tok[1]};
    CHECK_INT(afdt_send_fds_msg(c, (const uint8_t *)"with fds", 8, two, 2, NULL), ==, 0);
    while (s.posts == 0)
        event_base_loop(eb, EVLOOP_ONCE);
    CHECK_INT(s.requests, ==, 1);
    CHECK_MEM(s.req, "with fds", 8);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -100;
    CHECK_INT(afdt_recv_fd_msg(c, buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 8);
    CHECK_MEM(buf, "answered", 8);
    CHECK_INT(fd, <, 0);
    /* Both descriptors that arrived at the server are closed again. */
    CHECK_FD_COUNT(before);
    close(c);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_answers_good_client_while_silent_client_is_connected) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "s");
    srv_start(&s);
    int silent = afdt_connect(s.path, NULL);
    CHECK_INT(silent, >=, 0);
    loop_nonblock(eb);
    check_still_serving(&s, tok[0]);
    CHECK_INT(s.errors, ==, 0);
    close(silent);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

TEST(server_drops_oldest_silent_connection_when_full_and_serves_good_client) {
    enum { SILENT = 1100 };
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "s");
    srv_start(&s);
    static int silent[SILENT];
    int n = 0;
    for (; n < SILENT; n++) {
        silent[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        CHECK_INT(silent[n], >=, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        strcpy(sun.sun_path, s.path);
        if (connect(silent[n], (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            /* The backlog is smaller than we hoped: serve what we have so far. */
            CHECK_INT(errno, ==, EAGAIN);
            close(silent[n]);
            loop_nonblock(eb);
            n--;
        }
    }
    check_still_serving(&s, tok[0]);
    /* More silent clients than the cap: the oldest were dropped and reported. */
    CHECK_INT(s.errors, >=, SILENT - 1024);
    CHECK_INT(s.err.phase, ==, AFDT_HANDLE_REQUEST);
    char c;
    CHECK_INT(read(silent[0], &c, 1), ==, 0); /* the oldest was hung up on */
    for (int i = 0; i < SILENT; i++)
        close(silent[i]);
    srv_close(&s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

struct emfile {
    struct srv s;
    int fillers[64];
    int nfillers;
    int accept_errors;
};

static void emfile_error(const struct afdt_error_t *e, void *ud) {
    int saved = errno;
    struct emfile *m = ud;
    on_srv_error(e, &m->s);
    if (e->phase == AFDT_ACCEPT_CLIENT && saved == EMFILE) {
        m->accept_errors++;
        /* Make room; the server must find out by itself. */
        for (int i = 0; i < m->nfillers; i++)
            close(m->fillers[i]);
        m->nfillers = 0;
    }
}

static int emfile_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                          void *ud) {
    struct emfile *m = ud;
    int fd = on_request(req, len, resp, resp_len, &m->s);
    srv_close(&m->s);
    return fd;
}

struct late_client {
    const char *path;
    int go; /* read end: one byte means "connect now" */
};

static int sync_client_child(void *arg) {
    struct late_client *l = arg;
    char c;
    if (read(l->go, &c, 1) != 1)
        return 9;
    uint8_t resp[32];
    uint32_t len = sizeof(resp);
    int fd = -1;
    struct timeval tv = {8, 0};
    if (afdt_sync_client(l->path, (const uint8_t *)"late", 4, resp, &len, &fd, &tv, NULL) < 0)
        return 10;
    return len == 2 && memcmp(resp, "ok", 2) == 0 ? 0 : 11;
}

/* Lower the descriptor limit to what is open now plus a few, and open those
 * few: the next accept fails with EMFILE.  Returns how many were opened. */
static int fill_descriptor_table(int *fillers, int max, struct rlimit *old) {
    CHECK_INT(getrlimit(RLIMIT_NOFILE, old), ==, 0);
    /* The limit is one past the highest number that may be handed out. */
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK_INT(probe, >=, 0);
    close(probe);
    for (int fd = 0; fd < probe; fd++)
        CHECK(fd_is_open(fd));
    struct rlimit low = {(rlim_t)probe + 4, old->rlim_max};
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &low), ==, 0);
    int n = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        CHECK_INT(n, <, max);
        fillers[n++] = fd;
    }
    return n;
}

static void set_flag(evutil_socket_t fd, short what, void *ud) {
    (void)fd;
    (void)what;
    *(bool *)ud = true;
}

TEST(server_out_of_descriptors_pauses_accepting_and_recovers) {
    struct event_base *eb = event_base_new();
    struct emfile m;
    memset(&m, 0, sizeof(m));
    srv_init(&m.s, eb, -1, "ok");
    CHECK_INT(
        afdt_create_server(m.s.path, eb, emfile_request, on_post, emfile_error, &m.s.handle, &m),
        ==, 0);
    /* The client is forked first: with our limit lowered it could not open
     * its own socket. */
    int go[2];
    CHECK_INT(pipe2(go, O_CLOEXEC), ==, 0);
    struct late_client l = {m.s.path, go[0]};
    pid_t pid = spawn(sync_client_child, &l);

    struct rlimit old;
    m.nfillers = fill_descriptor_table(m.fillers, 64, &old);
    CHECK_INT(m.nfillers, >=, 1);
    CHECK_INT(write(go[1], "g", 1), ==, 1);
    /* A guard, so a server that never recovers fails here and not by timeout. */
    bool expired = false;
    struct event *guard = evtimer_new(eb, set_flag, &expired);
    struct timeval nine_s = {9, 0};
    evtimer_add(guard, &nine_s);
    while (m.s.posts == 0 && !expired)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    event_free(guard);
    CHECK(!expired);
    CHECK(m.s.closed);
    CHECK_INT(event_base_dispatch(eb), ==, 1);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK_INT(m.accept_errors, >=, 1);
    CHECK_INT(m.s.requests, ==, 1);
    CHECK_INT(m.s.posts, ==, 1);
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &old), ==, 0);
    close_token(go);
    event_base_free(eb);
}

TEST(server_close_in_accept_error_handler_when_out_of_descriptors_lets_dispatch_return) {
    /* (valgrind skips it: it fakes the descriptor limit by closing what
     * accept4 returned, so the connection is gone and nothing is reported.) */
    struct event_base *eb = event_base_new();
    struct srv s;
    srv_init(&s, eb, -1, "never");
    s.close_from = CLOSE_IN_ERROR;
    srv_start(&s);
    int c = afdt_connect(s.path, NULL);
    CHECK_INT(c, >=, 0);
    int fillers[64];
    struct rlimit old;
    int n = fill_descriptor_table(fillers, 64, &old);
    CHECK_INT(n, >=, 1);
    /* A guard, so a server that never reports fails here and not by timeout. */
    bool expired = false;
    struct event *guard = evtimer_new(eb, set_flag, &expired);
    evtimer_add(guard, &five_s);
    while (!s.closed && !expired)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    event_free(guard);
    CHECK(!expired);
    CHECK_INT(event_base_dispatch(eb), >=, 0);
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &old), ==, 0);
    CHECK(s.closed);
    CHECK_INT(s.errors, ==, 1);
    CHECK_ERR(s.err, AFDT_ACCEPT_CLIENT, AFDT_ACCEPT, EMFILE, s.err_errno);
    CHECK_INT(s.requests, ==, 0);
    for (int i = 0; i < n; i++)
        close(fillers[i]);
    close(c);
    event_base_free(eb);
}

/* ---------------------------------------------------------------------------
 * Many exchanges.
 * ------------------------------------------------------------------------- */

struct sequence {
    struct srv s;
    struct reply r;
    int done;
    int fds_at[3];
};

static void sequence_next(struct sequence *q);

static void sequence_response(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct sequence *q = ud;
    CHECK_INT(len, ==, 3);
    CHECK_MEM(resp, "seq", 3);
    CHECK(same_file(fd, q->s.fd_to_send));
    close(fd);
    q->done++;
    if (q->done == 1)
        q->fds_at[0] = fd_count();
    else if (q->done == 500)
        q->fds_at[1] = fd_count();
    else if (q->done == 1000)
        q->fds_at[2] = fd_count();
    if (q->done < 1000)
        sequence_next(q);
}

static void sequence_error(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    harness_fail(__FILE__, __LINE__, "exchange failed: %s %s %s", afdt_phase_str(e->phase),
                 afdt_operation_str(e->operation), e->message);
}

static void sequence_next(struct sequence *q) {
    CHECK_INT(afdt_create_client(q->s.path, q->s.eb, (const uint8_t *)"n", 1, sequence_response,
                                 sequence_error, &five_s, q),
              ==, 0);
}

TEST(server_handles_1000_sequential_exchanges_with_flat_descriptor_count) {
    int tok[2];
    token(tok);
    struct event_base *eb = event_base_new();
    struct sequence q;
    memset(&q, 0, sizeof(q));
    srv_init(&q.s, eb, tok[0], "seq");
    srv_start(&q.s);
    int before = fd_count();
    sequence_next(&q);
    while (q.done < 1000)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    CHECK_INT(q.s.requests, ==, 1000);
    CHECK_INT(q.s.posts, ==, 1000);
    CHECK_INT(q.s.errors, ==, 0);
    /* In the callback the exchange's own socket is still open; the library
     * closes it as soon as the callback returns. */
    CHECK_INT(q.fds_at[0], ==, before + 1);
    CHECK_INT(q.fds_at[1], ==, before + 1);
    CHECK_INT(q.fds_at[2], ==, before + 1);
    CHECK_FD_COUNT(before);
    srv_close(&q.s);
    event_base_dispatch(eb);
    event_base_free(eb);
    close_token(tok);
}

/* ---------------------------------------------------------------------------
 * Replacing a running server (the HHVM restart idiom): the successor unlinks
 * the socket file and binds its own while the predecessor still runs.
 * ------------------------------------------------------------------------- */

TEST(server_socket_file_can_be_replaced_while_old_server_keeps_its_work) {
    struct event_base *eb = event_base_new();
    struct srv old_srv, new_srv;
    srv_init(&old_srv, eb, -1, "old");
    srv_start(&old_srv);
    srv_init(&new_srv, eb, -1, "new");
    new_srv.path = old_srv.path;

    /* A client of the old server, accepted, request not yet sent. */
    int a = afdt_connect(old_srv.path, NULL);
    CHECK_INT(a, >=, 0);
    loop_nonblock(eb);

    CHECK_INT(unlink(old_srv.path), ==, 0);
    srv_start(&new_srv);
    CHECK_INT(new_srv.errors, ==, 0);

    struct reply r;
    exchange(&new_srv, "who", 3, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_INT(r.len, ==, 3);
    CHECK_MEM(r.buf, "new", 3);

    CHECK_INT(afdt_send_plain_msg(a, (const uint8_t *)"A", 1, NULL), ==, 0);
    while (old_srv.posts == 0)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE), >=, 0);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = -100;
    CHECK_INT(afdt_recv_fd_msg(a, buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 3);
    CHECK_MEM(buf, "old", 3);
    close(a);
    CHECK_INT(old_srv.requests, ==, 1);
    CHECK_INT(new_srv.requests, ==, 1);
    CHECK_INT(old_srv.errors + new_srv.errors, ==, 0);

    srv_close(&old_srv);
    srv_close(&new_srv);
    event_base_dispatch(eb);
    event_base_free(eb);
}

TEST(server_close_of_replaced_server_keeps_successor_socket_file) {
    struct event_base *eb = event_base_new();
    struct srv old_srv, new_srv;
    srv_init(&old_srv, eb, -1, "old");
    srv_start(&old_srv);
    srv_init(&new_srv, eb, -1, "new");
    new_srv.path = old_srv.path;
    CHECK_INT(unlink(old_srv.path), ==, 0);
    srv_start(&new_srv);
    struct stat before, after;
    CHECK_INT(stat(new_srv.path, &before), ==, 0);

    srv_close(&old_srv);
    CHECK_INT(stat(new_srv.path, &after), ==, 0);
    CHECK_INT(after.st_ino, ==, before.st_ino);
    struct reply r;
    exchange(&new_srv, "who", 3, &r);
    CHECK_INT(r.responses, ==, 1);
    CHECK_MEM(r.buf, "new", 3);
    CHECK_INT(old_srv.requests, ==, 0);

    /* The successor's own close removes its own file. */
    srv_close(&new_srv);
    CHECK_INT(access(new_srv.path, F_OK), <, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
}
