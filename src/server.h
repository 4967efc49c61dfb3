/* SPDX-License-Identifier: BSD-3-Clause */
/* The server's state, shared by server.c (connections) and server_create.c. */
#ifndef AFDT_SERVER_H
#define AFDT_SERVER_H

#include <sys/types.h>

#include <event2/event.h>

#include "internal.h"

struct conn;

/* Connections in the order they joined, oldest first. */
struct afdt__conn_list {
    struct conn *oldest, *newest;
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
    /* Every connection is on one of two lists: waiting, until its request
     * is in; answering, while its response waits for the client to take it
     * (or to acknowledge a named set). */
    struct afdt__conn_list waiting, answering;
    unsigned nconns;
    unsigned max_conns;
    unsigned accept_batch; /* accepts to try at the next wakeup */
    unsigned full_wakeups; /* wakeups in a row that took a full batch */
    int64_t conn_timeout_us;
    /* One for the open server, one per connection, one per user callback
     * made outside a connection: afdt_close_server() may run inside any of
     * them, and the memory goes when the last is gone. */
    unsigned refs;
    bool closed;
    bool aborting;             /* afdt_close_server_ex(AFDT_CLOSE_ABORT): end every exchange */
    afdt_close_done_t on_done; /* once the memory is gone */
    void *done_userdata;
    bool paused;
    bool keep_file;
    /* The socket file we bound, to remove on close if it is still ours. */
    struct afdt__addr addr;
    dev_t file_dev;
    ino_t file_ino;
};

/* Drop one reference; the last one frees the server. */
AFDT_HIDDEN void afdt__server_unref(struct afdt__server *srv);
/* Have every open connection end at the loop's next turn, with ECANCELED. */
AFDT_HIDDEN void afdt__server_abort_all(struct afdt__server *srv);
/* libevent callbacks: the listening socket is readable; the accept pause is over. */
AFDT_HIDDEN void afdt__server_on_accept(evutil_socket_t lfd, short what, void *arg);
AFDT_HIDDEN void afdt__server_on_resume(evutil_socket_t fd, short what, void *arg);

#endif /* AFDT_SERVER_H */
