/* SPDX-License-Identifier: BSD-3-Clause */
/* The blocking client: one exchange, with one deadline over all of it. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "internal.h"

/* Bound the socket's blocking calls of one direction (SO_SNDTIMEO: connect
 * and send; SO_RCVTIMEO: receive) by what is left until @deadline_us.  At
 * or past the deadline the bound is the shortest the kernel has, not 0,
 * which would mean "forever"; one last try still sees a ready peer. */
static int bound_by_deadline(int sock, int which, int64_t deadline_us) {
    int64_t left = deadline_us - afdt__now_us();
    if (left < 1)
        left = 1;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000000),
                         .tv_usec = (suseconds_t)(left % 1000000)};
    return setsockopt(sock, SOL_SOCKET, which, &tv, sizeof(tv));
}

static int make_blocking(int sock) {
    return fcntl(sock, F_SETFL, 0);
}

/* Connect, waiting at most until @deadline_us (< 0: forever) while the
 * server's backlog is full.  Linux makes a blocking Unix connect wait for
 * room for up to SO_SNDTIMEO, so the kernel does the waiting for us; a signal
 * ends that wait early (EINTR, even under SA_RESTART), so each try gets only
 * what is left of the deadline. */
static int connect_until(int sock, const struct afdt__addr *a, int64_t deadline_us,
                         struct afdt__fail *f) {
    /* The socket starts non-blocking: a backlog with room (the usual case)
     * connects at once, with nothing to set up first. */
    int r = afdt__connect_once(sock, a);
    if (r == 0)
        return 0;
    if (r != -EAGAIN)
        return afdt__fail(f, AFDT_CONNECT, -r, "");
    if (make_blocking(sock) < 0)
        return afdt__fail(f, AFDT_CONNECT, errno, "could not make the socket blocking");
    for (;;) {
        if (deadline_us >= 0 && bound_by_deadline(sock, SO_SNDTIMEO, deadline_us) < 0)
            return afdt__fail(f, AFDT_CONNECT, errno, "setting the connect timeout failed");
        if (connect(sock, (const struct sockaddr *)&a->sun, a->len) == 0 || errno == EISCONN)
            return 0; /* EISCONN: an interrupted try got through after all */
        if (errno != EINTR && errno != EAGAIN)
            return afdt__fail(f, AFDT_CONNECT, errno, "");
        if (deadline_us >= 0 && afdt__now_us() >= deadline_us)
            return afdt__fail(f, AFDT_TIMEOUT, ETIMEDOUT,
                              "timed out waiting for room in the server's backlog");
    }
}

/* Receive the response frame.  The first read sleeps in recvmsg itself,
 * bounded by SO_RCVTIMEO: a poll before it would cost a second syscall and
 * a slower wakeup (bench/: about a tenth of a one-client exchange).  Making
 * the socket blocking only now keeps both calls off the path from the last
 * exchange to this connect.  The rare rest (a frame split across reads, a
 * signal) goes through poll. */
static int recv_response(int sock, struct afdt__frame_in *in, int64_t deadline_us,
                         struct afdt__fail *f) {
    if (make_blocking(sock) < 0 ||
        (deadline_us >= 0 && bound_by_deadline(sock, SO_RCVTIMEO, deadline_us) < 0))
        return afdt__fail(f, AFDT_RECVMSG, errno, "could not set up the blocking read");
    in->eintr_ends = true;
    int r = afdt__frame_recv(sock, in, f);
    in->rflags = MSG_DONTWAIT;
    in->eintr_ends = false;
    if (r != 0)
        return r;
    return afdt__recv_frame_until(sock, in, false, deadline_us, f);
}

/* Connect to @fname, check that @t trusts who answers, and send the request, all before
 * @deadline_us.  Returns the connected socket (the caller's), or -1. */
static int connect_and_send(const char *fname, const uint8_t *request, uint32_t request_length,
                            const struct afdt__trust *t, int64_t deadline_us,
                            struct afdt__fail *f) {
    struct afdt__frame_out req = {request, request_length, NULL, 0, MSG_DONTWAIT, 0};
    struct afdt__addr a;
    if (afdt__frame_check(&req, f) < 0 || afdt__addr_parse(fname, &a, f) < 0 ||
        afdt__trust_name(&a, t, f) < 0)
        return -1;
    int sock = afdt__socket(SOCK_NONBLOCK, f);
    if (sock < 0)
        return -1;
    if (connect_until(sock, &a, deadline_us, f) < 0 || afdt__trust_peer(sock, t, f) < 0 ||
        afdt__send_frame_until(sock, &req, false, deadline_us, f) < 0) {
        afdt__close(sock);
        return -1;
    }
    return sock;
}

AFDT_EXPORT int afdt_sync_client(const char *fname, const uint8_t *request, uint32_t request_length,
                                 uint8_t *response, uint32_t *response_length, int *received_fd,
                                 const struct timeval *timeout, struct afdt_error_t *err) {
    int64_t deadline = afdt__deadline(timeout);
    struct afdt__fail f;
    int fd = -1;

    if (received_fd)
        *received_fd = -1;
    if (response_length == NULL || received_fd == NULL ||
        (response == NULL && *response_length > 0)) {
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "response_length, received_fd or response is NULL");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    static const struct afdt__trust anyone = {false, NULL, 0}; /* as in 2009 */
    int sock = connect_and_send(fname, request, request_length, &anyone, deadline, &f);
    if (sock < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    struct afdt__frame_in in = {0};
    in.buf = response;
    in.cap = *response_length;
    in.fds = &fd;
    in.fds_cap = 1;
    in.greedy = true; /* the connection is ours alone */
    int r = recv_response(sock, &in, deadline, &f);
    afdt__close(sock);
    if (r < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    *response_length = in.len;
    *received_fd = fd; /* now the caller's */
    return 0;
}

/* afdt_sync_client_ex() and afdt_sync_client_opts(): @opts is read only when @check. */
static int sync_client_ex(const char *fname, const uint8_t *request, uint32_t request_length,
                          uint8_t *response, uint32_t *response_length, int *fds, uint32_t *nfds,
                          struct afdt_named_fd **ret_named, uint32_t *ret_nnamed,
                          const struct timeval *timeout, bool check,
                          const struct afdt_client_options *opts, struct afdt_error_t *err) {
    int64_t deadline = afdt__deadline(timeout);
    struct afdt__fail f;
    struct afdt__trust trust = {false, NULL, 0};
    uint8_t payload[AFDT_MSGLEN];
    int sock = -1;

    if (response_length == NULL || nfds == NULL || (fds == NULL && *nfds > 0) ||
        (response == NULL && *response_length > 0) || (ret_named && ret_nnamed == NULL)) {
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "a NULL buffer with a non-zero size");
        goto fail;
    }
    if (check && afdt__trust_parse(opts, &trust, &f) < 0)
        goto fail;
    sock = connect_and_send(fname, request, request_length, &trust, deadline, &f);
    if (sock < 0)
        goto fail;
    /* Exact reads: a named set's frames follow the first one. */
    struct afdt__frame_in in = {0};
    in.buf = payload;
    in.cap = AFDT_MSGLEN;
    in.fds = fds;
    in.fds_cap = *nfds < AFDT_MAX_FDS ? *nfds : AFDT_MAX_FDS;
    in.excess_fails = true;
    if (recv_response(sock, &in, deadline, &f) < 0)
        goto fail;
    if (afdt__is_named_header(payload, in.len, in.nfds + in.excess)) {
        if (ret_named == NULL) {
            afdt__fail(&f, AFDT_FORMAT, 0, "server sent a named set; ret_named is NULL");
            goto fail;
        }
        uint32_t len = *response_length;
        if (afdt__named_recv_rest(sock, payload, in.len, response, &len, ret_named, ret_nnamed,
                                  MSG_DONTWAIT, deadline, &f) < 0)
            goto fail;
        *response_length = len;
        *nfds = 0;
    } else {
        if (in.len > *response_length) {
            afdt__discard_all(fds, in.nfds);
            afdt__fail(&f, AFDT_FORMAT, 0, "frame is larger than the receive buffer");
            goto fail;
        }
        if (in.len)
            memcpy(response, payload, in.len);
        *response_length = in.len;
        *nfds = in.nfds; /* the caller's now */
        if (ret_named) {
            *ret_named = NULL;
            *ret_nnamed = 0;
        }
    }
    afdt__close(sock);
    return 0;
fail:
    afdt__close(sock);
    if (nfds) /* as afdt_recv_fds_msg(): nothing received */
        *nfds = 0;
    return afdt__report(err, AFDT__KEEP_PHASE, &f);
}

AFDT_EXPORT int afdt_sync_client_ex(const char *fname, const uint8_t *request,
                                    uint32_t request_length, uint8_t *response,
                                    uint32_t *response_length, int *fds, uint32_t *nfds,
                                    struct afdt_named_fd **ret_named, uint32_t *ret_nnamed,
                                    const struct timeval *timeout, struct afdt_error_t *err) {
    return sync_client_ex(fname, request, request_length, response, response_length, fds, nfds,
                          ret_named, ret_nnamed, timeout, false, NULL, err);
}

AFDT_EXPORT int afdt_sync_client_opts(const char *fname, const uint8_t *request,
                                      uint32_t request_length, uint8_t *response,
                                      uint32_t *response_length, int *fds, uint32_t *nfds,
                                      struct afdt_named_fd **ret_named, uint32_t *ret_nnamed,
                                      const struct timeval *timeout,
                                      const struct afdt_client_options *opts,
                                      struct afdt_error_t *err) {
    return sync_client_ex(fname, request, request_length, response, response_length, fds, nfds,
                          ret_named, ret_nnamed, timeout, true, opts, err);
}
