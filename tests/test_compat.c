/* SPDX-License-Identifier: BSD-3-Clause */
/* A program written as a 2009 user would, against libevent 1.4's compatibility headers. */
/* First, before any system header: afdt.h must stand on its own, declaring
 * struct timeval and struct event_base itself. */
#include "afdt.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The 1.4 headers, exactly as old programs include them. */
#include <event.h>
#include <evhttp.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"

/* ---------------------------------------------------------------------------
 * The 2009 style: one global state block, struct event embedded in it, and
 * event_set + event_base_set + event_add.
 * ------------------------------------------------------------------------- */

static struct {
    struct event_base *base;
    struct event timer;
    int timer_fired;
    void *server;
    int fd_to_send;
    int requests;
    int responses;
    int errors;
    uint8_t response[AFDT_MSGLEN];
    uint32_t response_length;
    int received_fd;
} g;

static int handle_request(const uint8_t *request, uint32_t request_length, uint8_t *response,
                          uint32_t *response_length, void *userdata) {
    (void)userdata;
    g.requests++;
    if (request_length == 9 && memcmp(request, "terminate", 9) == 0)
        afdt_close_server(g.server);
    memcpy(response, "here", 4);
    *response_length = 4;
    return g.fd_to_send;
}

static void handle_response(const uint8_t *response, uint32_t response_length, int received_fd,
                            void *userdata) {
    (void)userdata;
    g.responses++;
    memcpy(g.response, response, response_length);
    g.response_length = response_length;
    g.received_fd = received_fd;
}

static void handle_error(const struct afdt_error_t *err, void *userdata) {
    (void)userdata;
    g.errors++;
    fprintf(stderr, "afdt error: %s %s %s\n", afdt_phase_str(err->phase),
            afdt_operation_str(err->operation), err->message);
}

static void on_timer(int fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
    g.timer_fired++;
}

static void add_timer(int ms) {
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    event_set(&g.timer, -1, 0, on_timer, NULL);
    CHECK_INT(event_base_set(g.base, &g.timer), ==, 0);
    CHECK_INT(event_add(&g.timer, &tv), ==, 0);
}

static void reset_globals(void) {
    memset(&g, 0, sizeof(g));
    g.received_fd = -100;
}

TEST(compat_event_init_server_and_client_exchange_with_own_timer) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    reset_globals();
    g.fd_to_send = p[0];
    g.base = event_init();
    CHECK(g.base != NULL);
    const char *path = tmp_path("compat");
    CHECK_INT(afdt_create_server(path, g.base, handle_request, afdt_no_post, handle_error,
                                 &g.server, NULL),
              ==, 0);
    add_timer(20);
    struct timeval timeout = {5, 0};
    CHECK_INT(afdt_create_client(path, g.base, (const uint8_t *)"terminate", 9, handle_response,
                                 handle_error, &timeout, NULL),
              >=, 0);
    /* The 1.4 global loop: it returns once the server has closed itself, the
     * client has its answer and the timer has fired. */
    CHECK_INT(event_dispatch(), >=, 0);
    CHECK_INT(g.timer_fired, ==, 1);
    CHECK_INT(g.requests, ==, 1);
    CHECK_INT(g.responses, ==, 1);
    CHECK_INT(g.errors, ==, 0);
    CHECK_INT(g.response_length, ==, 4);
    CHECK_MEM(g.response, "here", 4);
    CHECK(same_file(g.received_fd, p[0]));
    close(g.received_fd);
    event_base_free(g.base);
    close(p[0]);
    close(p[1]);
}

static int sync_child(void *arg) {
    const char *path = arg;
    uint8_t response[16];
    uint32_t response_length = sizeof(response);
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval timeout = {5, 0};
    if (afdt_sync_client(path, (const uint8_t *)"terminate", 9, response, &response_length, &fd,
                         &timeout, &err) < 0)
        return 10;
    if (response_length != 4 || memcmp(response, "here", 4) != 0)
        return 11;
    if (fd < 0)
        return 12;
    /* The descriptor is the write end of the parent's pipe: prove it. */
    return write(fd, "!", 1) == 1 ? 0 : 13;
}

TEST(compat_event_base_new_server_answers_forked_sync_client) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    reset_globals();
    g.fd_to_send = p[1];
    g.base = event_base_new();
    const char *path = tmp_path("compat");
    CHECK_INT(afdt_create_server(path, g.base, handle_request, NULL, handle_error, &g.server, NULL),
              ==, 0);
    add_timer(10);
    pid_t pid = spawn(sync_child, (void *)path);
    CHECK_INT(event_base_dispatch(g.base), >=, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    char c = 0;
    CHECK_INT(read(p[0], &c, 1), ==, 1);
    CHECK_INT(c, ==, '!');
    CHECK_INT(g.timer_fired, ==, 1);
    CHECK_INT(g.requests, ==, 1);
    CHECK_INT(g.errors, ==, 0);
    event_base_free(g.base);
    close(p[0]);
    close(p[1]);
}

/* ---------------------------------------------------------------------------
 * The use the 2009 documentation suggests: hand a listening socket over and
 * serve HTTP on it with evhttp_accept_socket.
 * ------------------------------------------------------------------------- */

static struct {
    struct evhttp *http;
    int got_reply;
    int reply_code;
    char body[32];
} h;

static void http_handler(struct evhttp_request *req, void *arg) {
    (void)arg;
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add_printf(buf, "served");
    evhttp_send_reply(req, HTTP_OK, "OK", buf);
    evbuffer_free(buf);
}

static void http_done(struct evhttp_request *req, void *arg) {
    (void)arg;
    h.got_reply++;
    if (req == NULL)
        return;
    h.reply_code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof(h.body))
        n = sizeof(h.body) - 1;
    evbuffer_remove(in, h.body, n);
    h.body[n] = '\0';
    event_base_loopexit(g.base, NULL);
}

static void take_over_listener(const uint8_t *response, uint32_t response_length, int received_fd,
                               void *userdata) {
    handle_response(response, response_length, received_fd, userdata);
    if (received_fd < 0)
        return;
    h.http = evhttp_new(g.base);
    evhttp_set_gencb(h.http, http_handler, NULL);
    /* evhttp wants a non-blocking listener, and takes it over from here. */
    CHECK_INT(evutil_make_socket_nonblocking(received_fd), ==, 0);
    CHECK_INT(evhttp_accept_socket(h.http, received_fd), ==, 0);
}

TEST(compat_received_listening_socket_serves_http_with_evhttp) {
    reset_globals();
    memset(&h, 0, sizeof(h));
    g.base = event_base_new();

    /* The listening socket the "old" server hands over. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_INT(lfd, >=, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), ==, 0);
    CHECK_INT(listen(lfd, 16), ==, 0);
    socklen_t sl = sizeof(sin);
    CHECK_INT(getsockname(lfd, (struct sockaddr *)&sin, &sl), ==, 0);
    g.fd_to_send = lfd;

    const char *path = tmp_path("http");
    CHECK_INT(afdt_create_server(path, g.base, handle_request, NULL, handle_error, &g.server, NULL),
              ==, 0);
    struct timeval timeout = {5, 0};
    CHECK_INT(afdt_create_client(path, g.base, (const uint8_t *)"terminate", 9, take_over_listener,
                                 handle_error, &timeout, NULL),
              >=, 0);
    /* Run until the hand-over is done; the old owner then lets its copy go. */
    while (g.responses == 0 && g.errors == 0)
        CHECK_INT(event_base_loop(g.base, EVLOOP_ONCE), >=, 0);
    CHECK_INT(g.responses, ==, 1);
    CHECK(h.http != NULL);
    close(lfd);

    /* An HTTP request to the port: only the new owner can answer it. */
    struct evhttp_connection *conn =
        evhttp_connection_base_new(g.base, NULL, "127.0.0.1", ntohs(sin.sin_port));
    struct evhttp_request *req = evhttp_request_new(http_done, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    CHECK_INT(evhttp_make_request(conn, req, EVHTTP_REQ_GET, "/"), ==, 0);
    add_timer(5000); /* a guard: if nothing answers, the loop still ends */
    CHECK_INT(event_base_dispatch(g.base), >=, 0);
    CHECK_INT(h.got_reply, ==, 1);
    CHECK_INT(h.reply_code, ==, HTTP_OK);
    CHECK_STR(h.body, "served");
    CHECK_INT(g.timer_fired, ==, 0);

    event_del(&g.timer);
    evhttp_connection_free(conn);
    evhttp_free(h.http);
    event_base_free(g.base);
}
