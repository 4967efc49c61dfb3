/* SPDX-License-Identifier: BSD-3-Clause */
/* Test helpers that know libafdt: a recorder of client callbacks, a full descriptor table,
 * callbacks queued in order. */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

void reply_init(struct reply *r, struct event_base *eb) {
    memset(r, 0, sizeof(*r));
    r->eb = eb;
    r->break_loop = true;
    r->fd = -100;
    r->err_errno = -1;
}

void reply_on_response(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct reply *r = ud;
    r->calls++;
    r->responses++;
    memcpy(r->buf, resp, len);
    r->len = len;
    r->fd = fd;
    r->fd_open_in_handler = fd >= 0 && fcntl(fd, F_GETFD) >= 0;
    if (r->break_loop)
        event_base_loopbreak(r->eb);
}

void reply_on_error(const struct afdt_error_t *e, void *ud) {
    int saved = errno;
    struct reply *r = ud;
    r->calls++;
    r->errors++;
    r->err = *e;
    r->err_errno = saved;
    if (r->break_loop)
        event_base_loopbreak(r->eb);
}

void wait_reply(struct reply *r) {
    while (r->calls == 0)
        CHECK_INT(event_base_loop(r->eb, EVLOOP_ONCE), >=, 0);
}

void fill_descriptors(struct fill *f, unsigned limit) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    f->old_limit = rl.rlim_cur;
    rl.rlim_cur = limit;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    f->n = 0;
    for (;;) {
        int d = fcntl(0, F_DUPFD_CLOEXEC, 0);
        if (d < 0) {
            CHECK_INT(errno, ==, EMFILE);
            return;
        }
        CHECK(f->n < (int)(sizeof(f->fds) / sizeof(f->fds[0])));
        f->fds[f->n++] = d;
    }
}

void release_descriptors(struct fill *f) {
    for (int i = 0; i < f->n; i++)
        close(f->fds[i]);
    f->n = 0;
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    rl.rlim_cur = (rlim_t)f->old_limit;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

void queue_pair(struct queued_pair *q, struct event_base *eb, event_callback_fn first,
                event_callback_fn then, void *arg) {
    event_assign(&q->first, eb, -1, 0, first, arg);
    event_assign(&q->then, eb, -1, 0, then, arg);
    event_active(&q->first, EV_TIMEOUT, 0); /* the active queue keeps this order */
    event_active(&q->then, EV_TIMEOUT, 0);
}
