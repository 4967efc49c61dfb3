/* SPDX-License-Identifier: BSD-3-Clause */
/* The tool's messages and clocks: a leaf every other part of afdt(1) may use. */
#ifndef AFDT_LOG_H
#define AFDT_LOG_H

#include <stddef.h>
#include <stdint.h>

/* Print one line to stderr, in one write, prefixed with the program's tag (and, in the
 * supervisor's log, a timestamp). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* From now on, lines are the supervisor's log: "TIME afdt[PID]: ..." (no time when stderr is
 * the journal, which stamps lines itself). */
void log_as_supervisor(void);
/* The timestamp that starts the supervisor's log lines ("2026-12-07 04:05:06.789 "), into @buf
 * (room for 32); empty when stderr is the journal or before log_as_supervisor().  Returns its
 * length. */
size_t log_stamp(char *buf, size_t size);
/* A message that a peer can repeat at will (a refused client, an ignored notification): the
 * first is said at once, the rest once per interval with how many there were. */
struct say_limit {
    int64_t window_end_ms; /* 0: nothing said yet */
    unsigned held;         /* repeats since the last line */
};
#define SAY_LIMIT_INTERVAL_MS 10000
void say_limited(struct say_limit *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* What to change when a call failed with @err, as " (...)" to append to the message: for
 * running out of descriptors, memory or argument space; "" for anything else. */
const char *resource_hint(int err);

/* Milliseconds on the monotonic clock. */
int64_t now_ms(void);
/* Sleep @ms milliseconds, across signals. */
void sleep_ms_tool(int ms);
/* Format a duration as "0.4s", "42s", "3m07s", "2h05m" or "3d04h". */
void format_age(int64_t ms, char *buf, size_t size);

#endif
