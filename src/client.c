/* SPDX-License-Identifier: BSD-3-Clause */
/* The libevent client: connect, send, receive, all without blocking the loop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "internal.h"

/* While the server's backlog is full, connect is retried after a pause that
 * doubles from 1 ms up to 64 ms. */
#define RETRY_FIRST_US 1000
#define RETRY_MAX_US (64 * 1000)
#define ARM_MAX_US ((int64_t)86400 * 1000000)

enum client_state { CONNECTING, SENDING, RECEIVING, NAMED };

struct client {
    struct event_base *eb;
    struct event ev;
    int sock;
    enum client_state state;
    int64_t deadline_us; /* < 0: none */
    int64_t retry_us;
    struct afdt__addr addr;
    afdt_response_handler_t on_response;
    afdt_response_ex_handler_t on_response_ex;
    afdt_error_handler_t on_error;
    void *userdata;
    struct afdt__frame_out out;
    struct afdt__frame_in in;
    struct afdt__named_in *named; /* while a named set comes in */
    struct afdt__trust trust;     /* its uids point into trusted_uids below */
    uint8_t req[AFDT_MSGLEN];
    uint8_t resp[AFDT_MSGLEN];
    int fds[AFDT_MAX_FDS];
    uint32_t trusted_uids[]; /* a copy of the caller's list: the connect may come later */
};

static void on_client(evutil_socket_t sock, short what, void *arg);

/* The exchange is over: make the one callback, then let the socket go.  The
 * callback comes first so that a caller who starts the next exchange from it
 * (the usual way) connects before this one's epoll removal and close, which
 * then cost it no latency. */
static void client_finish(struct client *c, enum afdt_phase phase, const struct afdt__fail *f) {
    if (f) {
        afdt__discard_all(c->fds, c->in.nfds);
        if (c->named)
            afdt__named_in_abort(c->named);
        struct afdt_error_t e = AFDT_ERROR_T_INIT;
        afdt__report(&e, phase, f);
        c->on_error(&e, c->userdata);
    } else if (c->on_response_ex) {
        /* Every descriptor, and the named set, are theirs now. */
        struct afdt_response r = {c->resp, c->in.len, c->fds, c->in.nfds, NULL, 0};
        if (c->named) {
            r.named = c->named->set;
            r.nnamed = c->named->n;
        }
        c->on_response_ex(&r, c->userdata);
    } else {
        c->on_response(c->resp, c->in.len, c->in.nfds ? c->fds[0] : -1, c->userdata);
    }
    event_del(&c->ev);
    afdt__close(c->sock);
    free(c->named);
    free(c);
}

static void client_fail(struct client *c, enum afdt_phase phase, enum afdt_operation op, int errnum,
                        const char *msg) {
    struct afdt__fail f;
    afdt__fail(&f, op, errnum, msg);
    client_finish(c, phase, &f);
}

/* Wait for @what on the socket (or, with 0, for the retry timer), within the
 * deadline. */
static int client_arm(struct client *c, short what, struct afdt__fail *f) {
    int64_t wait = what ? -1 : c->retry_us;
    if (c->deadline_us >= 0) {
        int64_t left = c->deadline_us - afdt__now_us();
        if (left < 0)
            left = 0;
        if (wait < 0 || left < wait)
            wait = left;
    }
    /* Arm at most a day ahead: a far deadline is simply re-armed. */
    if (wait > ARM_MAX_US)
        wait = ARM_MAX_US;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000000),
                         .tv_usec = (suseconds_t)(wait % 1000000)};
    /* Socket events persist, so the loop does not drop them from epoll before
     * the callback runs (client_finish does that, after the caller's). */
    if ((event_get_events(&c->ev) & (EV_READ | EV_WRITE)) != what) {
        event_del(&c->ev);
        event_assign(&c->ev, c->eb, what ? c->sock : -1, what ? what | EV_PERSIST : 0, on_client,
                     c);
    }
    if (event_add(&c->ev, wait >= 0 ? &tv : NULL) < 0)
        return afdt__fail(f, AFDT_EVENT_ADD, errno, "");
    return 0;
}

/* Move the exchange on as far as it goes without blocking.  Returns 1 when the
 * response is in, 0 when waiting, < 0 on failure. */
static int client_step(struct client *c, struct afdt__fail *f) {
    int r;
    if (c->state == CONNECTING) {
        r = afdt__connect_once(c->sock, &c->addr);
        if (r == -EAGAIN) {
            /* Backlog full: try again shortly, never past the deadline. */
            r = client_arm(c, 0, f);
            c->retry_us = c->retry_us * 2 > RETRY_MAX_US ? RETRY_MAX_US : c->retry_us * 2;
            return r;
        }
        if (r < 0)
            return afdt__fail(f, AFDT_CONNECT, -r, "");
        if (afdt__trust_peer(c->sock, &c->trust, f) < 0)
            return -1;
        c->state = SENDING;
    }
    if (c->state == SENDING) {
        r = afdt__frame_send(c->sock, &c->out, f);
        if (r <= 0)
            return r < 0 ? r : client_arm(c, EV_WRITE, f);
        c->state = RECEIVING;
    }
    if (c->state == RECEIVING) {
        r = afdt__frame_recv(c->sock, &c->in, f);
        if (r <= 0)
            return r < 0 ? r : client_arm(c, EV_READ, f);
        if (!c->on_response_ex || !afdt__is_named_header(c->resp, c->in.len, c->in.nfds))
            return 1;
        c->named = malloc(sizeof(*c->named));
        if (c->named == NULL)
            return afdt__fail(f, AFDT_MALLOC, ENOMEM, "");
        if (afdt__named_in_init(c->named, c->resp, &c->in.len, 0, f) < 0) {
            free(c->named);
            c->named = NULL;
            return -1;
        }
        c->state = NAMED;
    }
    r = afdt__named_in_step(c->sock, c->named, f);
    if (r == 0)
        return client_arm(c, c->named->acking ? EV_WRITE : EV_READ, f);
    return r;
}

static void on_client(evutil_socket_t sock, short what, void *arg) {
    struct client *c = arg;
    /* The first look for the answer (a timer: no socket) comes before any
     * deadline check, so even an exchange out of time takes an answer that
     * is already there. */
    bool first_look = sock < 0 && c->state == RECEIVING;
    if (!first_look && (what & EV_TIMEOUT) && c->deadline_us >= 0 &&
        afdt__now_us() >= c->deadline_us) {
        client_fail(c, AFDT_HANDLE_RESPONSE, AFDT_TIMEOUT, ETIMEDOUT,
                    c->state == CONNECTING ? "timed out waiting for room in the server's backlog"
                                           : "timed out waiting for the response");
        return;
    }
    /* Whatever fails from the loop is reported in AFDT_HANDLE_RESPONSE:
     * AFDT_CREATE_CLIENT always comes with afdt_create_client() returning < 0,
     * which 2009 programs rely on. */
    struct afdt__fail f;
    int r = client_step(c, &f);
    if (r != 0)
        client_finish(c, AFDT_HANDLE_RESPONSE, r > 0 ? NULL : &f);
}

static int create_client(const char *fname, struct event_base *eb, const uint8_t *request,
                         uint32_t request_length, afdt_response_handler_t response_handler,
                         afdt_response_ex_handler_t response_ex_handler,
                         afdt_error_handler_t error_handler, const struct timeval *timeout,
                         bool check, const struct afdt_client_options *opts, void *userdata) {
    struct afdt__fail f;
    struct client *c = NULL;
    struct afdt__frame_out req = {request, request_length, NULL, 0, 0, 0};
    struct afdt__trust trust = {false, NULL, 0};

    if (error_handler == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (eb == NULL || (response_handler == NULL && response_ex_handler == NULL)) {
        afdt__fail(&f, AFDT_EVENT_BASE_SET, EINVAL, "event_base or response_handler is NULL");
        goto fail;
    }
    if (afdt__frame_check(&req, &f) < 0 || (check && afdt__trust_parse(opts, &trust, &f) < 0))
        goto fail;
    c = malloc(sizeof(*c) + trust.n * sizeof(c->trusted_uids[0]));
    if (c == NULL) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        goto fail;
    }
    memset(c, 0, offsetof(struct client, req));
    c->sock = -1;
    c->trust = trust;
    if (trust.n) {
        memcpy(c->trusted_uids, trust.uids, trust.n * sizeof(c->trusted_uids[0]));
        c->trust.uids = c->trusted_uids;
    }
    if (afdt__addr_parse(fname, &c->addr, &f) < 0 || afdt__trust_name(&c->addr, &c->trust, &f) < 0)
        goto fail;
    c->sock = afdt__socket(SOCK_NONBLOCK, &f);
    if (c->sock < 0)
        goto fail;
    c->eb = eb;
    c->deadline_us = afdt__deadline(timeout);
    c->retry_us = RETRY_FIRST_US;
    c->on_response = response_handler;
    c->on_response_ex = response_ex_handler;
    c->on_error = error_handler;
    c->userdata = userdata;
    if (request_length)
        memcpy(c->req, request, request_length);
    c->out = req;
    c->out.content = c->req;
    c->in.buf = c->resp;
    c->in.cap = AFDT_MSGLEN;
    c->in.fds = c->fds;
    if (response_ex_handler) {
        /* Exact reads: a named set's frames follow the first one. */
        c->in.fds_cap = AFDT_MAX_FDS;
        c->in.excess_fails = true;
    } else {
        c->in.fds_cap = 1;
        c->in.greedy = true; /* the connection is ours alone */
    }
    event_assign(&c->ev, eb, -1, 0, on_client, c);

    /* Connect and send now if the socket allows; the response is always
     * delivered from the loop, never from inside this call. */
    short what = 0; /* 0: the retry timer, while the backlog is full */
    int r = afdt__connect_once(c->sock, &c->addr);
    if (r < 0 && r != -EAGAIN) {
        afdt__fail(&f, AFDT_CONNECT, -r, "");
        goto fail;
    }
    if (r == 0) {
        if (afdt__trust_peer(c->sock, &c->trust, &f) < 0)
            goto fail;
        c->state = SENDING;
        r = afdt__frame_send(c->sock, &c->out, &f);
        if (r < 0)
            goto fail;
        if (r > 0)
            c->state = RECEIVING;
        what = r > 0 ? EV_READ : EV_WRITE;
    }
    if (what == EV_READ && event_base_get_num_events(eb, EVENT_BASE_COUNT_ACTIVE) > 0) {
        /* The request is out, and the loop has other callbacks to run first:
         * look for the answer on its next turn before registering with
         * epoll.  By then the answer is often there (nearly always with many
         * exchanges in flight), and an exchange that never waits saves
         * epoll's add and remove, about a tenth of its client's CPU.  (With
         * nothing else to run, the next turn comes at once and the look
         * would only cost a recvmsg.)  The look is a timer due at once, so it
         * runs after the loop has polled again and never ahead of exchanges
         * already waiting.  A look that finds nothing arms as usual. */
        static const struct timeval now = {0, 0};
        if (event_add(&c->ev, &now) < 0) {
            afdt__fail(&f, AFDT_EVENT_ADD, errno, "");
            goto fail;
        }
        return 0;
    }
    if (client_arm(c, what, &f) < 0)
        goto fail;
    return 0;

fail:
    if (c) {
        afdt__close(c->sock);
        free(c);
    }
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    afdt__report(&e, AFDT_CREATE_CLIENT, &f);
    error_handler(&e, userdata);
    errno = f.errnum;
    return -1;
}

AFDT_EXPORT int afdt_create_client(const char *fname, struct event_base *eb, const uint8_t *request,
                                   uint32_t request_length,
                                   afdt_response_handler_t response_handler,
                                   afdt_error_handler_t error_handler,
                                   const struct timeval *timeout, void *userdata) {
    return create_client(fname, eb, request, request_length, response_handler, NULL, error_handler,
                         timeout, false, NULL, userdata);
}

AFDT_EXPORT int afdt_create_client_ex(const char *fname, struct event_base *eb,
                                      const uint8_t *request, uint32_t request_length,
                                      afdt_response_ex_handler_t response_handler,
                                      afdt_error_handler_t error_handler,
                                      const struct timeval *timeout, void *userdata) {
    return create_client(fname, eb, request, request_length, NULL, response_handler, error_handler,
                         timeout, false, NULL, userdata);
}

AFDT_EXPORT int afdt_create_client_opts(const char *fname, struct event_base *eb,
                                        const uint8_t *request, uint32_t request_length,
                                        afdt_response_ex_handler_t response_handler,
                                        afdt_error_handler_t error_handler,
                                        const struct timeval *timeout,
                                        const struct afdt_client_options *opts, void *userdata) {
    return create_client(fname, eb, request, request_length, NULL, response_handler, error_handler,
                         timeout, true, opts, userdata);
}
