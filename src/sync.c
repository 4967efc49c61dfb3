/* SPDX-License-Identifier: BSD-3-Clause */
/* The blocking client: one exchange, with one deadline over all of it. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "internal.h"

/* Connect, waiting at most until @deadline_us (< 0: forever) while the
 * server's backlog is full.  Linux makes a blocking Unix connect wait for
 * room for up to SO_SNDTIMEO, so the kernel does the waiting for us. */
static int connect_until(int sock, const struct afdt__addr *a, int64_t deadline_us,
                         struct afdt__fail *f) {
    if (deadline_us >= 0) {
        int64_t left = deadline_us - afdt__now_us();
        if (left < 1)
            left = 1; /* 0 would mean "forever" */
        struct timeval tv = {.tv_sec = (time_t)(left / 1000000),
                             .tv_usec = (suseconds_t)(left % 1000000)};
        if (setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
            return afdt__fail(f, AFDT_CONNECT, errno, "setting the connect timeout failed");
    }
    int r = afdt__connect_once(sock, a);
    if (r == 0)
        return 0;
    if (r == -EAGAIN && deadline_us >= 0)
        return afdt__fail(f, AFDT_TIMEOUT, ETIMEDOUT,
                          "timed out waiting for room in the server's backlog");
    return afdt__fail(f, AFDT_CONNECT, -r, "");
}

AFDT_EXPORT int afdt_sync_client(const char *fname, const uint8_t *request, uint32_t request_length,
                                 uint8_t *response, uint32_t *response_length, int *received_fd,
                                 const struct timeval *timeout, struct afdt_error_t *err) {
    int64_t deadline = timeout ? afdt__now_us() + afdt__timeval_us(timeout) : -1;
    struct afdt__fail f;
    struct afdt__addr a;
    int sock = -1;
    int fd = -1;

    if (received_fd)
        *received_fd = -1;
    if (response_length == NULL || received_fd == NULL) {
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "response_length or received_fd is NULL");
        goto out;
    }
    if (response == NULL && *response_length > 0) {
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "response is NULL but *response_length is not 0");
        goto out;
    }
    struct afdt__frame_out req = {request, request_length, NULL, 0, MSG_DONTWAIT, 0};
    if (afdt__frame_check(&req, &f) < 0 || afdt__addr_parse(fname, &a, &f) < 0)
        goto out;
    sock = afdt__socket(0, &f);
    if (sock < 0 || connect_until(sock, &a, deadline, &f) < 0)
        goto out;
    if (afdt__send_frame_until(sock, &req, false, deadline, &f) < 0)
        goto out;

    struct afdt__frame_in in = {0};
    in.buf = response;
    in.cap = *response_length;
    in.fds = &fd;
    in.fds_cap = 1;
    in.greedy = true; /* the connection is ours alone */
    in.rflags = MSG_DONTWAIT;
    if (afdt__recv_frame_until(sock, &in, false, deadline, &f) < 0)
        goto out;
    afdt__close(sock);
    *response_length = in.len;
    *received_fd = fd; /* now the caller's */
    return 0;
out:
    afdt__close(sock);
    return afdt__report(err, AFDT__KEEP_PHASE, &f);
}
