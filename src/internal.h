/* SPDX-License-Identifier: BSD-3-Clause */
/* Declarations shared by the library's source files; nothing here is public. */
#ifndef AFDT_INTERNAL_H
#define AFDT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "afdt.h"

#define AFDT_HIDDEN __attribute__((visibility("hidden")))

/* What failed, kept until one place (afdt__report) makes it public. */
struct afdt__fail {
    enum afdt_operation op;
    int errnum;
    const char *msg;
};

/* Record a failure; returns -1 so callers can "return afdt__fail(...)". */
AFDT_HIDDEN int afdt__fail(struct afdt__fail *f, enum afdt_operation op, int errnum,
                           const char *msg);

/* For afdt__report: leave the caller's err->phase as it was (the low-level
 * and sync calls do, as in 2009). */
#define AFDT__KEEP_PHASE ((enum afdt_phase) - 1)

/* The one place a failure becomes public: fill *err (if not NULL) with @phase
 * and the failure, set errno, return -1. */
AFDT_HIDDEN int afdt__report(struct afdt_error_t *err, enum afdt_phase phase,
                             const struct afdt__fail *f);

/* close() that keeps errno and is never retried (Linux frees the descriptor
 * even when close reports EINTR). */
AFDT_HIDDEN void afdt__close(int fd);

/* Close @n descriptors of @fds and set them to -1. */
AFDT_HIDDEN void afdt__close_all(int *fds, uint32_t n);

/* Monotonic clock in microseconds. */
AFDT_HIDDEN int64_t afdt__now_us(void);

/* A timeval's total in microseconds (tv_usec may be a million or more);
 * negative totals count as 0. */
AFDT_HIDDEN int64_t afdt__timeval_us(const struct timeval *tv);

/* poll() one descriptor for @events until @deadline_us (< 0: forever),
 * retrying EINTR.  Returns 1 when ready, 0 on timeout, -errno on failure. */
AFDT_HIDDEN int afdt__poll_until(int fd, short events, int64_t deadline_us);

/* --- socket.c: names and sockets --------------------------------------- */

/* A Unix socket address: a path, or an abstract name when it starts with '@'. */
struct afdt__addr {
    struct sockaddr_un sun;
    socklen_t len;
    bool abstract;
};

/* Parse @name into @a.  Fails with AFDT_PATHNAME. */
AFDT_HIDDEN int afdt__addr_parse(const char *name, struct afdt__addr *a, struct afdt__fail *f);

/* A new close-on-exec listening socket at @a; @flags may add SOCK_NONBLOCK. */
AFDT_HIDDEN int afdt__listen_addr(const struct afdt__addr *a, int flags, struct afdt__fail *f);

/* A new close-on-exec Unix stream socket (@flags may add SOCK_NONBLOCK). */
AFDT_HIDDEN int afdt__socket(int flags, struct afdt__fail *f);

/* connect(), retried on EINTR.  Returns 0 or -errno (-EAGAIN: backlog full). */
AFDT_HIDDEN int afdt__connect_once(int sock, const struct afdt__addr *a);

/* --- wire.c: frames ------------------------------------------------------ */

/* A frame being received.  Set the first group, zero the rest, then call
 * afdt__frame_recv() until it returns 1 (done) or < 0 (failed). */
struct afdt__frame_in {
    uint8_t *buf;      /* payload destination */
    uint32_t cap;      /* its size */
    int *fds;          /* descriptor destination */
    uint32_t fds_cap;  /* its capacity */
    bool greedy;       /* may read past the frame: the connection is ours alone */
    bool excess_fails; /* more descriptors than fds_cap fails (else they are closed) */
    int rflags;        /* extra recvmsg flags (MSG_DONTWAIT) */

    uint8_t hdr[sizeof(uint32_t)];
    uint32_t got;    /* bytes of the frame consumed so far, header included */
    uint32_t len;    /* payload length, once the header is in */
    uint32_t nfds;   /* descriptors kept in fds */
    uint32_t excess; /* descriptors received beyond fds_cap, already closed */
    bool ctrunc;     /* the kernel dropped descriptors */
};

/* One recvmsg() step.  Returns 1 when the frame is complete, 0 when the
 * socket has nothing more for now (check ->got to see if the frame began),
 * < 0 on failure, with every descriptor received so far closed. */
AFDT_HIDDEN int afdt__frame_recv(int sock, struct afdt__frame_in *in, struct afdt__fail *f);

/* A frame being sent; zero ->sent before the first call. */
struct afdt__frame_out {
    const uint8_t *content;
    uint32_t len;
    const int *fds;
    uint32_t nfds;
    int sflags; /* extra sendmsg flags (MSG_DONTWAIT) */
    uint32_t sent;
};

/* Check a frame before the first send: AFDT_FORMAT when too long. */
AFDT_HIDDEN int afdt__frame_check(const struct afdt__frame_out *out, struct afdt__fail *f);

/* One sendmsg() step.  Returns 1 when all is sent, 0 when the socket is full
 * (check ->sent), < 0 on failure. */
AFDT_HIDDEN int afdt__frame_send(int sock, struct afdt__frame_out *out, struct afdt__fail *f);

/* Blocking wrappers used by the low-level and sync calls: finish a frame,
 * polling until @deadline_us (< 0: forever).  With @fail_if_idle, a socket
 * with nothing to read/no room before the frame begins fails with EAGAIN. */
AFDT_HIDDEN int afdt__recv_frame_until(int sock, struct afdt__frame_in *in, bool fail_if_idle,
                                       int64_t deadline_us, struct afdt__fail *f);
AFDT_HIDDEN int afdt__send_frame_until(int sock, struct afdt__frame_out *out, bool fail_if_idle,
                                       int64_t deadline_us, struct afdt__fail *f);

#endif /* AFDT_INTERNAL_H */
