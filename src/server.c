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

#define CONN_TIMEOUT_MS 10000
#define MAX_CONNS 1024
/* Out of descriptors, accepting pauses this long (or until a connection
 * closes), so a full table costs no CPU. */
#define ACCEPT_PAUSE_US (100 * 1000)
/* Accepts per wakeup: enough to drain a burst, few enough that a flood does
 * not starve the connections already accepted. */
#define ACCEPT_BATCH 64

struct afdt__server;

/* A response that could not go out at once, or a named set: it lives on the
 * heap until sent (and, for a named set, acknowledged). */
struct pending {
    struct afdt_reply reply;
    struct afdt__frame_out out; /* single frame */
    bool named;
    uint8_t content[AFDT_MSGLEN];
    int fds[AFDT_MAX_FDS];
    struct afdt__named_out named_out;
};

struct conn {
    struct afdt__server *srv;
    struct conn *prev, *next; /* srv's list, oldest first */
    struct event ev;
    int sock;
    int sent_fd; /* what a 2009-style request handler returned */
    bool refused;
    const struct afdt_reply *reply; /* once the request handler answered */
    struct afdt_peer peer;
    int64_t deadline_us;
    struct pending *pending;
    struct afdt__frame_in in;
    uint8_t req[AFDT_MSGLEN];
};

struct afdt__server {
    struct event_base *eb;
    struct event *accept_ev;
    struct event *resume_ev;
    int listen_fd;
    afdt_request_handler_t on_request;
    afdt_post_handler_t on_post;
    afdt_request_ex_handler_t on_request_ex;
    afdt_post_ex_handler_t on_post_ex;
    afdt_authorize_t authorize;
    afdt_error_handler_t on_error;
    void *userdata;
    uint32_t *allowed_uids;
    uint32_t n_allowed_uids;
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
    bool keep_file;
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
    free(srv->allowed_uids);
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
    free(c->pending);
    free(c);
    /* A descriptor just came free: no need to wait out the pause. */
    accept_resume(srv);
    server_unref(srv);
}

/* The exchange is over, well (@f NULL) or not: report, run the post handler,
 * let the connection go.  The extended post handler runs either way, so the
 * server can release what its reply held; the 2009 one only after a send. */
static void conn_end(struct conn *c, const struct afdt__fail *f) {
    struct afdt__server *srv = c->srv;
    if (f)
        report(srv, AFDT_HANDLE_REQUEST, f);
    if (c->reply && !c->refused && srv->on_post_ex)
        srv->on_post_ex(&c->peer, c->req, c->in.len, c->reply,
                        f ? (f->errnum ? f->errnum : EPROTO) : 0, srv->userdata);
    else if (c->reply && !c->refused && !f && srv->on_post)
        srv->on_post(c->req, c->in.len, c->reply->content, c->reply->content_length, c->sent_fd,
                     srv->userdata);
    conn_free(c);
}

/* Wait for the socket again, within what is left of the connection's deadline. */
static void conn_arm(struct conn *c, short what) {
    int64_t left = c->deadline_us - afdt__now_us();
    if (left < 0)
        left = 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000000),
                         .tv_usec = (suseconds_t)(left % 1000000)};
    event_del(&c->ev);
    event_assign(&c->ev, c->srv->eb, c->sock, what, on_conn, c);
    if (event_add(&c->ev, &tv) < 0) {
        struct afdt__fail f;
        afdt__fail(&f, AFDT_EVENT_ADD, errno, "");
        conn_end(c, &f);
    }
}

static void conn_write(struct conn *c) {
    struct pending *p = c->pending;
    struct afdt__fail f;
    int r = p->named ? afdt__named_out_step(c->sock, &p->named_out, &f)
                     : afdt__frame_send(c->sock, &p->out, &f);
    if (r < 0)
        conn_end(c, &f);
    else if (r == 0)
        conn_arm(c, p->named && p->named_out.awaiting_ack ? EV_READ : EV_WRITE);
    else
        conn_end(c, NULL);
}

/* Keep the reply on the heap and go on from the loop. */
static void conn_defer(struct conn *c, const struct afdt_reply *reply,
                       const struct afdt__frame_out *out) {
    struct afdt__fail f;
    struct pending *p = malloc(sizeof(*p));
    if (p == NULL) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        conn_end(c, &f);
        return;
    }
    c->pending = p;
    c->reply = &p->reply;
    p->reply = *reply;
    p->reply.content = p->content;
    p->reply.fds = p->fds;
    memcpy(p->content, reply->content, reply->content_length);
    memcpy(p->fds, reply->fds, sizeof(int) * reply->nfds);
    p->named = reply->named != NULL;
    if (p->named) {
        if (afdt__named_out_init(&p->named_out, p->content, reply->content_length, reply->named,
                                 reply->nnamed, 0, &f) < 0) {
            conn_end(c, &f);
            return;
        }
    } else {
        p->out = *out;
        p->out.content = p->content;
        p->out.fds = p->fds;
    }
    conn_write(c);
}

/* Whether the peer may ask: the uid allow-list, then the callback. */
static bool conn_allowed(struct conn *c) {
    struct afdt__server *srv = c->srv;
    if (srv->n_allowed_uids) {
        bool listed = false;
        for (uint32_t i = 0; i < srv->n_allowed_uids && !listed; i++)
            listed = srv->allowed_uids[i] == c->peer.uid;
        if (!listed)
            return false;
    }
    return srv->authorize == NULL || srv->authorize(&c->peer, srv->userdata);
}

static void conn_respond(struct conn *c) {
    struct afdt__server *srv = c->srv;
    uint8_t content[AFDT_MSGLEN];
    int fds[AFDT_MAX_FDS];
    struct afdt_reply reply = {content, 0, fds, 0, NULL, 0};
    struct afdt__fail f;

    if (!conn_allowed(c)) {
        c->refused = true;
        report_new(srv, AFDT_HANDLE_REQUEST, AFDT_NO_OPERATION, EACCES,
                   "peer refused by the server's policy");
        reply.content_length = sizeof(AFDT_REFUSED_RESPONSE) - 1;
        memcpy(content, AFDT_REFUSED_RESPONSE, reply.content_length);
    } else if (srv->on_request_ex) {
        if (srv->on_request_ex(&c->peer, c->req, c->in.len, &reply, srv->userdata) < 0) {
            conn_free(c); /* the handler chose to answer nothing */
            return;
        }
    } else {
        reply.content_length = AFDT_MSGLEN;
        c->sent_fd =
            srv->on_request(c->req, c->in.len, content, &reply.content_length, srv->userdata);
        fds[0] = c->sent_fd;
        reply.nfds = c->sent_fd >= 0;
    }
    c->reply = &reply; /* until conn_defer moves it to the heap */
    if (reply.content_length > AFDT_MSGLEN || reply.nfds > AFDT_MAX_FDS ||
        (reply.named && reply.content_length > AFDT_MSGLEN - AFDT__NAMED_HDR_LEN)) {
        afdt__fail(&f, AFDT_FORMAT, 0,
                   "request handler answered a response longer than AFDT_MSGLEN "
                   "or more than AFDT_MAX_FDS descriptors");
        conn_end(c, &f);
        return;
    }
    struct afdt__frame_out out = {content, reply.content_length, fds, reply.nfds, 0, 0};
    int r = reply.named ? 0 : afdt__frame_send(c->sock, &out, &f);
    if (r != 0)
        conn_end(c, r < 0 ? &f : NULL);
    else
        conn_defer(c, &reply, &out); /* rare for one frame: it is far smaller than a buffer */
}

static void conn_read(struct conn *c) {
    struct afdt__fail f;
    int r = afdt__frame_recv(c->sock, &c->in, &f);
    if (r < 0) {
        conn_end(c, &f);
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
                   c->pending ? "client did not take its response before the deadline"
                              : "client sent no complete request before the deadline");
        conn_end(c, &f);
    } else if (c->pending) {
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
        if (!c->pending) {
            struct afdt__fail f;
            afdt__fail(&f, AFDT_RECVMSG, ECONNABORTED,
                       "connection cap reached: dropped the oldest connection "
                       "still waiting for its request");
            conn_end(c, &f);
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
    if (srv->on_request_ex) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c->peer.pid = cred.pid;
            c->peer.uid = cred.uid;
            c->peer.gid = cred.gid;
        } else {
            /* Unknown peers get ids nobody is allowed by. */
            c->peer = (struct afdt_peer){-1, UINT32_MAX, UINT32_MAX};
        }
    }
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

/* The part of the options this library knows, with defaults filled in. */
static void read_options(const struct afdt_server_options *in, struct afdt_server_options *o) {
    memset(o, 0, sizeof(*o));
    memcpy(o, in, in->size < sizeof(*o) ? in->size : sizeof(*o));
    if (o->conn_timeout_ms == 0)
        o->conn_timeout_ms = CONN_TIMEOUT_MS;
    if (o->max_conns == 0)
        o->max_conns = MAX_CONNS;
}

/* Both create calls end here, with the options and the handlers settled. */
static int create_server(const char *fname, struct event_base *eb,
                         const struct afdt_server_options *o, afdt_request_handler_t on_request,
                         afdt_post_handler_t on_post, bool ex, void **out_close_handle) {
    struct afdt__fail f;
    struct afdt__server *srv = NULL;
    struct afdt__addr a;
    int lfd = -1;

    if (eb == NULL || (!ex && on_request == NULL)) {
        afdt__fail(&f, AFDT_EVENT_BASE_SET, EINVAL, "event_base or request_handler is NULL");
        goto fail;
    }
    if (ex && o->request_handler == NULL) {
        afdt__fail(&f, AFDT_NO_OPERATION, EINVAL, "options have no request_handler");
        goto fail;
    }
    if (o->n_allowed_uids && o->allowed_uids == NULL) {
        afdt__fail(&f, AFDT_NO_OPERATION, EINVAL, "allowed_uids is NULL");
        goto fail;
    }
    if (afdt__addr_parse(fname, &a, &f) < 0)
        goto fail;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL ||
        (o->n_allowed_uids && !(srv->allowed_uids = calloc(o->n_allowed_uids, sizeof(uint32_t))))) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        goto fail;
    }
    if (o->n_allowed_uids)
        memcpy(srv->allowed_uids, o->allowed_uids, sizeof(uint32_t) * o->n_allowed_uids);
    lfd = (o->flags & AFDT_SERVER_REPLACE_STALE)
              ? afdt__listen_replacing(&a, SOCK_NONBLOCK, o->socket_mode, &f)
              : afdt__listen_addr(&a, SOCK_NONBLOCK, o->socket_mode, &f);
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
    srv->on_request = on_request;
    srv->on_post = on_post;
    srv->on_request_ex = o->request_handler;
    srv->on_post_ex = o->post_handler;
    srv->authorize = o->authorize;
    srv->on_error = o->error_handler;
    srv->userdata = o->userdata;
    srv->n_allowed_uids = o->n_allowed_uids;
    srv->max_conns = o->max_conns;
    srv->conn_timeout_us = (int64_t)o->conn_timeout_ms * 1000;
    srv->keep_file = (o->flags & AFDT_SERVER_KEEP_FILE) != 0;
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
        free(srv->allowed_uids);
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
    o->error_handler(&e, o->userdata);
    errno = f.errnum;
    return -1;
}

AFDT_EXPORT int afdt_create_server(const char *fname, struct event_base *eb,
                                   afdt_request_handler_t request_handler,
                                   afdt_post_handler_t post_handler,
                                   afdt_error_handler_t error_handler, void **out_close_handle,
                                   void *userdata) {
    if (error_handler == NULL) {
        errno = EINVAL;
        return -1;
    }
    const struct afdt_server_options given = {
        .size = sizeof(given), .error_handler = error_handler, .userdata = userdata};
    struct afdt_server_options o;
    read_options(&given, &o);
    return create_server(fname, eb, &o, request_handler, post_handler ? post_handler : afdt_no_post,
                         false, out_close_handle);
}

AFDT_EXPORT int afdt_create_server_ex(const char *fname, struct event_base *eb,
                                      const struct afdt_server_options *opts,
                                      void **out_close_handle) {
    const size_t need = offsetof(struct afdt_server_options, userdata) + sizeof(void *);
    if (opts == NULL || opts->size < need || opts->error_handler == NULL) {
        errno = EINVAL;
        return -1;
    }
    struct afdt_server_options o;
    read_options(opts, &o);
    return create_server(fname, eb, &o, NULL, NULL, true, out_close_handle);
}

/* Remove the socket file if it is still the one we bound: a successor may
 * have replaced it (unlink and bind anew) and must keep its own. */
static void remove_own_file(struct afdt__server *srv) {
    struct stat st;
    if (srv->keep_file || srv->addr.abstract || srv->file_ino == 0)
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
