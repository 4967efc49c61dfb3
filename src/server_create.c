/* SPDX-License-Identifier: BSD-3-Clause */
/* The libevent server's life: options, creating it, closing it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server.h"

#define CONN_TIMEOUT_MS 10000
#define MAX_CONNS 1024

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
    srv->accept_ev = event_new(eb, lfd, EV_READ | EV_PERSIST, afdt__server_on_accept, srv);
    srv->resume_ev = evtimer_new(eb, afdt__server_on_resume, srv);
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
    return afdt_close_server_ex(close_handle, 0, NULL, NULL);
}

AFDT_EXPORT int afdt_close_server_ex(void *close_handle, unsigned flags, afdt_close_done_t done,
                                     void *userdata) {
    struct afdt__server *srv = close_handle;
    if (srv == NULL || srv->closed || (flags & ~AFDT_CLOSE_ABORT)) {
        errno = EINVAL;
        return -1;
    }
    srv->closed = true;
    srv->on_done = done;
    srv->done_userdata = userdata;
    if (flags & AFDT_CLOSE_ABORT)
        afdt__server_abort_all(srv);
    event_del(srv->accept_ev);
    event_del(srv->resume_ev);
    /* Unlink before close: once closed, the name could be taken by another
     * server that we must not remove. */
    remove_own_file(srv);
    afdt__close(srv->listen_fd);
    srv->listen_fd = -1;
    afdt__server_unref(srv);
    errno = 0;
    return 0;
}
