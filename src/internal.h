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

/* Owned descriptors, systemd's way: a variable declared
 * "_cleanup_close_ int fd = -1;" is closed (afdt__close) on every way out of
 * its scope, unless ownership was handed on with "return TAKE_FD(fd);",
 * which leaves -1 behind. */
static inline void afdt__closep(const int *fd) {
    afdt__close(*fd);
}
#define _cleanup_close_ __attribute__((cleanup(afdt__closep)))
static inline int afdt__take_fd(int *fd) {
    int taken = *fd;
    *fd = -1;
    return taken;
}
#define TAKE_FD(fd) afdt__take_fd(&(fd))

/* --- closer.c: descriptors from a peer ------------------------------------ */

/* Close a descriptor that came from a peer (@fd < 0: nothing) without
 * changing it (its options are the sender's too) and without waiting: a
 * close that could wait (a lingering socket, a Unix socket, a file on FUSE
 * or a network file system, a device) is handed to the process's closer
 * thread; when that thread cannot be started or its queue is full, the close
 * is made here after all.  errno is kept. */
AFDT_HIDDEN void afdt__discard(int fd);

/* afdt__discard @n descriptors of @fds and set them to -1. */
AFDT_HIDDEN void afdt__discard_all(int *fds, uint32_t n);

/* Monotonic clock in microseconds. */
AFDT_HIDDEN int64_t afdt__now_us(void);

/* The monotonic deadline @tv from now, in microseconds: -1 for NULL (never);
 * tv_usec may be a million or more; negative totals count as 0 and huge ones
 * saturate far in the future. */
AFDT_HIDDEN int64_t afdt__deadline(const struct timeval *tv);

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

/* A new close-on-exec listening socket at @a; @flags may add SOCK_NONBLOCK;
 * @mode, if not 0, is set on the socket file before listening. */
AFDT_HIDDEN int afdt__listen_addr(const struct afdt__addr *a, int flags, unsigned mode,
                                  struct afdt__fail *f);

/* afdt__listen_addr() that replaces a stale socket file (nobody listening),
 * under an flock of "<path>.lock". */
AFDT_HIDDEN int afdt__listen_replacing(const struct afdt__addr *a, int flags, unsigned mode,
                                       struct afdt__fail *f);

/* A new close-on-exec Unix stream socket (@flags may add SOCK_NONBLOCK). */
AFDT_HIDDEN int afdt__socket(int flags, struct afdt__fail *f);

/* connect(), retried on EINTR.  Returns 0 or -errno (-EAGAIN: backlog full). */
AFDT_HIDDEN int afdt__connect_once(int sock, const struct afdt__addr *a);

/* --- trust.c: who answers ------------------------------------------------- */

/* A client's trust policy, from struct afdt_client_options. */
struct afdt__trust {
    bool check;           /* false: trust anyone (the 2009 calls, AFDT_CLIENT_TRUST_ANY) */
    const uint32_t *uids; /* the trusted uids; n == 0: the caller's euid and root */
    uint32_t n;
};

/* Read @o (NULL: the default policy) into @t.  Fails with AFDT_NO_OPERATION and EINVAL. */
AFDT_HIDDEN int afdt__trust_parse(const struct afdt_client_options *o, struct afdt__trust *t,
                                  struct afdt__fail *f);
/* Before connecting to @a: a path must be a socket (not a link) whose owner @t trusts.  A
 * missing file passes (connect reports it).  Fails with AFDT_PEER and EPERM (or lstat's errno). */
AFDT_HIDDEN int afdt__trust_name(const struct afdt__addr *a, const struct afdt__trust *t,
                                 struct afdt__fail *f);
/* Once connected, before sending a byte: the listening peer's uid (SO_PEERCRED) must be one @t
 * trusts.  Fails with AFDT_PEER and EPERM (or getsockopt's errno). */
AFDT_HIDDEN int afdt__trust_peer(int sock, const struct afdt__trust *t, struct afdt__fail *f);

/* --- wire.c: frames ------------------------------------------------------ */

/* A frame being received: its mode, set once (the first group), then its
 * progress (from hdr on).  Zero it all, set the mode, then call
 * afdt__frame_recv() until it returns 1 (done) or < 0 (failed);
 * afdt__frame_restart() readies it for the next frame in the same mode. */
struct afdt__frame_in {
    uint8_t *buf;      /* payload destination */
    uint32_t cap;      /* its size */
    int *fds;          /* descriptor destination */
    uint32_t fds_cap;  /* its capacity */
    bool greedy;       /* may read past the frame: the connection is ours alone */
    bool excess_fails; /* more descriptors than fds_cap fails (else they are closed) */
    int rflags;        /* extra recvmsg flags (MSG_DONTWAIT) */
    bool eintr_ends;   /* a blocking read bounded by SO_RCVTIMEO: a signal ends it, so
                          the caller's own deadline, not a restarted timeout, decides */

    /* Progress: everything from here on, zeroed by afdt__frame_restart(). */
    uint8_t hdr[sizeof(uint32_t)];
    uint32_t got;    /* bytes of the frame consumed so far, header included */
    uint32_t len;    /* payload length, once the header is in */
    uint32_t nfds;   /* descriptors kept in fds */
    uint32_t excess; /* descriptors received beyond fds_cap, already closed */
    bool ctrunc;     /* the kernel dropped descriptors */
};

/* Forget the progress of @in (its descriptors must have been taken or
 * closed), keeping its mode. */
AFDT_HIDDEN void afdt__frame_restart(struct afdt__frame_in *in);

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

/* --- named.c: named descriptor sets ---------------------------------------- */

/* Named sets, protocol version 2 (what 1.1 sends; named.c describes both versions). */
#define AFDT__NAMED_MAGIC "AFDTNAMED2"
#define AFDT__NAMED_MAGIC_V1 "AFDTNAMED1"
#define AFDT__NAMED_MAGIC_LEN 10
#define AFDT__NAMED_HDR_LEN (AFDT__NAMED_MAGIC_LEN + 4)
#define AFDT__ACK_MAGIC "AFDTACK2"
#define AFDT__ACK_MAGIC_V1 "AFDTACK1"
#define AFDT__ACK_LEN (8 + 4)
/* A sender starts a data frame only while fewer descriptors than this are unacknowledged, so at
 * most twice as many (less one) are ever in flight per set. */
#define AFDT__NAMED_WINDOW AFDT_MAX_FDS

/* What a named-set step that returned 0 waits for. */
enum afdt__named_wait {
    AFDT__WAIT_READ,
    AFDT__WAIT_WRITE,
    AFDT__WAIT_PAUSE /* back pressure (ETOOMANYREFS): try again after pause_us */
};

/* Sending a named set: the offer, the receiver's request, data frames within the window, each
 * acknowledged. */
struct afdt__named_out {
    const struct afdt_named_fd *set;
    uint32_t n;
    uint32_t next;  /* first descriptor not yet framed */
    uint32_t acked; /* descriptors the receiver acknowledged */
    bool asked;     /* the receiver asked for the set (its first acknowledgement) */
    bool framing;   /* ->out holds a frame not yet wholly sent */
    enum afdt__named_wait wait;
    int64_t pause_us;         /* with AFDT__WAIT_PAUSE */
    int64_t pressed_since_us; /* when the current run of ETOOMANYREFS began; 0: none */
    struct afdt__frame_out out;
    struct afdt__frame_in in;
    uint8_t ack[AFDT__ACK_LEN];
    uint8_t payload[AFDT_MSGLEN];
    int fds[AFDT_MAX_FDS];
};

/* Check a set and its content, then ready @o to send them. */
AFDT_HIDDEN int afdt__named_out_init(struct afdt__named_out *o, const uint8_t *content,
                                     uint32_t content_len, const struct afdt_named_fd *set,
                                     uint32_t n, struct afdt__fail *f);
/* One step, never blocking: 1 done (all acknowledged), 0 waiting (for ->wait), < 0 failed. */
AFDT_HIDDEN int afdt__named_out_step(int sock, struct afdt__named_out *o, struct afdt__fail *f);

/* Receiving a named set, after its header frame arrived. */
struct afdt__named_in {
    struct afdt_named_fd *set;
    uint32_t n;      /* received so far */
    uint32_t count;  /* announced */
    uint32_t acked;  /* received descriptors acknowledged so far (version 2) */
    uint8_t version; /* 1 or 2, from the header */
    bool asked;      /* version 2: the request (the first acknowledgement) is queued */
    bool acking;     /* an acknowledgement is being sent: waiting means for room */
    struct afdt__frame_in in;
    struct afdt__frame_out out;
    uint8_t ack[AFDT__ACK_LEN];
    uint8_t payload[AFDT_MSGLEN];
    int fds[AFDT_MAX_FDS];
};

/* Whether a received first frame is a named-set header. */
AFDT_HIDDEN bool afdt__is_named_header(const uint8_t *payload, uint32_t len, uint32_t nfds);
/* Start receiving the set announced by header @payload: check headroom,
 * allocate.  Moves the header's content to the front of @payload and sets
 * *content_len. */
AFDT_HIDDEN int afdt__named_in_init(struct afdt__named_in *st, uint8_t *payload,
                                    uint32_t *content_len, int rflags, struct afdt__fail *f);
/* One step: 1 done, 0 waiting (->acking: for room to send), < 0 failed. */
AFDT_HIDDEN int afdt__named_in_step(int sock, struct afdt__named_in *st, struct afdt__fail *f);
/* Release what a failed or abandoned receive holds. */
AFDT_HIDDEN void afdt__named_in_abort(struct afdt__named_in *st);

/* Finish receiving a named set whose header frame is in @payload (@len
 * bytes), blocking until @deadline_us (< 0: forever); copies its content to
 * @content (capacity *content_len) and hands over the set. */
AFDT_HIDDEN int afdt__named_recv_rest(int sock, uint8_t *payload, uint32_t len, uint8_t *content,
                                      uint32_t *content_len, struct afdt_named_fd **ret_set,
                                      uint32_t *ret_n, int rflags, int64_t deadline_us,
                                      struct afdt__fail *f);

/* Descriptors this process can still open under RLIMIT_NOFILE (or a large
 * number when it cannot tell). */
AFDT_HIDDEN uint64_t afdt__fd_headroom(void);

#endif /* AFDT_INTERNAL_H */
