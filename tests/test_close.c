/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt_close_server_ex(): ending exchanges in flight, and saying when the server is gone. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

struct state {
    struct event_base *eb;
    void *handle;
    int devnull;
    int done_calls;
    int cancelled_errors; /* error handler calls with ECANCELED */
    int posts, post_error;
    bool close_in_handler;
    struct afdt_named_fd set[1];
};

static void on_done(void *ud) {
    struct state *st = ud;
    st->done_calls++;
}

static int answer_named(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                        struct afdt_reply *reply, void *ud) {
    (void)peer, (void)req, (void)len;
    struct state *st = ud;
    snprintf(st->set[0].name, sizeof(st->set[0].name), "null");
    st->set[0].fd = st->devnull;
    reply->content_length = 0;
    reply->named = st->set;
    reply->nnamed = 1;
    if (st->close_in_handler)
        CHECK_INT(afdt_close_server_ex(st->handle, AFDT_CLOSE_ABORT, on_done, st), ==, 0);
    return 0;
}

static void on_post(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                    const struct afdt_reply *reply, int error, void *ud) {
    (void)peer, (void)req, (void)len, (void)reply;
    struct state *st = ud;
    st->posts++;
    st->post_error = error;
}

static void on_error(const struct afdt_error_t *e, void *ud) {
    struct state *st = ud;
    if (errno == ECANCELED && e->phase == AFDT_HANDLE_REQUEST)
        st->cancelled_errors++;
}

static const char *start(struct state *st) {
    memset(st, 0, sizeof(*st));
    st->eb = event_base_new();
    CHECK(st->eb != NULL);
    st->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(st->devnull >= 0);
    const char *path = tmp_path("close");
    struct afdt_server_options o = {0};
    o.size = sizeof(o);
    o.request_handler = answer_named;
    o.post_handler = on_post;
    o.error_handler = on_error;
    o.userdata = st;
    CHECK_INT(afdt_create_server_ex(path, st->eb, &o, &st->handle), >=, 0);
    return path;
}

static void finish(struct state *st) {
    event_base_free(st->eb);
    close(st->devnull);
}

/* Turn the loop until the client's socket has something (or 5 s). */
static void loop_until_readable(struct state *st, int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    for (int64_t end = now_ms() + 5000; now_ms() < end && poll(&p, 1, 0) == 0;)
        event_base_loop(st->eb, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(poll(&p, 1, 0), ==, 1);
}

/* Whether @fd reaches end of file after what is queued (at most 5 s). */
static bool reaches_eof(int fd) {
    char buf[4096];
    for (int64_t end = now_ms() + 5000; now_ms() < end;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0 && errno != EAGAIN)
            return false;
        sleep_ms(5);
    }
    return false;
}

TEST(abort_ends_exchanges_in_flight_then_calls_back_once) {
    struct state st;
    const char *path = start(&st);
    /* One client silent, one whose named set waits for its acknowledgement. */
    int silent = afdt_connect(path, NULL);
    CHECK(silent >= 0);
    int asking = afdt_connect(path, NULL);
    CHECK(asking >= 0);
    CHECK_INT(afdt_send_plain_msg(asking, (const uint8_t *)"q", 1, NULL), ==, 0);
    loop_until_readable(&st, asking); /* the set's first frame is out */
    CHECK_INT(afdt_close_server_ex(st.handle, AFDT_CLOSE_ABORT, on_done, &st), ==, 0);
    CHECK_INT(st.done_calls, ==, 0);              /* two exchanges still in the loop */
    CHECK_INT(event_base_dispatch(st.eb), ==, 1); /* 1: nothing was left to run */
    CHECK_INT(st.done_calls, ==, 1);
    CHECK_INT(st.cancelled_errors, ==, 2);
    CHECK_INT(st.posts, ==, 1);
    CHECK_INT(st.post_error, ==, ECANCELED);
    CHECK(reaches_eof(silent));
    CHECK(reaches_eof(asking));
    close(silent);
    close(asking);
    finish(&st);
}

TEST(close_without_abort_calls_back_when_the_last_exchange_ends) {
    struct state st;
    const char *path = start(&st);
    int silent = afdt_connect(path, NULL);
    CHECK(silent >= 0);
    for (int i = 0; i < 20; i++) /* accept it */
        event_base_loop(st.eb, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_INT(afdt_close_server_ex(st.handle, 0, on_done, &st), ==, 0);
    CHECK_INT(st.done_calls, ==, 0);
    close(silent); /* its exchange ends: end of file */
    CHECK_INT(event_base_dispatch(st.eb), ==, 1);
    CHECK_INT(st.done_calls, ==, 1);
    finish(&st);
}

TEST(close_with_nothing_in_flight_calls_back_at_once) {
    struct state st;
    start(&st);
    CHECK_INT(afdt_close_server_ex(st.handle, AFDT_CLOSE_ABORT, on_done, &st), ==, 0);
    CHECK_INT(st.done_calls, ==, 1);
    CHECK_INT(event_base_dispatch(st.eb), ==, 1);
    finish(&st);
}

TEST(abort_from_inside_the_request_handler) {
    struct state st;
    const char *path = start(&st);
    st.close_in_handler = true;
    int asking = afdt_connect(path, NULL);
    CHECK(asking >= 0);
    CHECK_INT(afdt_send_plain_msg(asking, (const uint8_t *)"q", 1, NULL), ==, 0);
    int64_t t0 = now_ms();
    CHECK_INT(event_base_dispatch(st.eb), ==, 1);
    CHECK_INT(now_ms() - t0, <, 5000); /* 10,000: it waited for the connection's deadline */
    CHECK_INT(st.done_calls, ==, 1);
    CHECK_INT(st.posts, ==, 1);
    CHECK_INT(st.post_error, ==, ECANCELED);
    CHECK(reaches_eof(asking));
    close(asking);
    finish(&st);
}

TEST(close_server_ex_refuses_unknown_flags_and_null) {
    struct state st;
    start(&st);
    errno = 0;
    CHECK_INT(afdt_close_server_ex(st.handle, 0x80, on_done, &st), ==, -1);
    CHECK_INT(errno, ==, EINVAL);
    CHECK_INT(afdt_close_server_ex(NULL, 0, NULL, NULL), ==, -1);
    CHECK_INT(errno, ==, EINVAL);
    CHECK_INT(afdt_close_server_ex(st.handle, 0, on_done, &st), ==, 0);
    CHECK_INT(st.done_calls, ==, 1);
    finish(&st);
}

/* ---------------------------------------------------------------------------
 * Closing from inside each callback, 2009 and extended servers alike, waiting
 * for the exchange or aborting it: nothing of the server may be used after
 * (ASan), and the done callback comes once.
 * ------------------------------------------------------------------------- */

enum where { IN_REQUEST, IN_POST, IN_ERROR, IN_AUTHORIZE, N_WHERE };

struct closer_state {
    void *handle;
    enum where where;
    unsigned flags;
    int done_calls;
};

static void closer_done(void *ud) {
    ((struct closer_state *)ud)->done_calls++;
}

static void close_here(struct closer_state *cs, enum where w) {
    if (cs->where == w && cs->handle) {
        CHECK_INT(afdt_close_server_ex(cs->handle, cs->flags, closer_done, cs), ==, 0);
        cs->handle = NULL;
    }
}

static int request_2009(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                        void *ud) {
    (void)req, (void)len;
    close_here(ud, IN_REQUEST);
    memcpy(resp, "ok", 2);
    *resp_len = 2;
    return -1;
}

static void post_2009(const uint8_t *req, uint32_t len, const uint8_t *resp, uint32_t resp_len,
                      int fd, void *ud) {
    (void)req, (void)len, (void)resp, (void)resp_len, (void)fd;
    close_here(ud, IN_POST);
}

static void error_any(const struct afdt_error_t *e, void *ud) {
    (void)e;
    close_here(ud, IN_ERROR);
}

static int authorize_ex(const struct afdt_peer *peer, void *ud) {
    (void)peer;
    close_here(ud, IN_AUTHORIZE);
    return 1;
}

static int request_ex(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                      struct afdt_reply *reply, void *ud) {
    (void)peer, (void)req, (void)len;
    close_here(ud, IN_REQUEST);
    memcpy(reply->content, "ok", 2);
    reply->content_length = 2;
    return 0;
}

static void post_ex(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                    const struct afdt_reply *reply, int error, void *ud) {
    (void)peer, (void)req, (void)len, (void)reply, (void)error;
    close_here(ud, IN_POST);
}

TEST(server_closed_from_each_callback_is_gone_once_and_touched_no_more) {
    for (int ext = 0; ext < 2; ext++)
        for (enum where w = IN_REQUEST; w < N_WHERE; w++)
            for (unsigned flags = 0; flags <= AFDT_CLOSE_ABORT; flags += AFDT_CLOSE_ABORT) {
                if (w == IN_AUTHORIZE && !ext)
                    continue; /* a 2009 server has no authorize callback */
                struct closer_state cs = {NULL, w, flags, 0};
                struct event_base *eb = event_base_new();
                CHECK(eb != NULL);
                const char *path = tmp_path("each");
                if (ext) {
                    struct afdt_server_options o = {0};
                    o.size = sizeof(o);
                    o.request_handler = request_ex;
                    o.post_handler = post_ex;
                    o.error_handler = error_any;
                    o.authorize = authorize_ex;
                    o.userdata = &cs;
                    CHECK_INT(afdt_create_server_ex(path, eb, &o, &cs.handle), >=, 0);
                } else {
                    CHECK_INT(afdt_create_server(path, eb, request_2009, post_2009, error_any,
                                                 &cs.handle, &cs),
                              >=, 0);
                }
                int c = afdt_connect(path, NULL);
                CHECK(c >= 0);
                if (w == IN_ERROR) { /* a length field past AFDT_MSGLEN */
                    uint32_t bad = 0xffff;
                    CHECK_INT(write(c, &bad, sizeof(bad)), ==, (ssize_t)sizeof(bad));
                } else {
                    CHECK_INT(afdt_send_plain_msg(c, (const uint8_t *)"q", 1, NULL), ==, 0);
                }
                CHECK_INT(event_base_dispatch(eb), ==, 1);
                CHECK(cs.handle == NULL); /* it was closed there */
                CHECK_INT(cs.done_calls, ==, 1);
                CHECK(reaches_eof(c));
                close(c);
                event_base_free(eb);
            }
}
