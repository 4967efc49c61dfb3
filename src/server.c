/* SPDX-License-Identifier: BSD-3-Clause */
/* The libevent server's connections: accept, read one request, answer it, close. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "server.h"

/* Out of descriptors, accepting pauses this long (or until a connection
 * closes), so a full table costs no CPU. */
#define ACCEPT_PAUSE_US (100 * 1000)
/* Accepts per wakeup at most: enough to drain a burst, few enough that a
 * flood does not starve the connections already accepted. */
#define ACCEPT_BATCH 64
/* Full wakeups in a row before the batch grows: a light load that happens to
 * fill one wakeup should not pay for an accept4 that finds nothing. */
#define ACCEPT_GROW_AFTER 8

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
    struct afdt__conn_list *list; /* srv->waiting or srv->answering */
    struct conn *prev, *next;
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

void afdt__server_unref(struct afdt__server *srv) {
    if (--srv->refs > 0)
        return;
    afdt_close_done_t done = srv->on_done;
    void *done_userdata = srv->done_userdata;
    event_free(srv->accept_ev);
    event_free(srv->resume_ev);
    free(srv->allowed_uids);
    free(srv);
    if (done) /* nothing of the server is left in the loop */
        done(done_userdata);
}

/* Stop accepting for ACCEPT_PAUSE_US, or until a connection closes.  Without
 * the timer that ends the pause, accepting goes on rather than stalls. */
static void accept_pause(struct afdt__server *srv) {
    struct timeval tv = {0, ACCEPT_PAUSE_US};
    if (event_add(srv->resume_ev, &tv) < 0) {
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_EVENT_ADD, errno,
                   "could not pause accepting; accepting goes on");
        return;
    }
    event_del(srv->accept_ev);
    srv->paused = true;
}

static void accept_resume(struct afdt__server *srv) {
    if (!srv->paused || srv->closed)
        return;
    event_del(srv->resume_ev);
    if (event_add(srv->accept_ev, NULL) == 0) {
        srv->paused = false;
        return;
    }
    report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_EVENT_ADD, errno,
               "could not resume accepting connections; trying again shortly");
    if (srv->closed) /* by the error handler */
        return;
    struct timeval tv = {0, ACCEPT_PAUSE_US};
    if (event_add(srv->resume_ev, &tv) < 0)
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_EVENT_ADD, errno,
                   "could not schedule resuming; the next connection to close will");
}

static void list_leave(struct conn *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        c->list->oldest = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        c->list->newest = c->prev;
    c->prev = c->next = NULL;
}

static void list_join(struct conn *c, struct afdt__conn_list *list) {
    c->list = list;
    c->prev = list->newest;
    if (list->newest)
        list->newest->next = c;
    else
        list->oldest = c;
    list->newest = c;
}

static void conn_free(struct conn *c) {
    struct afdt__server *srv = c->srv;
    event_del(&c->ev);
    afdt__close(c->sock);
    list_leave(c);
    srv->nconns--;
    free(c->pending);
    free(c);
    /* A descriptor just came free: no need to wait out the pause. */
    accept_resume(srv);
    afdt__server_unref(srv);
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
    if (c->srv->aborting) /* the server was closed meanwhile: end at the next turn */
        event_active(&c->ev, EV_TIMEOUT, 0);
    else if (event_add(&c->ev, &tv) < 0) {
        struct afdt__fail f;
        afdt__fail(&f, AFDT_EVENT_ADD, errno, "");
        conn_end(c, &f);
    }
}

/* Back pressure on a named set: try again after @pause_us, or at the deadline if it comes
 * first (then on_conn ends the exchange as for any time-out). */
static void conn_pause(struct conn *c, int64_t pause_us) {
    int64_t left = c->deadline_us - afdt__now_us();
    int64_t wait = left < pause_us ? (left > 0 ? left : 0) : pause_us;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000000),
                         .tv_usec = (suseconds_t)(wait % 1000000)};
    event_del(&c->ev);
    event_assign(&c->ev, c->srv->eb, -1, 0, on_conn, c);
    if (c->srv->aborting)
        event_active(&c->ev, EV_TIMEOUT, 0);
    else if (event_add(&c->ev, &tv) < 0) {
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
    else if (r > 0)
        conn_end(c, NULL);
    else if (!p->named || p->named_out.wait == AFDT__WAIT_WRITE)
        conn_arm(c, EV_WRITE);
    else if (p->named_out.wait == AFDT__WAIT_READ)
        conn_arm(c, EV_READ);
    else
        conn_pause(c, p->named_out.pause_us);
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
    list_leave(c);
    list_join(c, &c->srv->answering);
    c->reply = &p->reply;
    p->reply = *reply;
    p->reply.content = p->content;
    p->reply.fds = p->fds;
    if (reply->content_length) /* content may be NULL when empty */
        memcpy(p->content, reply->content, reply->content_length);
    if (reply->nfds)
        memcpy(p->fds, reply->fds, sizeof(int) * reply->nfds);
    p->named = reply->named != NULL;
    if (p->named) {
        if (afdt__named_out_init(&p->named_out, p->content, reply->content_length, reply->named,
                                 reply->nnamed, &f) < 0) {
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
        (reply.named && reply.content_length > AFDT_MSGLEN - AFDT__NAMED_HDR_LEN) ||
        (reply.content == NULL && reply.content_length) || (reply.fds == NULL && reply.nfds)) {
        afdt__fail(&f, AFDT_FORMAT, 0,
                   "request handler answered a response longer than AFDT_MSGLEN, "
                   "more than AFDT_MAX_FDS descriptors, or NULL buffers");
        conn_end(c, &f);
        return;
    }
    /* Send from wherever the handler left the reply (it may repoint it). */
    struct afdt__frame_out out = {reply.content, reply.content_length, reply.fds, reply.nfds, 0, 0};
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
        if (c->in.got > sizeof(uint32_t) + c->in.len)
            report_new(c->srv, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0,
                       "client sent bytes after its request; they were ignored");
        conn_respond(c);
    }
}

static void on_conn(evutil_socket_t sock, short what, void *arg) {
    struct conn *c = arg;
    if (c->srv->aborting) {
        struct afdt__fail f;
        afdt__fail(&f, AFDT_NO_OPERATION, ECANCELED, "server closed: exchange aborted");
        conn_end(c, &f);
    } else if (sock < 0 && afdt__now_us() < c->deadline_us) { /* the end of a pause (conn_pause) */
        conn_write(c);
    } else if (what & EV_TIMEOUT) {
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

/* Give up a connection for a new one: the oldest still waiting for its
 * request, else the oldest whose response (or named set) waits on its
 * client.  Returns whether one was dropped.  A connection that is answered
 * at once is never one of them, so a flood of silent or stalling clients
 * cannot lock good ones out, whether the server is at its connection cap
 * (@at_cap) or out of descriptors: each new connection displaces the
 * flood's oldest, as fast as they come. */
static bool drop_oldest(struct afdt__server *srv, bool at_cap) {
    static const char *const why[2][2] = {
        {"out of descriptors: dropped the oldest connection still waiting for its request",
         "out of descriptors: dropped the oldest connection whose response waits on its client"},
        {"connection cap reached: dropped the oldest connection still waiting for its request",
         "connection cap reached: dropped the oldest connection whose response waits on its "
         "client"}};
    bool silent = srv->waiting.oldest != NULL;
    struct conn *c = silent ? srv->waiting.oldest : srv->answering.oldest;
    if (c == NULL)
        return false;
    struct afdt__fail f;
    afdt__fail(&f, silent ? AFDT_RECVMSG : AFDT_SENDMSG, ECONNABORTED, why[at_cap][!silent]);
    conn_end(c, &f);
    return true;
}

static void add_conn(struct afdt__server *srv, int sock) {
    if (srv->nconns >= srv->max_conns && !drop_oldest(srv, true)) {
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
    c->in.greedy = true; /* one request per connection: bytes after it are only reported */
    event_assign(&c->ev, srv->eb, sock, EV_READ, on_conn, c);
    list_join(c, &srv->waiting);
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

/* Whether a connection waits in the listening socket's backlog: 1 yes, 0
 * no, -1 unknown (poll failed). */
static int connection_waits(int lfd) {
    struct pollfd p = {.fd = lfd, .events = POLLIN, .revents = 0};
    int r = poll(&p, 1, 0);
    return r < 0 ? -1 : r == 1 && (p.revents & POLLIN);
}

void afdt__server_on_accept(evutil_socket_t lfd, short what, void *arg) {
    (void)what;
    struct afdt__server *srv = arg;
    srv->refs++;
    unsigned accepted = 0, limit = srv->accept_batch ? srv->accept_batch : 1;
    bool drained = false;
    for (unsigned i = 0; i < limit && !srv->closed; i++) {
        int sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (sock >= 0) {
            accepted++;
            add_conn(srv, sock);
            continue;
        }
        int e = errno;
        if (e == EINTR || e == ECONNABORTED)
            continue;
        if (e == EAGAIN || e == EWOULDBLOCK) {
            drained = true;
            break;
        }
        /* Out of descriptors, which accept4 says with an empty backlog too:
         * then there is nothing to do until someone connects (the
         * level-triggered event tells), and pausing would only keep the
         * next client waiting.  With someone there, a silent or stalled
         * connection makes room; failing that, pause. */
        int waits = e == EMFILE || e == ENFILE ? connection_waits(lfd) : -1;
        if (waits == 0) {
            drained = true;
            break;
        }
        if (waits > 0 && (srv->waiting.oldest || srv->answering.oldest)) {
            report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_ACCEPT, e,
                       "out of descriptors: the oldest silent or stalled connection makes room");
            drop_oldest(srv, false);
            continue;
        }
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
            accept_pause(srv);
        report_new(srv, AFDT_ACCEPT_CLIENT, AFDT_ACCEPT, e,
                   srv->paused ? "out of descriptors: accepting paused for up to 100 ms" : "");
        break;
    }
    /* Take about as many per wakeup as there are: one at a time under a light
     * load (no accept4 wasted on EAGAIN; the level-triggered event comes back
     * for more), in growing bursts once several wakeups in a row found more
     * waiting than they took. */
    if (drained) {
        srv->accept_batch = accepted ? accepted : 1;
        srv->full_wakeups = 0;
    } else if (accepted == limit && ++srv->full_wakeups >= ACCEPT_GROW_AFTER) {
        srv->accept_batch = limit * 2 > ACCEPT_BATCH ? ACCEPT_BATCH : limit * 2;
        srv->full_wakeups = 0;
    }
    afdt__server_unref(srv);
}

void afdt__server_abort_all(struct afdt__server *srv) {
    srv->aborting = true;
    struct afdt__conn_list *lists[2] = {&srv->waiting, &srv->answering};
    for (int i = 0; i < 2; i++)
        for (struct conn *c = lists[i]->oldest; c; c = c->next)
            event_active(&c->ev, EV_TIMEOUT, 0);
}

void afdt__server_on_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct afdt__server *srv = arg;
    srv->refs++; /* the error handler may close the server */
    accept_resume(srv);
    afdt__server_unref(srv);
}
