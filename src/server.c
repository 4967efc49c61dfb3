/* SPDX-License-Identifier: BSD-3-Clause */
/* The libevent server: accept, read one request, answer it, close. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "internal.h"

#define CONN_TIMEOUT_US (10 * 1000000)
#define MAX_CONNS 1024
/* Out of descriptors, accepting pauses this long (or until a connection
 * closes), so a full table costs no CPU. */
#define ACCEPT_PAUSE_US (100 * 1000)
/* Accepts per wakeup: enough to drain a burst, few enough that a flood does
 * not starve the connections already accepted. */
#define ACCEPT_BATCH 64

struct afdt__server;

struct conn {
    struct afdt__server *srv;
    struct conn *prev, *next; /* srv's list, oldest first */
    struct event ev;
    int sock;
    bool writing;
    int64_t deadline_us;
    struct afdt__frame_in in;
    struct afdt__frame_out out; /* only while a response waits for room */
    int sent_fd;
    uint8_t *resp; /* heap copy of the response, only while it waits */
    uint8_t req[AFDT_MSGLEN];
};

struct afdt__server {
    struct event_base *eb;
    struct event *accept_ev;
    struct event *resume_ev;
    int listen_fd;
    afdt_request_handler_t on_request;
    afdt_post_handler_t on_post;
    afdt_error_handler_t on_error;
    void *userdata;
    struct conn *oldest, *newest;
    unsigned nconns;
    unsigned max_conns;
    int64_t conn_timeout_us;
    /* One for the open server, one per connection, one per user callback
     * made outside a connection: afdt_close_server() may run inside any of
     * them, and the memory goes when the last is gone. */
    unsigned refs;
    bool closed;
    bool paused;
    /* The socket file we bound, to remove on close if it is still ours. */
    struct afdt__addr addr;
    dev_t file_dev;
    ino_t file_ino;
};

static void on_conn(evutil_socket_t sock, short what, void *arg);

static void report(struct afdt__server *srv, enum afdt_phase phase, const struct afdt__fail *f) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    afdt__report(&e, phase, f);
    srv->on_error(&e, srv->userdata);
}

static void report_new(struct afdt__server *srv, enum afdt_phase phase, enum afdt_operation op,
                       int errnum, const char *msg) {
    struct afdt__fail f;
    afdt__fail(&f, op, errnum, msg);
    report(srv, phase, &f);
}

static void server_unref(struct afdt__server *srv) {
    if (--srv->refs > 0)
        return;
    event_free(srv->accept_ev);
    event_free(srv->resume_ev);
    free(srv);
}

static void accept_resume(struct afdt__server *srv) {
    if (!srv->paused || srv->closed)
        return;
    srv->paused = false;
    event_del(srv->resume_ev);
    if (event_add(srv->accept_ev, NULL) < 0)
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_EVENT_ADD, errno,
                   "could not resume accepting connections");
}

static void conn_free(struct conn *c) {
    struct afdt__server *srv = c->srv;
    event_del(&c->ev);
    afdt__close(c->sock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->oldest = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->newest = c->prev;
    srv->nconns--;
    free(c->resp);
    free(c);
    /* A descriptor just came free: no need to wait out the pause. */
    accept_resume(srv);
    server_unref(srv);
}

static void conn_fail(struct conn *c, const struct afdt__fail *f) {
    report(c->srv, AFDT_HANDLE_REQUEST, f);
    conn_free(c);
}

/* Wait for the socket again, within what is left of the connection's deadline. */
static void conn_arm(struct conn *c, short what) {
    int64_t left = c->deadline_us - afdt__now_us();
    if (left < 0)
        left = 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000000),
                         .tv_usec = (suseconds_t)(left % 1000000)};
    struct afdt__fail f;
    event_del(&c->ev);
    event_assign(&c->ev, c->srv->eb, c->sock, what, on_conn, c);
    if (event_add(&c->ev, &tv) < 0) {
        afdt__fail(&f, AFDT_EVENT_ADD, errno, "");
        conn_fail(c, &f);
    }
}

static void conn_done(struct conn *c, const uint8_t *resp) {
    struct afdt__server *srv = c->srv;
    srv->on_post(c->req, c->in.len, resp, c->out.len, c->sent_fd, srv->userdata);
    conn_free(c);
}

static void conn_write(struct conn *c) {
    struct afdt__fail f;
    int r = afdt__frame_send(c->sock, &c->out, &f);
    if (r < 0)
        conn_fail(c, &f);
    else if (r == 0)
        conn_arm(c, EV_WRITE);
    else
        conn_done(c, c->out.content);
}

static void conn_respond(struct conn *c) {
    struct afdt__server *srv = c->srv;
    uint8_t resp[AFDT_MSGLEN];
    uint32_t rlen = AFDT_MSGLEN;
    c->sent_fd = srv->on_request(c->req, c->in.len, resp, &rlen, srv->userdata);
    if (rlen > AFDT_MSGLEN) {
        struct afdt__fail f;
        afdt__fail(&f, AFDT_FORMAT, 0, "request handler set a response longer than AFDT_MSGLEN");
        conn_fail(c, &f);
        return;
    }
    c->out = (struct afdt__frame_out){resp, rlen, &c->sent_fd, c->sent_fd >= 0, 0, 0};
    struct afdt__fail f;
    int r = afdt__frame_send(c->sock, &c->out, &f);
    if (r < 0) {
        conn_fail(c, &f);
    } else if (r > 0) {
        conn_done(c, resp);
    } else {
        /* No room yet (rare: a frame is far smaller than a socket buffer). */
        c->resp = malloc(AFDT_MSGLEN);
        if (c->resp == NULL) {
            afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
            conn_fail(c, &f);
            return;
        }
        memcpy(c->resp, resp, rlen);
        c->out.content = c->resp;
        c->writing = true;
        conn_arm(c, EV_WRITE);
    }
}

static void conn_read(struct conn *c) {
    struct afdt__fail f;
    int r = afdt__frame_recv(c->sock, &c->in, &f);
    if (r < 0) {
        conn_fail(c, &f);
    } else if (r == 0) {
        conn_arm(c, EV_READ);
    } else {
        if (c->in.excess)
            report_new(c->srv, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0,
                       "client sent descriptors with its request; they were closed");
        conn_respond(c);
    }
}

static void on_conn(evutil_socket_t sock, short what, void *arg) {
    (void)sock;
    struct conn *c = arg;
    if (what & EV_TIMEOUT) {
        struct afdt__fail f;
        afdt__fail(&f, AFDT_TIMEOUT, ETIMEDOUT,
                   c->writing ? "client did not take its response before the deadline"
                              : "client sent no complete request before the deadline");
        conn_fail(c, &f);
    } else if (c->writing) {
        conn_write(c);
    } else {
        conn_read(c);
    }
}

/* At the cap, make room by dropping the oldest connection still waiting for
 * its request: a flood of silent clients then cannot lock good ones out. */
static bool make_room(struct afdt__server *srv) {
    if (srv->nconns < srv->max_conns)
        return true;
    for (struct conn *c = srv->oldest; c; c = c->next) {
        if (!c->writing) {
            struct afdt__fail f;
            afdt__fail(&f, AFDT_RECVMSG, ECONNABORTED,
                       "connection cap reached: dropped the oldest connection "
                       "still waiting for its request");
            conn_fail(c, &f);
            return true;
        }
    }
    return false;
}

static void add_conn(struct afdt__server *srv, int sock) {
    if (!make_room(srv)) {
        afdt__close(sock);
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_ACCEPT, ECONNABORTED,
                   "connection cap reached: refused a new connection");
        return;
    }
    struct conn *c = malloc(sizeof(*c));
    if (c == NULL) {
        afdt__close(sock);
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_MALLOC, ENOMEM, "");
        return;
    }
    memset(c, 0, offsetof(struct conn, req));
    c->srv = srv;
    c->sock = sock; /* now the connection's */
    c->sent_fd = -1;
    c->deadline_us = afdt__now_us() + srv->conn_timeout_us;
    c->in.buf = c->req;
    c->in.cap = AFDT_MSGLEN;
    c->in.greedy = true; /* one request per connection: nothing after it matters */
    event_assign(&c->ev, srv->eb, sock, EV_READ, on_conn, c);
    c->prev = srv->newest;
    if (srv->newest)
        srv->newest->next = c;
    else
        srv->oldest = c;
    srv->newest = c;
    srv->nconns++;
    srv->refs++;
    /* Clients usually send their request right after connecting: try it now
     * and save a trip through the loop. */
    conn_read(c);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg) {
    (void)what;
    struct afdt__server *srv = arg;
    srv->refs++;
    for (int i = 0; i < ACCEPT_BATCH && !srv->closed; i++) {
        int sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (sock >= 0) {
            add_conn(srv, sock);
            continue;
        }
        int e = errno;
        if (e == EINTR || e == ECONNABORTED)
            continue;
        if (e == EAGAIN || e == EWOULDBLOCK)
            break;
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
            struct timeval tv = {0, ACCEPT_PAUSE_US};
            event_del(srv->accept_ev);
            event_add(srv->resume_ev, &tv);
            srv->paused = true;
        }
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_ACCEPT, e,
                   srv->paused ? "out of descriptors: accepting paused for up to 100 ms" : "");
        break;
    }
    server_unref(srv);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    accept_resume(arg);
}

AFDT_EXPORT void afdt_no_post(const uint8_t *request, uint32_t request_length,
                              const uint8_t *response, uint32_t response_length, int sent_fd,
                              void *userdata) {
    (void)request;
    (void)request_length;
    (void)response;
    (void)response_length;
    (void)sent_fd;
    (void)userdata;
}

AFDT_EXPORT int afdt_create_server(const char *fname, struct event_base *eb,
                                   afdt_request_handler_t request_handler,
                                   afdt_post_handler_t post_handler,
                                   afdt_error_handler_t error_handler, void **out_close_handle,
                                   void *userdata) {
    struct afdt__fail f;
    struct afdt__server *srv = NULL;
    struct afdt__addr a;
    int lfd = -1;

    if (error_handler == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (eb == NULL || request_handler == NULL) {
        afdt__fail(&f, AFDT_EVENT_BASE_SET, EINVAL, "event_base or request_handler is NULL");
        goto fail;
    }
    if (afdt__addr_parse(fname, &a, &f) < 0)
        goto fail;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        goto fail;
    }
    lfd = afdt__listen_addr(&a, SOCK_NONBLOCK, &f);
    if (lfd < 0)
        goto fail;
    srv->addr = a;
    struct stat st;
    if (!a.abstract && stat(a.sun.sun_path, &st) == 0) {
        srv->file_dev = st.st_dev;
        srv->file_ino = st.st_ino;
    }
    srv->accept_ev = event_new(eb, lfd, EV_READ | EV_PERSIST, on_accept, srv);
    srv->resume_ev = evtimer_new(eb, on_resume, srv);
    if (srv->accept_ev == NULL || srv->resume_ev == NULL) {
        afdt__fail(&f, AFDT_EVENT_BASE_SET, ENOMEM, "could not create events");
        goto fail;
    }
    if (event_add(srv->accept_ev, NULL) < 0) {
        afdt__fail(&f, AFDT_EVENT_ADD, errno, "");
        goto fail;
    }
    srv->eb = eb;
    srv->listen_fd = lfd;
    srv->on_request = request_handler;
    srv->on_post = post_handler ? post_handler : afdt_no_post;
    srv->on_error = error_handler;
    srv->userdata = userdata;
    srv->max_conns = MAX_CONNS;
    srv->conn_timeout_us = CONN_TIMEOUT_US;
    srv->refs = 1;
    if (out_close_handle)
        *out_close_handle = srv;
    return 0;

fail:
    if (srv) {
        if (srv->accept_ev)
            event_free(srv->accept_ev);
        if (srv->resume_ev)
            event_free(srv->resume_ev);
        free(srv);
    }
    if (lfd >= 0) {
        /* We bound the file a moment ago and nobody has used it. */
        if (!a.abstract)
            (void)unlink(a.sun.sun_path);
        afdt__close(lfd);
    }
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    afdt__report(&e, AFDT_CREATE_SERVER, &f);
    error_handler(&e, userdata);
    errno = f.errnum;
    return -1;
}

/* Remove the socket file if it is still the one we bound: a successor may
 * have replaced it (unlink and bind anew) and must keep its own. */
static void remove_own_file(struct afdt__server *srv) {
    struct stat st;
    if (srv->addr.abstract || srv->file_ino == 0)
        return;
    if (stat(srv->addr.sun.sun_path, &st) == 0 && st.st_dev == srv->file_dev &&
        st.st_ino == srv->file_ino && S_ISSOCK(st.st_mode))
        (void)unlink(srv->addr.sun.sun_path);
}

AFDT_EXPORT int afdt_close_server(void *close_handle) {
    struct afdt__server *srv = close_handle;
    if (srv == NULL || srv->closed) {
        errno = EINVAL;
        return -1;
    }
    srv->closed = true;
    event_del(srv->accept_ev);
    event_del(srv->resume_ev);
    /* Unlink before close: once closed, the name could be taken by another
     * server that we must not remove. */
    remove_own_file(srv);
    afdt__close(srv->listen_fd);
    srv->listen_fd = -1;
    server_unref(srv);
    errno = 0;
    return 0;
}
