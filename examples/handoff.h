/* SPDX-License-Identifier: BSD-3-Clause */
/* What the handoff demo's three roles (coordinator, server generation, load generator) share. */
#ifndef HANDOFF_H
#define HANDOFF_H

#include <stdbool.h>
#include <stdint.h>

/* Generations are numbered from 1; the demo runs three, so two handovers. */
#define HANDOFF_GENERATIONS 3
/* Threads in the load generator. */
#define HANDOFF_WORKERS 4

/* Microseconds on the monotonic clock. */
int64_t handoff_now_us(void);

/* Sleep for @ms milliseconds, even across signals. */
void handoff_sleep_ms(int ms);

/* The number of descriptors open in this process, or -1. */
int handoff_count_fds(void);

/* Write one status line to the coordinator in one write(2), so lines never interleave. */
void handoff_report(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One afdt exchange with the generation serving at @path: send @request, expect "ok".
 * If @ret_fd is not NULL, a descriptor must come with the answer and is stored there (the
 * caller owns it); otherwise none may come. Returns 0, or -1 after saying why on stderr. */
int handoff_ask(const char *path, const char *request, int *ret_fd, const char *who);

/* A server generation. @takeover false: open the listening socket; true: take it from the
 * generation serving at @path. Returns the process exit status. */
int handoff_run_generation(int number, bool takeover, const char *path, int status_fd);

/* The load generator: requests to 127.0.0.1:@port until @stop_fd reaches end of file. */
int handoff_run_load(int port, int stop_fd, int status_fd);

#endif
