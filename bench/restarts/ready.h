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
 * Returns 0 when the process could be looked at (accepting or not), -ESRCH when it is gone, or
 * -EACCES (or another negative errno) when /proc would not show it: then nothing can be said.
 */
int ready_scan_process(pid_t pid, const unsigned long *inos, size_t n, bool *seen);

/** The inode of the socket FD (as ready_scan_process() takes it), or 0 when FD is no socket. */
unsigned long ready_socket_inode(int fd);

#endif
