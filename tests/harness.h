/* SPDX-License-Identifier: BSD-3-Clause */
/* A small test harness: each TEST runs in its own forked process with a
 * timeout, and fails if it leaves a descriptor open. */
#ifndef AFDT_TEST_HARNESS_H
#define AFDT_TEST_HARNESS_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define SKIP_EXIT 77

typedef void (*test_fn)(void);
void harness_register(const char *name, test_fn fn);

#define TEST(name)                                                                                 \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void register_##name(void) {                               \
        harness_register(#name, name);                                                             \
    }                                                                                              \
    static void name(void)

/* Fail the running test with a message (never returns). */
__attribute__((noreturn, format(printf, 3, 4))) void harness_fail(const char *file, int line,
                                                                  const char *fmt, ...);
/* Skip the running test (exit 77, never "passed"). */
__attribute__((noreturn)) void harness_skip(const char *why);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            harness_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);                           \
    } while (0)

#define CHECK_INT(a, op, b)                                                                        \
    do {                                                                                           \
        intmax_t a_ = (intmax_t)(a), b_ = (intmax_t)(b);                                           \
        if (!(a_ op b_))                                                                           \
            harness_fail(__FILE__, __LINE__, "%s %s %s: %jd vs %jd", #a, #op, #b, a_, b_);         \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            harness_fail(__FILE__, __LINE__, "%s == %s: \"%s\" vs \"%s\"", #a, #b,                 \
                         a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                  \
    } while (0)

#define CHECK_MEM(a, b, n)                                                                         \
    do {                                                                                           \
        if (memcmp((a), (b), (n)) != 0)                                                            \
            harness_fail(__FILE__, __LINE__, "memcmp(%s, %s, %s) != 0", #a, #b, #n);               \
    } while (0)

/* Check a failed call's error: phase, operation and errno. */
#define CHECK_ERR(err, ph, op, eno, saved_errno)                                                   \
    do {                                                                                           \
        CHECK_STR(afdt_phase_str((err).phase), afdt_phase_str(ph));                                \
        CHECK_STR(afdt_operation_str((err).operation), afdt_operation_str(op));                    \
        CHECK((err).message != NULL);                                                              \
        CHECK_INT(saved_errno, ==, eno);                                                           \
    } while (0)

/* Descriptors open in this process. */
int fd_count(void);
/* This test's private directory (created on first use, removed with what it holds at exit). */
const char *tmp_dir(void);
/* fd_count(), once it is @want or after 5 s: descriptors from a peer that the
 * library closes in its closer thread may take a moment to go. */
int settled_fd_count(int want);
/* Check that @want descriptors are open, allowing the closer that moment. */
#define CHECK_FD_COUNT(want)                                                                       \
    do {                                                                                           \
        int want_ = (want);                                                                        \
        CHECK_INT(settled_fd_count(want_), ==, want_);                                             \
    } while (0)
/* A fresh socket path in this test's private directory (removed at exit). */
const char *tmp_path(const char *tag);
/* Whether two descriptors refer to the same open file (same dev and inode). */
bool same_file(int a, int b);
/* Whether a descriptor has FD_CLOEXEC set. */
bool is_cloexec(int fd);
/* Descriptors without FD_CLOEXEC, which a child would inherit across exec. */
int count_inheritable(void);
/* fork(); the child runs fn(arg) and exits with its return value. */
pid_t spawn(int (*fn)(void *), void *arg);
/* Wait for a child; returns its exit code, or 128+signal. */
int wait_exit(pid_t pid);
/* Sleep for @ms milliseconds. */
void sleep_ms(int ms);
/* Monotonic clock in milliseconds. */
int64_t now_ms(void);
/* A connected close-on-exec Unix stream socket pair. */
void make_pair(int sv[2]);
/* A file with its own inode and known contents, so a received descriptor can
 * be told apart from every other one. */
int make_file(const char *contents);
/* Check that @fd's file holds exactly @want. */
void check_file_contents(int fd, const char *want);
/* read() exactly @n bytes (the peer may still be writing). */
void read_exactly(int fd, void *buf, size_t n);
/* One sendmsg of @n bytes carrying @nfds (at most 253) descriptors as
 * SCM_RIGHTS, written by hand the way a program without this library would;
 * returns what sendmsg returned, with its errno. */
ssize_t raw_sendmsg(int s, const void *buf, size_t n, const int *fds, unsigned nfds);
/* A loopback TCP socket set to linger 5 s on close, with data its peer (left
 * open in *@peer, its listener in *@listener) never reads: closing the last
 * reference to it waits those 5 s, unless lingering is turned off. */
int lingering_socket(int *peer, int *listener);

#endif
