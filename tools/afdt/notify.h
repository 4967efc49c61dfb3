/* SPDX-License-Identifier: BSD-3-Clause */
/* sd_notify(3) datagrams: a generation's NOTIFY_SOCKET read and parsed, and the supervisor's
 * own messages to its service manager.  A leaf: it reports what arrived, decides nothing. */
#ifndef AFDT_NOTIFY_H
#define AFDT_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One datagram, parsed. */
struct notify_msg {
    pid_t pid; /* the sender, from SCM_CREDENTIALS (0 when absent) */
    uid_t uid;
    bool has_creds;
    uint32_t nfds; /* descriptors that came with it: closed, never kept */
    bool ready;    /* READY=1 */
    bool stopping; /* STOPPING=1 */
    bool has_status;
    char status[128]; /* STATUS=, truncated */
    int errno_value;  /* ERRNO=, or 0 */
    bool has_extend;
    int64_t extend_usec; /* EXTEND_TIMEOUT_USEC=, within 0..NOTIFY_EXTEND_MAX_USEC */
    char bad_extend[32]; /* an EXTEND_TIMEOUT_USEC= value that is not such a number */
};

/* The longest EXTEND_TIMEOUT_USEC= heard (one hour); longer ones are cut to it. */
#define NOTIFY_EXTEND_MAX_USEC (3600LL * 1000000)

/* A datagram socket bound at @path, passing credentials, non-blocking.  @path must be in a
 * directory only the supervisor (and the uids it trusts) can enter: that decides who can send.
 * Returns it, or -1 with errno set. */
int notify_open(const char *path);
/* Read one datagram from @fd into @m.  Descriptors that came with it are closed at once,
 * without waiting and without changing them, whoever sent them (see drop_fds in notify.c).  Returns
 * 1, 0 when none is waiting, -1 on error. */
int notify_read(int fd, struct notify_msg *m);
/* Whether @m came from this user, root, one of the @ntrusted uids of @trusted, or a process
 * of the process group @group. */
bool notify_sender_in(const struct notify_msg *m, pid_t group, const uint32_t *trusted,
                      size_t ntrusted);
/* Send @msg to the service manager at @addr (a path, or "@name"); quietly nothing when @addr
 * is empty.  Returns 0, or -1 with errno set. */
int notify_send(const char *addr, const char *msg);

#endif
