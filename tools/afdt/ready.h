/* SPDX-License-Identifier: BSD-3-Clause */
/* Is a process accepting on a listening socket? Seen from /proc, without its help. */
#ifndef AFDT_READY_H
#define AFDT_READY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/**
 * Looks at process PID and marks in SEEN[i] each socket INOS[i] (a socket inode, as in
 * "socket:[N]") that the process is seen waiting to accept on: the socket registered for input in
 * one of its epoll sets, or one of its threads blocked in accept(2), accept4(2), poll(2),
 * ppoll(2), select(2) or pselect6(2) on it. Marks are only ever added, so one array can collect
 * the verdict over every process of a group.
 *
 * Returns 0 when the process could be looked at (accepting or not), 1 when a thread waits where
 * accepting cannot be seen (io_uring_enter(2)), -ESRCH when it is gone, or -EACCES (or another
 * negative errno) when /proc would not show it.
 */
int ready_scan_process(pid_t pid, const unsigned long *inos, size_t n, bool *seen);

/* The most processes and sockets ready_check() looks at. */
#define READY_MAX_PROCS 512
#define READY_MAX_SOCKETS 64

enum ready_verdict {
    READY_NOT_YET,    /* every process looked at, not all sockets accepted on */
    READY_ACCEPTING,  /* each socket is accepted on by some process */
    READY_CANNOT_TELL /* not all sockets seen, and some process could not be looked at */
};

/**
 * The verdict over processes ROOTS[0..nroots) and all their descendants (through
 * /proc/PID/task/TID/children) on sockets INOS[0..n): whether each one is accepted on by one of
 * them.
 */
enum ready_verdict ready_check(const pid_t *roots, size_t nroots, const unsigned long *inos,
                               size_t n);

/** The inode of the socket FD (as ready_scan_process() takes it), or 0 when FD is no socket. */
unsigned long ready_socket_inode(int fd);

#endif
