/* SPDX-License-Identifier: BSD-3-Clause */
/* Helpers shared by the fuzz targets: reading the input as a script, counting and checking
 * descriptors, and reporting a broken invariant so libFuzzer records the input. */
#ifndef AFDT_FUZZ_UTIL_H
#define AFDT_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The entry point every target defines, for libFuzzer and for replay.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fuzz input, consumed from the front.  Reads past the end give zeros, so
 * every input is a valid script. */
struct script {
    const uint8_t *p;
    size_t left;
};

uint8_t script_u8(struct script *s);

/* Copy up to @n bytes of the input to @out; returns how many there were. */
size_t script_bytes(struct script *s, uint8_t *out, size_t n);

/* Descriptors open in this process. */
int fuzz_fd_count(void);
/* fuzz_fd_count() once it is @want, or after 5 s: the library's closer
 * thread may still be closing what a peer sent. */
int fuzz_settled_fd_count(int want);

/* The @n-th (from 0) descriptor number not in use: with RLIMIT_NOFILE set to
 * it, the process can open exactly @n more descriptors. */
int fuzz_free_fd(unsigned n);

/* A process-wide descriptor of /dev/null, opened on first use and kept open
 * (so it is part of every baseline count). */
int fuzz_devnull(void);

/* One non-blocking sendmsg() of @len bytes of @data with @nfds (at most
 * AFDT_MAX_FDS) copies of fuzz_devnull() as SCM_RIGHTS; sendmsg's result. */
long fuzz_send_devnulls(int sock, const uint8_t *data, size_t len, uint32_t nfds);

/* Whether @fd is open, close-on-exec, and /dev/null: a descriptor that
 * arrived from a sender that only ever sends /dev/null. */
bool fuzz_is_devnull_copy(int fd);

/* Run before aborting (a target restores what it changed, such as
 * RLIMIT_NOFILE, so the report can be written). */
void fuzz_on_violation(void (*hook)(void));

/* Report a broken invariant and abort(), so libFuzzer saves the input. */
__attribute__((noreturn, format(printf, 1, 2))) void fuzz_violation(const char *fmt, ...);

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_violation(__VA_ARGS__);                                                           \
    } while (0)

#endif
