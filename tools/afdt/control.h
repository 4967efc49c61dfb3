/* SPDX-License-Identifier: BSD-3-Clause */
/* The control protocol: its requests, the greeting, the status report, and the libafdt
 * server that carries them.  A leaf: it reads the state, sup.c acts on the requests. */
#ifndef AFDT_CONTROL_H
#define AFDT_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include <afdt.h>

#include "sup.h"

enum control_verb {
    CTL_UNKNOWN,
    CTL_HELLO,     /* "hello": the greeting */
    CTL_STATUS,    /* "status", "status json": the report, in a memory file */
    CTL_RESTART,   /* "restart": start one; answers its id */
    CTL_RESULT,    /* "result ID": what became of restart ID */
    CTL_STOP,      /* "stop" */
    CTL_LISTENERS, /* AFDT_LISTENERS_REQUEST: the sockets, as a named set */
    CTL_RETIRE     /* "retire": a successor took over */
};

/* The verb of request @req (NUL-terminated); *arg gets RESULT's id, or STATUS's "json" as 1. */
enum control_verb control_parse(const char *req, int *arg);
/* The greeting: TOOL_PROTOCOL and what a successor needs. Returns its length. */
int control_hello(const struct sup *s, char *out, size_t cap);
/* Read a greeting into @p (its path left alone) and the state word into @state.  Returns 0,
 * or -1 when it is not an afdt supervisor's. */
int control_parse_hello(const char *resp, struct predecessor *p, char *state, size_t size);
/* The status report (text or JSON) in a memory file, positioned at 0; -1 with errno set. */
int control_status_fd(const struct sup *s, bool json);

/* How long to wait for another process holding the control path's lock file. */
#define CONTROL_LOCK_WAIT_MS 5000

/* Make way at @path for a new control channel: a socket file of our own uid where nothing
 * listens is removed, under the lock file beside it (PATH.lock), which we wait for at most
 * CONTROL_LOCK_WAIT_MS and use only if it is ours.  Another user's file, or anything that is
 * not a socket, is left alone.  Returns 0 (the path is free, or holds a live socket), or -1
 * after saying why. */
int control_claim(const char *path);
/* Serve the control protocol at @path: only this user is let in (refusals are logged once per
 * interval); a stale socket file is claimed (@replacing: a predecessor's, which may take a
 * moment to go).  Returns the server's handle, or NULL after saying why. */
void *control_serve(struct event_base *eb, const char *path, unsigned mode, bool replacing,
                    afdt_request_ex_handler_t handler, afdt_post_ex_handler_t post, void *userdata);

#endif
