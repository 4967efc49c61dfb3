/* SPDX-License-Identifier: BSD-3-Clause */
/* One generation of the demo's HTTP server: it takes the listening socket over, serves, hands it
 * on. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <afdt.h>

#include "handoff.h"

struct generation {
    int number;
    struct event_base *eb;
    struct evhttp *http;
    struct evhttp_bound_socket *bound; /* evhttp's hold on the listening socket */
    int listen_fd;                     /* owned by evhttp through @bound */
    void *afdt_server;                 /* NULL once closed */
    bool draining;
    unsigned long served;
};

static void on_http(struct evhttp_request *req, void *arg) {
    struct generation *g = arg;
    struct evbuffer *body = evbuffer_new();
    if (body == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(body, "gen %d\n", g->number);
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", "text/plain");
    /* A keep-alive client would otherwise keep coming back to a process that is leaving. */
    if (g->draining)
        evhttp_add_header(headers, "Connection", "close");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
    g->served++;
}

/* Called from inside the afdt request handler, when the successor serves. */
static void stop_serving(struct generation *g) {
    g->draining = true;
    /* Allowed inside the handler: the successor still gets this exchange's "ok". */
    afdt_close_server(g->afdt_server);
    g->afdt_server = NULL;
    /* Stop accepting. This closes our descriptor, but the successor's refers to the same
     * socket, so connections waiting in its backlog stay there for the successor. */
    evhttp_del_accept_socket(g->http, g->bound);
    g->bound = NULL;
    g->listen_fd = -1;
    /* Nothing more is added to the loop: event_base_dispatch() returns once the requests
     * already accepted are answered and their connections closed. */
}

static int on_afdt_request(const uint8_t *req, uint32_t req_len, uint8_t *resp, uint32_t *resp_len,
                           void *userdata) {
    struct generation *g = userdata;
    const char *answer = "no";
    int fd = -1;
    if (!g->draining && req_len == 8 && memcmp(req, "listener", 8) == 0) {
        answer = "ok";
        fd = g->listen_fd; /* the library sends it and leaves ours open */
    } else if (!g->draining && req_len == 4 && memcmp(req, "stop", 4) == 0) {
        stop_serving(g);
        answer = "ok";
    }
    *resp_len = (uint32_t)strlen(answer);
    memcpy(resp, answer, *resp_len);
    return fd;
}

static void on_afdt_error(const struct afdt_error_t *err, void *userdata) {
    struct generation *g = userdata;
    fprintf(stderr, "gen %d: afdt server: %s/%s: %s (%s)\n", g->number, afdt_phase_str(err->phase),
            afdt_operation_str(err->operation), err->message, strerror(errno));
}

/* Generation 1 opens the socket. Non-blocking matters: during a handover two processes
 * accept on it, and one may take the connection the other was woken for; a blocking accept
 * would then hang that loop. The flag belongs to the socket, so every generation sees it. */
static int open_listener(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(0)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int port_of(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0 || a.sin_family != AF_INET)
        return -1;
    return ntohs(a.sin_port);
}

int handoff_run_generation(int number, bool takeover, const char *path, int status_fd) {
    int fds_at_start = handoff_count_fds();
    struct generation g = {.number = number, .listen_fd = -1};
    int status = 1;
    int fd = -1;
    int64_t handover_us = 0;
    char me[16];
    snprintf(me, sizeof(me), "gen %d", number);

    signal(SIGPIPE, SIG_IGN); /* a client may hang up before its response is written */
    g.eb = event_base_new();
    g.http = g.eb ? evhttp_new(g.eb) : NULL;
    if (g.http == NULL)
        goto out;
    evhttp_set_gencb(g.http, on_http, &g);
    evhttp_set_timeout(g.http, 5); /* bounds how long a silent client can delay our exit */

    int64_t asked_us = handoff_now_us();
    if (takeover) {
        if (handoff_ask(path, "listener", &fd, me) < 0)
            goto out;
    } else if ((fd = open_listener()) < 0) {
        fprintf(stderr, "gen %d: listening socket: %s\n", number, strerror(errno));
        goto out;
    }
    int port = port_of(fd);
    g.bound = evhttp_accept_socket_with_handle(g.http, fd);
    if (g.bound == NULL) {
        close(fd);
        fprintf(stderr, "gen %d: evhttp_accept_socket_with_handle failed\n", number);
        goto out;
    }
    g.listen_fd = fd; /* now evhttp's */
    if (takeover)
        handover_us = handoff_now_us() - asked_us;
    handoff_report(status_fd, "serving %d %lld\n", port, (long long)handover_us);

    /* Both of us accept now; the predecessor stops and drains when told. */
    if (takeover && handoff_ask(path, "stop", NULL, me) < 0)
        goto out;
    /* Serve the next generation at the same name. The predecessor removed its file when it
     * closed its server, but one that crashed leaves it behind: remove whatever is there. */
    if (unlink(path) < 0 && errno != ENOENT) {
        fprintf(stderr, "gen %d: unlink %s: %s\n", number, path, strerror(errno));
        goto out;
    }
    if (afdt_create_server(path, g.eb, on_afdt_request, afdt_no_post, on_afdt_error, &g.afdt_server,
                           &g) < 0)
        goto out;
    handoff_report(status_fd, "ready\n");
    if (event_base_dispatch(g.eb) < 0)
        goto out;
    status = 0;

out:
    if (g.afdt_server)
        afdt_close_server(g.afdt_server);
    if (g.http)
        evhttp_free(g.http); /* closes the listening socket if it is still ours */
    if (g.eb)
        event_base_free(g.eb);
    handoff_report(status_fd, "exit %lu %d\n", g.served, handoff_count_fds() - fds_at_start);
    return status;
}
