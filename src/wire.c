/* SPDX-License-Identifier: BSD-3-Clause */
/* Frames: the only code that builds or parses SCM_RIGHTS messages. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* Room for the most descriptors one sendmsg can carry, so the kernel never
 * truncates for want of buffer: MSG_CTRUNC then means we are out of
 * descriptors. */
union cmsg_room {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * AFDT_MAX_FDS)];
};

/* Take the descriptors out of a received message: keep what fits, close the
 * rest. */
static void take_fds(struct afdt__frame_in *in, struct msghdr *msg) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, data + i * sizeof(int), sizeof(int));
            if (in->nfds < in->fds_cap) {
                in->fds[in->nfds++] = fd;
            } else {
                afdt__discard(fd);
                in->excess++;
            }
        }
    }
    if (msg->msg_flags & MSG_CTRUNC)
        in->ctrunc = true;
}

static int fail_frame(struct afdt__frame_in *in, struct afdt__fail *f, enum afdt_operation op,
                      int errnum, const char *msg) {
    afdt__discard_all(in->fds, in->nfds);
    in->nfds = 0;
    return afdt__fail(f, op, errnum, msg);
}

/* The frame is all in: decide whether it is good. */
static int finish_frame(struct afdt__frame_in *in, struct afdt__fail *f) {
    /* Our control buffer always has room for AFDT_MAX_FDS, so a truncation
     * is almost always the kernel failing to install a descriptor here.  A
     * receiver already holding all it asked for loses nothing by it: the
     * rest are excess, closed (or an error, with excess_fails) as if they
     * had come (a 2009 receiver, with room for one, never saw them). */
    if (in->ctrunc && in->nfds == in->fds_cap) {
        in->ctrunc = false;
        in->excess++;
    }
    if (in->ctrunc && afdt__fd_headroom() <= in->nfds + in->excess)
        return fail_frame(in, f, AFDT_RECVMSG, EMFILE,
                          "descriptors were dropped by the kernel (MSG_CTRUNC): "
                          "this process is out of descriptors (RLIMIT_NOFILE)");
    if (in->ctrunc)
        return fail_frame(in, f, AFDT_RECVMSG, ENOBUFS,
                          "control data was truncated by the kernel (MSG_CTRUNC) "
                          "although descriptors remain: descriptors were dropped");
    if (in->len > in->cap)
        return fail_frame(in, f, AFDT_FORMAT, 0, "frame is larger than the receive buffer");
    if (in->excess && in->excess_fails)
        return fail_frame(in, f, AFDT_FORMAT, EMSGSIZE,
                          "frame carried more descriptors than the receiver has room for");
    return 1;
}

void afdt__frame_restart(struct afdt__frame_in *in) {
    size_t from = offsetof(struct afdt__frame_in, hdr);
    memset((char *)in + from, 0, sizeof(*in) - from);
}

int afdt__frame_recv(int sock, struct afdt__frame_in *in, struct afdt__fail *f) {
    const uint32_t hdrlen = sizeof(uint32_t);
    uint8_t scratch[AFDT_MSGLEN];
    struct iovec iov[2];
    int niov = 0;

    if (in->got < hdrlen) {
        iov[niov++] = (struct iovec){in->hdr + in->got, hdrlen - in->got};
        if (in->greedy && in->cap > 0)
            iov[niov++] = (struct iovec){in->buf, in->cap};
    } else if (in->len <= in->cap) {
        uint32_t have = in->got - hdrlen;
        iov[niov++] = (struct iovec){in->buf + have, in->len - have};
    } else {
        /* Too big for the buffer but within AFDT_MSGLEN: consume it so the
         * stream stays in step, then report it. */
        uint32_t left = in->len - (in->got - hdrlen);
        iov[niov++] = (struct iovec){scratch, left};
    }

    union cmsg_room cm;
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)niov;
    msg.msg_control = cm.buf;
    msg.msg_controllen = sizeof(cm.buf);

    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | in->rflags);
    } while (n < 0 && errno == EINTR && !in->eintr_ends);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        return fail_frame(in, f, AFDT_RECVMSG, errno, "");
    }
    take_fds(in, &msg);
    if (n == 0) {
        if (in->got == 0)
            return fail_frame(in, f, AFDT_RECVMSG, 0, "connection closed by peer (end of file)");
        return fail_frame(in, f, AFDT_FORMAT, 0, "connection closed inside a frame");
    }

    bool had_header = in->got >= hdrlen;
    in->got += (uint32_t)n;
    if (!had_header && in->got >= hdrlen) {
        memcpy(&in->len, in->hdr, hdrlen);
        if (in->len > AFDT_MSGLEN)
            return fail_frame(in, f, AFDT_FORMAT, 0, "frame length exceeds AFDT_MSGLEN");
        if (in->greedy && in->len > in->cap)
            return fail_frame(in, f, AFDT_FORMAT, 0, "frame is larger than the receive buffer");
    }
    if (in->got >= hdrlen && in->got - hdrlen >= in->len)
        return finish_frame(in, f);
    return 0;
}

int afdt__frame_check(const struct afdt__frame_out *out, struct afdt__fail *f) {
    if (out->len > AFDT_MSGLEN)
        return afdt__fail(f, AFDT_FORMAT, 0, "content is longer than AFDT_MSGLEN");
    if (out->len > 0 && out->content == NULL)
        return afdt__fail(f, AFDT_FORMAT, EINVAL, "content is NULL but content_len is not 0");
    if (out->nfds > AFDT_MAX_FDS)
        return afdt__fail(f, AFDT_FORMAT, EINVAL, "more than AFDT_MAX_FDS descriptors");
    if (out->nfds > 0 && out->fds == NULL)
        return afdt__fail(f, AFDT_FORMAT, EINVAL, "fds is NULL but nfds is not 0");
    return 0;
}

int afdt__frame_send(int sock, struct afdt__frame_out *out, struct afdt__fail *f) {
    const uint32_t hdrlen = sizeof(uint32_t);
    uint8_t hdr[sizeof(uint32_t)];
    memcpy(hdr, &out->len, hdrlen);

    struct iovec iov[2];
    int niov = 0;
    if (out->sent < hdrlen)
        iov[niov++] = (struct iovec){hdr + out->sent, hdrlen - out->sent};
    uint32_t body_done = out->sent > hdrlen ? out->sent - hdrlen : 0;
    if (out->len > body_done)
        iov[niov++] = (struct iovec){(void *)(out->content + body_done), out->len - body_done};

    union cmsg_room cm;
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)niov;
    /* Descriptors ride with the first byte only. */
    if (out->sent == 0 && out->nfds > 0) {
        size_t bytes = sizeof(int) * out->nfds;
        memset(cm.buf, 0, CMSG_SPACE(bytes));
        msg.msg_control = cm.buf;
        msg.msg_controllen = CMSG_SPACE(bytes);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(bytes);
        memcpy(CMSG_DATA(c), out->fds, bytes);
    }

    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL | out->sflags);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return afdt__fail(f, AFDT_SENDMSG, errno, "");
    }
    out->sent += (uint32_t)n;
    return out->sent >= hdrlen + out->len ? 1 : 0;
}

int afdt__recv_frame_until(int sock, struct afdt__frame_in *in, bool fail_if_idle,
                           int64_t deadline_us, struct afdt__fail *f) {
    for (;;) {
        int r = afdt__frame_recv(sock, in, f);
        if (r != 0)
            return r;
        if (fail_if_idle && in->got == 0)
            return afdt__fail(f, AFDT_RECVMSG, EAGAIN, "");
        r = afdt__poll_until(sock, POLLIN, deadline_us);
        if (r <= 0) {
            afdt__discard_all(in->fds, in->nfds);
            in->nfds = 0;
            if (r == 0)
                return afdt__fail(f, AFDT_TIMEOUT, ETIMEDOUT, "timed out waiting for a frame");
            return afdt__fail(f, AFDT_POLL, -r, "");
        }
    }
}

int afdt__send_frame_until(int sock, struct afdt__frame_out *out, bool fail_if_idle,
                           int64_t deadline_us, struct afdt__fail *f) {
    for (;;) {
        int r = afdt__frame_send(sock, out, f);
        if (r != 0)
            return r;
        if (fail_if_idle && out->sent == 0)
            return afdt__fail(f, AFDT_SENDMSG, EAGAIN, "");
        r = afdt__poll_until(sock, POLLOUT, deadline_us);
        if (r == 0)
            return afdt__fail(f, AFDT_TIMEOUT, ETIMEDOUT, "timed out sending a frame");
        if (r < 0)
            return afdt__fail(f, AFDT_POLL, -r, "");
    }
}

/* --- The public frame calls ---------------------------------------------- */

static int send_frame(int connfd, struct afdt__frame_out *out, struct afdt_error_t *err) {
    struct afdt__fail f;
    if (afdt__frame_check(out, &f) < 0 || afdt__send_frame_until(connfd, out, true, -1, &f) < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    return 0;
}

AFDT_EXPORT int afdt_send_fd_msg(int connfd, const uint8_t *content, uint32_t content_len,
                                 int fd_to_send, struct afdt_error_t *err) {
    struct afdt__frame_out out = {content, content_len, &fd_to_send, fd_to_send >= 0, 0, 0};
    return send_frame(connfd, &out, err);
}

AFDT_EXPORT int afdt_send_plain_msg(int connfd, const uint8_t *content, uint32_t content_len,
                                    struct afdt_error_t *err) {
    struct afdt__frame_out out = {content, content_len, NULL, 0, 0, 0};
    return send_frame(connfd, &out, err);
}

AFDT_EXPORT int afdt_send_fds_msg(int connfd, const uint8_t *content, uint32_t content_len,
                                  const int *fds, uint32_t nfds, struct afdt_error_t *err) {
    struct afdt__frame_out out = {content, content_len, fds, nfds, 0, 0};
    return send_frame(connfd, &out, err);
}

/* Receive one frame into the caller's buffers; on failure nothing is
 * received and *content_len is left as it was. */
static int recv_frame(int connfd, uint8_t *content, uint32_t *content_len, int *fds,
                      uint32_t fds_cap, bool excess_fails, struct afdt_error_t *err) {
    struct afdt__fail f;
    if (content_len == NULL)
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "content_len is NULL");
    else if (content == NULL && *content_len > 0)
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "content is NULL but *content_len is not 0");
    else {
        struct afdt__frame_in in = {0};
        in.buf = content;
        in.cap = *content_len;
        in.fds = fds;
        in.fds_cap = fds_cap;
        in.excess_fails = excess_fails;
        if (afdt__recv_frame_until(connfd, &in, true, -1, &f) > 0) {
            *content_len = in.len;
            return (int)in.nfds;
        }
    }
    return afdt__report(err, AFDT__KEEP_PHASE, &f);
}

AFDT_EXPORT int afdt_recv_fd_msg(int connfd, uint8_t *content, uint32_t *content_len,
                                 int *received_fd, struct afdt_error_t *err) {
    int fd = -1;
    int r = recv_frame(connfd, content, content_len, &fd, 1, false, err);
    if (received_fd)
        *received_fd = fd;
    else if (fd >= 0)
        afdt__discard(fd);
    return r < 0 ? r : 0;
}

AFDT_EXPORT int afdt_recv_plain_msg(int connfd, uint8_t *content, uint32_t *content_len,
                                    struct afdt_error_t *err) {
    int r = recv_frame(connfd, content, content_len, NULL, 0, false, err);
    return r < 0 ? r : 0;
}

AFDT_EXPORT int afdt_recv_fds_msg(int connfd, uint8_t *content, uint32_t *content_len, int *fds,
                                  uint32_t *nfds, struct afdt_error_t *err) {
    struct afdt__fail f;
    if (nfds == NULL || (fds == NULL && *nfds > 0)) {
        if (nfds)
            *nfds = 0;
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "fds or nfds is NULL");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    uint32_t cap = *nfds < AFDT_MAX_FDS ? *nfds : AFDT_MAX_FDS;
    int r = recv_frame(connfd, content, content_len, fds, cap, true, err);
    *nfds = r < 0 ? 0 : (uint32_t)r;
    return r < 0 ? r : 0;
}
