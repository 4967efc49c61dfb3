/* SPDX-License-Identifier: BSD-3-Clause */
/* What the parts of the afdt supervisor tool share. */
#ifndef AFDT_TOOL_H
#define AFDT_TOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <afdt.h>

/* Exit status for a command line the tool does not understand. */
#define TOOL_EXIT_USAGE 2
/* The version of the control protocol, in the supervisor's greeting. */
#define TOOL_PROTOCOL "afdt-supervisor 1"
/* How long one control exchange may take. */
#define TOOL_ASK_TIMEOUT_S 5

/* ---- main.c: messages, time, numbers ---- */

/* Print one line to stderr, in one write, prefixed with the program's tag. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Make the tag "afdt[PID]" (for the supervisor's log) instead of "afdt". */
void say_with_pid(void);
/* Milliseconds on the monotonic clock. */
int64_t now_ms(void);
/* Sleep @ms milliseconds, across signals. */
void sleep_ms_tool(int ms);
/* Format a duration as "0.4s", "42s", "3m07s", "2h05m" or "3d04h". */
void format_age(int64_t ms, char *buf, size_t size);

/* ---- listeners.c: --listen NAME=SPEC and the sockets behind them ---- */

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

/* ---- serve.c ---- */

struct serve_args {
    const char *control;
    unsigned control_mode;
    struct listener *ls;
    uint32_t nls;
    int64_t ready_timeout_ms;
    int64_t drain_timeout_ms;
    char **argv; /* COMMAND [ARG...], NULL-terminated */
};

/* Run the supervisor; returns the process's exit status. */
int serve_main(const struct serve_args *a);

/* ---- client.c ---- */

/* One exchange with the supervisor (or any libafdt server) at @path, with the client's
 * timeout.  @resp gets a NUL-terminated answer.  @fd (may be NULL) gets a descriptor that
 * came with it, or -1.  @named (may be NULL) gets a named set.  Returns 0, or -1 after
 * saying why. */
int ask(const char *path, const char *request, char *resp, size_t size, int *fd,
        struct afdt_named_fd **named, uint32_t *nnamed);
int cmd_restart(const char *control);
int cmd_status(const char *control, bool json);
int cmd_stop(const char *control);
int cmd_exec(const char *from, const char *request, const char *const *names, uint32_t nnames,
             char **argv);

#endif
