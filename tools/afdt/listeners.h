/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's sockets: --listen NAME=SPEC, and the descriptors behind them.  A leaf. */
#ifndef AFDT_LISTENERS_H
#define AFDT_LISTENERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <afdt.h>

/* Where a listener's socket came from. */
enum listener_source { FROM_NOWHERE, FROM_BIND, FROM_LISTEN_FDS, FROM_PREDECESSOR };

struct listener {
    char name[AFDT_NAME_MAX + 1];
    const char *spec; /* points into argv */
    int fd;           /* -1 until acquired; then the supervisor's */
    enum listener_source source;
    /* A Unix socket file this process bound (or took over), to remove when the supervisor
     * stops for good, if the file is still that socket. */
    bool own_file;
    dev_t dev;
    ino_t ino;
};

/* Parse "NAME=SPEC" into @l.  Returns 0, or with the reason in @why -1 (malformed) or -2
 * (its host does not resolve). */
int listener_parse(const char *arg, struct listener *l, char *why, size_t size);
/* The name of @src, for logs and status. */
const char *listener_source_str(enum listener_source src);
/* Fill the sockets of @ls: from socket activation (by name, else by matching spec), else from
 * @pred (the set a predecessor sent; never binding when it is not NULL), else by binding.
 * Sockets passed or sent that no listener asks for are closed.  Returns 0, or -1 after
 * saying why, with nothing left open or bound. */
int listeners_acquire(struct listener *ls, uint32_t n, bool from_pred, struct afdt_named_fd *pred,
                      uint32_t npred);
/* Once the predecessor has retired, its Unix socket files are ours to remove at the end. */
void listeners_adopt(struct listener *ls, uint32_t n);
/* Close every socket; with @remove, also remove the Unix socket files this process owns. */
void listeners_release(struct listener *ls, uint32_t n, bool remove);
/* The local address of @fd: "127.0.0.1:80", "[::1]:80", "/path" or "@name"; *port is set
 * for IP sockets, else 0. */
void describe_socket(int fd, char *buf, size_t size, int *port);
/* Put @fds[0..n) at descriptors 3.. (not close-on-exec), leaving every other descriptor from
 * 3 + n on close-on-exec; @scratch has room for n.  Only async-signal-safe calls: usable
 * between fork and exec.  Returns 0, or -1 with errno set. */
int place_listen_fds(const int *fds, int *scratch, uint32_t n);
/* Set LISTEN_FDS, LISTEN_PID (this process) and LISTEN_FDNAMES. Returns 0 or -1. */
int set_listen_env(uint32_t n, const char *fdnames);
/* Whether @file names an executable, searching PATH when it has no '/'. Returns 0, or an
 * errno (ENOENT, EACCES) for the message. */
int find_command(const char *file);

#endif
