/* SPDX-License-Identifier: BSD-3-Clause */
/* What the command line (main.c) hands to each command: afdt serve and its clients. */
#ifndef AFDT_TOOL_H
#define AFDT_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#include <afdt.h>

#include "listeners.h"

/* Exit statuses (afdt(1), EXIT STATUS): 1 a restart rolled back, or an exchange that failed; 2 a
 * command line the tool does not understand; 3 not now (another restart in progress, the first
 * generation still starting, the supervisor stopping); 4 no supervisor answers. */
#define TOOL_EXIT_FAILED 1
#define TOOL_EXIT_USAGE 2
#define TOOL_EXIT_BUSY 3
#define TOOL_EXIT_NO_SUPERVISOR 4
/* The version of the control protocol, in the supervisor's greeting. */
#define TOOL_PROTOCOL "afdt-supervisor 1"
/* How long one control exchange may take. */
#define TOOL_ASK_TIMEOUT_S 5

/* Whom the tool trusts, besides its own uid and root: --trust-uid, repeatable. */
#define TOOL_TRUST_MAX 16
struct trust {
    uint32_t uids[TOOL_TRUST_MAX + 2];
    uint32_t n; /* --trust-uid values, in uids[0..n) */
};
/* From now on, ask() (and the supervisor's probe) take descriptors and answers only from a
 * peer running as our own uid, root, or one of @t's (client.c; @t must outlive the calls). */
void trust_set(const struct trust *t);
/* The client options that say so, with @uids (room for TOOL_TRUST_MAX + 2) as their list. */
void trust_options(struct afdt_client_options *o, uint32_t *uids);

/* ---- serve.c ---- */

/* How the sockets are announced to COMMAND (they sit at 3, 4, ... whichever). */
enum convention {
    CONVENTION_SYSTEMD, /* LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES */
    CONVENTION_NGINX,   /* NGINX="3;4;" */
    CONVENTION_EINHORN  /* EINHORN_FD_COUNT, EINHORN_FD_0... */
};

/* --restart: when the serving generation ends on its own, whether another is started. */
enum restart_policy { RESTART_ON_FAILURE, RESTART_NEVER, RESTART_ALWAYS };

struct spawn_user;

struct serve_args {
    const char *control;
    unsigned control_mode;
    struct listener *ls;
    uint32_t nls;
    int64_t ready_timeout_ms;
    int64_t drain_timeout_ms;
    int stop_signal; /* how a generation is asked to finish (retired, or afdt stop) */
    enum convention convention;
    struct trust trust;
    int adopt_pid;    /* --adopt PID, or 0 */
    int adopt_signal; /* --adopt-signal, SIGTERM by default */
    char **argv;      /* COMMAND [ARG...], NULL-terminated */
    enum restart_policy restart;
    const struct spawn_user *user; /* --user, or NULL */
    bool no_cgroup;                /* --cgroup no: follow processes through /proc only */
};

/* Run the supervisor; returns the process's exit status. */
int serve_main(const struct serve_args *a);

/* ---- client.c ---- */

/* One exchange with the supervisor (or any libafdt server) at @path, with the client's
 * timeout.  @resp gets a NUL-terminated answer.  @fd (may be NULL) gets a descriptor that
 * came with it, or -1.  @named (may be NULL) gets a named set.  Returns 0, or after saying why
 * -2 when nothing answers at @path, -1 on any other failure. */
int ask(const char *path, const char *request, char *resp, size_t size, int *fd,
        struct afdt_named_fd **named, uint32_t *nnamed);
/* The same exchange, quietly: returns 0, or -1 with *e and errno telling why (AFDT_PEER when
 * the peer is not trusted: it was asked nothing). */
int exchange(const char *path, const char *request, char *resp, size_t size, int *fd,
             struct afdt_named_fd **named, uint32_t *nnamed, struct afdt_error_t *e);
int cmd_restart(const char *control, bool wait);
int cmd_status(const char *control, bool json);
int cmd_stop(const char *control);
int cmd_exec(const char *from, const char *request, const char *const *names, uint32_t nnames,
             char **argv);

#endif
