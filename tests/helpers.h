/* SPDX-License-Identifier: BSD-3-Clause */
/* Test helpers that know libafdt: a recorder of client callbacks, a full descriptor table,
 * unprivileged users to test as. */
#ifndef AFDT_TEST_HELPERS_H
#define AFDT_TEST_HELPERS_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

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

/* Multi-user tests: the kernel treats root differently (descriptors in flight, RLIMIT_NOFILE,
 * file permissions), so a test of what another user can do runs that user for real.
 *
 *     struct test_user u;
 *     test_user("afdt-test-a", &u);       // skips the test (exit 77) unless we are root
 *     pid_t pid = spawn_as_user(&u, 2048, squatter, arg);  // or fork() + drop_to_user()
 *     ... wait_exit(pid) ...
 *
 * Users are system accounts (no home, no login shell) created once by useradd and kept; use
 * one name per role in a test (afdt-test-a, afdt-test-b, ...), and a name of its own where a
 * per-user kernel count matters (descriptors in flight are counted per uid, across processes
 * and tests running at the same time).  user_tmp_path gives a socket path the user may bind. */
struct test_user {
    char name[32];
    uid_t uid;
    gid_t gid;
};

/* Fill *@ret with the unprivileged user @name, created by `useradd --system` if it does not
 * exist yet (safe to call from tests running at the same time).  Not root, or no useradd on
 * this machine: skips the running test with a message (exit 77, never returns). */
void test_user(const char *name, struct test_user *ret);
/* For a test of a per-user kernel limit, which needs only some unprivileged user: as root the
 * user @name (as test_user), else the user we are (running the suite unprivileged, as CI does
 * a second time), for which drop_to_user only sets the limit.  Such tests share the user's
 * count with every test running at the same time: name them "..._by_descriptor_limit", which
 * runs them alone (RUN_SERIAL) and not under valgrind, which fakes the limit. */
void test_user_or_self(const char *name, struct test_user *ret);
/* Like test_user, but returns -1 (with the reason on stderr) instead of skipping, 0 when *@ret
 * is filled: for a test that can still check part of its promise without another user. */
int test_user_try(const char *name, struct test_user *ret);
/* In a forked child: when @nofile > 0 set RLIMIT_NOFILE to it (soft and hard; the soft limit
 * only under valgrind, which keeps the hard one to itself), then drop every
 * privilege to @u (setgroups, setgid, setuid) and check that root cannot be regained (unless
 * @u is the unprivileged user we already are, from test_user_or_self).  Fails
 * the test (exit 1) on any error, so a child that returns from it is @u and nothing more. */
void drop_to_user(const struct test_user *u, unsigned nofile);
/* fork(); the child drops to @u (as drop_to_user) and exits with fn(arg). */
pid_t spawn_as_user(const struct test_user *u, unsigned nofile, int (*fn)(void *), void *arg);
/* A fresh socket path in a directory of this test's private directory that @u owns (removed at
 * exit), so a process running as @u can bind there and we can still reach it. */
const char *user_tmp_path(const struct test_user *u, const char *tag);

#endif
