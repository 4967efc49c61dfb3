/* SPDX-License-Identifier: BSD-3-Clause */
/* A generation's output relay: a process of its own that prefixes each line a generation writes
 * with its number, and outlives the supervisor. */
#ifndef AFDT_RELAY_H
#define AFDT_RELAY_H

/* Where the relay finds the read ends of the generation's stdout and stderr pipes. */
#define RELAY_STDOUT_FD 3
#define RELAY_STDERR_FD 4

/* "afdt relay GEN": copy RELAY_STDOUT_FD to stdout and RELAY_STDERR_FD to stderr, each line
 * prefixed "gen GEN: " (after a timestamp unless stderr is the journal), until both end.
 * Returns the exit status. */
int relay_main(int gen);

#endif
