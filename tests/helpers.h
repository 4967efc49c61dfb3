/* SPDX-License-Identifier: BSD-3-Clause */
/* Test helpers that know libafdt: a recorder of client callbacks, a full descriptor table. */
#ifndef AFDT_TEST_HELPERS_H
#define AFDT_TEST_HELPERS_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>

#include "afdt.h"

/* Everything an asynchronous client's callbacks were given. */
struct reply {
    struct event_base *eb;
    bool break_loop; /* break the loop at the callback (the default) */
    int calls, responses, errors;
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len;
    int fd;
    bool fd_open_in_handler;
    struct afdt_error_t err;
    int err_errno;
};

void reply_init(struct reply *r, struct event_base *eb);
/* afdt_response_handler_t and afdt_error_handler_t recording into the
 * struct reply given as userdata. */
void reply_on_response(const uint8_t *resp, uint32_t len, int fd, void *ud);
void reply_on_error(const struct afdt_error_t *e, void *ud);
/* Run @r's loop until it has had its callback. */
void wait_reply(struct reply *r);

/* Two callbacks queued on a loop to run in this order on its next turn, so
 * that whatever the first starts finds the loop with other work still to do. */
struct queued_pair {
    struct event first, then;
};
void queue_pair(struct queued_pair *q, struct event_base *eb, event_callback_fn first,
                event_callback_fn then, void *arg);

/* A descriptor table filled up to a lowered RLIMIT_NOFILE. */
struct fill {
    int fds[64];
    int n;
    uint64_t old_limit;
};

/* Lower RLIMIT_NOFILE to @limit (at most 64 above what is open) and open
 * copies of descriptor 0 until none is left. */
void fill_descriptors(struct fill *f, unsigned limit);
/* Close them and restore the old limit. */
void release_descriptors(struct fill *f);

#endif
