/* SPDX-License-Identifier: BSD-3-Clause */
/* Named descriptor sets: any number of named descriptors over several frames.
 *
 * Protocol version 2, "AFDTNAMED2" (libafdt 1.1; all integers host order, like the frame
 * header):
 *   1. the offer: a header frame, no descriptors: "AFDTNAMED2", uint32_t count, then up to
 *      AFDT_MSGLEN - 14 bytes of content;
 *   2. the receiver asks for the set with an acknowledgement of nothing: one frame "AFDTACK2",
 *      uint32_t 0.  A 2009 (or 1.0) client never sends a frame after its request, so it takes
 *      the offer for its whole answer and no descriptor is ever sent to it;
 *   3. data frames, each carrying k (1..AFDT_MAX_FDS) descriptors and a payload of k entries,
 *      one per descriptor in order: uint8_t length, then the name (1..255 printable ASCII
 *      bytes, no ':').  The sender starts one only while fewer than AFDT__NAMED_WINDOW
 *      descriptors are unacknowledged, so a set never has more than 2 * 253 - 1 in flight (the
 *      kernel counts a user's descriptors in flight against its RLIMIT_NOFILE);
 *   4. after each data frame the receiver answers "AFDTACK2", uint32_t descriptors received so
 *      far.  The one that says count ends the exchange; until then the sender lets go of
 *      nothing.
 * Version 1, "AFDTNAMED1" (libafdt 1.0): the header, then every data frame at once, then one
 * "AFDTACK1", uint32_t count.  Receivers still take it; senders no longer send it.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "internal.h"

static bool name_ok(const char *name, size_t *ret_len) {
    size_t len = strnlen(name, AFDT_NAME_MAX + 1);
    if (len == 0 || len > AFDT_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] < 0x20 || name[i] > 0x7e || name[i] == ':')
            return false;
    *ret_len = len;
    return true;
}

static void put_u32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, sizeof(v));
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

uint64_t afdt__fd_headroom(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return UINT64_MAX;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) /* needing a descriptor to look, and having none, answers it */
        return errno == EMFILE ? 0 : UINT64_MAX;
    uint64_t open_now = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            open_now++;
    closedir(d); /* it was counted too, and is closed now */
    open_now = open_now > 0 ? open_now - 1 : 0;
    return rl.rlim_cur > open_now ? rl.rlim_cur - open_now : 0;
}

/* --- Sending -------------------------------------------------------------- */

int afdt__named_out_init(struct afdt__named_out *o, const uint8_t *content, uint32_t content_len,
                         const struct afdt_named_fd *set, uint32_t n, struct afdt__fail *f) {
    if (content_len > AFDT_MSGLEN - AFDT__NAMED_HDR_LEN || (content_len && content == NULL))
        return afdt__fail(f, AFDT_FORMAT, EINVAL, "named set content is too long or NULL");
    if (n > 0 && set == NULL)
        return afdt__fail(f, AFDT_FORMAT, EINVAL, "named set is NULL");
    for (uint32_t i = 0; i < n; i++) {
        size_t len;
        if (!name_ok(set[i].name, &len) || set[i].fd < 0)
            return afdt__fail(f, AFDT_FORMAT, EINVAL,
                              "a named descriptor has a bad name (1-255 printable ASCII bytes, "
                              "no ':') or a negative descriptor");
    }
    memset(o, 0, offsetof(struct afdt__named_out, payload));
    o->set = set;
    o->n = n;
    memcpy(o->payload, AFDT__NAMED_MAGIC, AFDT__NAMED_MAGIC_LEN);
    put_u32(o->payload + AFDT__NAMED_MAGIC_LEN, n);
    if (content_len)
        memcpy(o->payload + AFDT__NAMED_HDR_LEN, content, content_len);
    o->out = (struct afdt__frame_out){
        o->payload, AFDT__NAMED_HDR_LEN + content_len, NULL, 0, MSG_DONTWAIT, 0};
    o->framing = true;
    o->in.buf = o->ack;
    o->in.cap = AFDT__ACK_LEN;
    o->in.rflags = MSG_DONTWAIT;
    return 0;
}

/* Pack as many of the remaining descriptors as fit into the next frame. */
static void build_data_frame(struct afdt__named_out *o) {
    uint32_t used = 0, k = 0;
    while (o->next < o->n && k < AFDT_MAX_FDS) {
        const struct afdt_named_fd *e = &o->set[o->next];
        size_t len = strnlen(e->name, AFDT_NAME_MAX);
        if (used + 1 + len > AFDT_MSGLEN)
            break;
        o->payload[used++] = (uint8_t)len;
        memcpy(o->payload + used, e->name, len);
        used += (uint32_t)len;
        o->fds[k++] = e->fd;
        o->next++;
    }
    o->out = (struct afdt__frame_out){o->payload, used, o->fds, k, o->out.sflags, 0};
}

/* Take every acknowledgement that has arrived, up to the last one (the receiver may hang up
 * right after it). */
static int read_acks(int sock, struct afdt__named_out *o, struct afdt__fail *f) {
    while (!o->asked || o->acked < o->n) {
        int r = afdt__frame_recv(sock, &o->in, f);
        if (r < 0 && !o->asked && f->op == AFDT_RECVMSG && f->errnum == 0)
            return afdt__fail(
                f, AFDT_RECVMSG, 0,
                "the client did not ask for the named set (a client of libafdt 0.1 "
                "or 1.0 takes the offer for its whole answer): no descriptor was sent");
        if (r <= 0)
            return r;
        uint32_t count = get_u32(o->ack + 8);
        if (o->in.len != AFDT__ACK_LEN || memcmp(o->ack, AFDT__ACK_MAGIC, 8) != 0 ||
            count < o->acked || count > o->next || (!o->asked && count != 0))
            return afdt__fail(f, AFDT_FORMAT, 0, "bad acknowledgement of a named set");
        o->asked = true;
        o->acked = count;
        afdt__frame_restart(&o->in);
    }
    return 1;
}

/* Back pressure at a RLIMIT_NOFILE's worth of this user's descriptors in flight: wait, longer
 * each time, and give up only after PRESSURE_MAX_US of it (or at the caller's deadline). */
#define PAUSE_FIRST_US 1000
#define PAUSE_MAX_US (64 * 1000)
#define PRESSURE_MAX_US ((int64_t)10 * 1000 * 1000)

static int back_pressure(struct afdt__named_out *o, struct afdt__fail *f) {
    int64_t now = afdt__now_us();
    if (o->pressed_since_us == 0) {
        o->pressed_since_us = now;
        o->pause_us = PAUSE_FIRST_US;
    } else if (now - o->pressed_since_us >= PRESSURE_MAX_US) {
        return afdt__fail(f, AFDT_SENDMSG, ETOOMANYREFS,
                          "this user has had too many descriptors in flight for 10 s "
                          "(RLIMIT_NOFILE)");
    } else {
        o->pause_us = o->pause_us * 2 > PAUSE_MAX_US ? PAUSE_MAX_US : o->pause_us * 2;
    }
    o->wait = AFDT__WAIT_PAUSE;
    return 0;
}

int afdt__named_out_step(int sock, struct afdt__named_out *o, struct afdt__fail *f) {
    for (;;) {
        if (o->framing) {
            int r = afdt__frame_send(sock, &o->out, f);
            if (r < 0 && f->errnum == ETOOMANYREFS && o->out.sent == 0)
                return back_pressure(o, f);
            if (r < 0)
                return -1;
            if (r == 0) {
                o->wait = AFDT__WAIT_WRITE;
                return 0;
            }
            o->framing = false;
            o->pressed_since_us = 0;
        }
        if (read_acks(sock, o, f) < 0)
            return -1;
        if (o->asked && o->acked == o->n)
            return 1;
        if (o->asked && o->next < o->n && o->next - o->acked < AFDT__NAMED_WINDOW) {
            build_data_frame(o);
            o->framing = true;
            continue;
        }
        o->wait = AFDT__WAIT_READ;
        return 0;
    }
}

/* --- Receiving ------------------------------------------------------------ */

/* The protocol version of a header frame, or 0 when it is none. */
static uint8_t header_version(const uint8_t *payload, uint32_t len, uint32_t nfds) {
    if (nfds != 0 || len < AFDT__NAMED_HDR_LEN)
        return 0;
    if (memcmp(payload, AFDT__NAMED_MAGIC, AFDT__NAMED_MAGIC_LEN) == 0)
        return 2;
    return memcmp(payload, AFDT__NAMED_MAGIC_V1, AFDT__NAMED_MAGIC_LEN) == 0 ? 1 : 0;
}

bool afdt__is_named_header(const uint8_t *payload, uint32_t len, uint32_t nfds) {
    return header_version(payload, len, nfds) != 0;
}

int afdt__named_in_init(struct afdt__named_in *st, uint8_t *payload, uint32_t *content_len,
                        int rflags, struct afdt__fail *f) {
    uint32_t count = get_u32(payload + AFDT__NAMED_MAGIC_LEN);
    memset(st, 0, offsetof(struct afdt__named_in, payload));
    st->version = header_version(payload, *content_len, 0);
    /* Check before asking for them: the kernel would silently drop what does
     * not fit (MSG_CTRUNC), and the set would be lost half-way. */
    uint64_t room = afdt__fd_headroom();
    if (count > room)
        return afdt__fail(f, AFDT_RECVMSG, EMFILE,
                          "not enough descriptors left under RLIMIT_NOFILE for the named set");
    st->set = calloc(count ? count : 1, sizeof(*st->set));
    if (st->set == NULL)
        return afdt__fail(f, AFDT_MALLOC, ENOMEM, "");
    st->count = count;
    *content_len -= AFDT__NAMED_HDR_LEN;
    memmove(payload, payload + AFDT__NAMED_HDR_LEN, *content_len);
    st->in.buf = st->payload;
    st->in.cap = AFDT_MSGLEN;
    st->in.fds = st->fds;
    st->in.fds_cap = AFDT_MAX_FDS;
    st->in.excess_fails = true;
    st->in.rflags = rflags;
    return 0;
}

/* Take one data frame's descriptors and names into the set. */
static int take_data_frame(struct afdt__named_in *st, struct afdt__fail *f) {
    struct afdt__frame_in *in = &st->in;
    uint32_t pos = 0, k = 0;
    while (pos < in->len && k < in->nfds) {
        uint32_t len = st->payload[pos++];
        if (len == 0 || pos + len > in->len)
            break;
        struct afdt_named_fd *e = &st->set[st->n + k];
        memcpy(e->name, st->payload + pos, len);
        e->name[len] = '\0';
        size_t ok_len;
        if (!name_ok(e->name, &ok_len) || ok_len != len) /* a NUL inside cuts it short */
            break;
        pos += len;
        k++;
    }
    if (k == 0 || k != in->nfds || pos != in->len) {
        afdt__discard_all(in->fds, in->nfds);
        return afdt__fail(f, AFDT_FORMAT, 0, "malformed frame in a named set");
    }
    for (uint32_t i = 0; i < k; i++)
        st->set[st->n + i].fd = in->fds[i]; /* now the set's */
    st->n += k;
    return 0;
}

/* Queue an acknowledgement of what is in: version 2 after the offer (the request) and after
 * each data frame, version 1 once at the end. */
static bool queue_ack(struct afdt__named_in *st) {
    if (st->version == 2 ? st->asked && st->acked == st->n : st->n < st->count)
        return false;
    memcpy(st->ack, st->version == 2 ? AFDT__ACK_MAGIC : AFDT__ACK_MAGIC_V1, 8);
    put_u32(st->ack + 8, st->n);
    st->out = (struct afdt__frame_out){st->ack, AFDT__ACK_LEN, NULL, 0, st->in.rflags, 0};
    st->asked = true;
    st->acked = st->n;
    st->acking = true;
    return true;
}

int afdt__named_in_step(int sock, struct afdt__named_in *st, struct afdt__fail *f) {
    for (;;) {
        if (st->acking) {
            int r = afdt__frame_send(sock, &st->out, f);
            if (r <= 0)
                return r;
            st->acking = false;
            if (st->n == st->count)
                return 1;
        }
        if (queue_ack(st))
            continue;
        int r = afdt__frame_recv(sock, &st->in, f);
        if (r <= 0)
            return r;
        if (st->in.nfds > st->count - st->n) {
            afdt__discard_all(st->in.fds, st->in.nfds);
            return afdt__fail(f, AFDT_FORMAT, 0, "named set has more descriptors than announced");
        }
        if (take_data_frame(st, f) < 0)
            return -1;
        afdt__frame_restart(&st->in);
    }
}

void afdt__named_in_abort(struct afdt__named_in *st) {
    afdt__discard_all(st->in.fds, st->in.nfds);
    st->in.nfds = 0;
    for (uint32_t i = 0; i < st->n; i++)
        afdt__discard(st->set[i].fd);
    afdt_named_fds_free(st->set, st->n, 0);
    st->set = NULL;
    st->n = 0;
}

/* --- The public calls ----------------------------------------------------- */

AFDT_EXPORT int afdt_send_named_fds(int connfd, const uint8_t *content, uint32_t content_len,
                                    const struct afdt_named_fd *set, uint32_t n,
                                    struct afdt_error_t *err) {
    struct afdt__fail f;
    struct afdt__named_out *o = malloc(sizeof(*o));
    if (o == NULL) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    int r = afdt__named_out_init(o, content, content_len, set, n, &f);
    while (r == 0) {
        r = afdt__named_out_step(connfd, o, &f);
        if (r != 0)
            break;
        /* Back pressure: a pause, which only a hang-up (POLLHUP, always reported) cuts short. */
        bool pause = o->wait == AFDT__WAIT_PAUSE;
        short events = pause ? 0 : o->wait == AFDT__WAIT_WRITE ? POLLOUT : POLLIN;
        r = afdt__poll_until(connfd, events, pause ? afdt__now_us() + o->pause_us : -1);
        r = r < 0 ? afdt__fail(&f, AFDT_POLL, -r, "") : 0;
    }
    free(o);
    return r < 0 ? afdt__report(err, AFDT__KEEP_PHASE, &f) : 0;
}

/* Receive a named set whose header frame is in @payload (@len bytes), finish
 * it (blocking until @deadline_us) and copy its content out. */
int afdt__named_recv_rest(int sock, uint8_t *payload, uint32_t len, uint8_t *content,
                          uint32_t *content_len, struct afdt_named_fd **ret_set, uint32_t *ret_n,
                          int rflags, int64_t deadline_us, struct afdt__fail *f) {
    struct afdt__named_in *st = malloc(sizeof(*st));
    if (st == NULL)
        return afdt__fail(f, AFDT_MALLOC, ENOMEM, "");
    int r = afdt__named_in_init(st, payload, &len, rflags, f);
    if (r == 0 && len > *content_len)
        r = afdt__fail(f, AFDT_FORMAT, 0, "named set content is larger than the buffer");
    while (r == 0) {
        r = afdt__named_in_step(sock, st, f);
        if (r != 0)
            break;
        r = afdt__poll_until(sock, st->acking ? POLLOUT : POLLIN, deadline_us);
        if (r == 0)
            r = afdt__fail(f, AFDT_TIMEOUT, ETIMEDOUT, "timed out receiving a named set");
        else
            r = r < 0 ? afdt__fail(f, AFDT_POLL, -r, "") : 0;
    }
    if (r < 0) {
        afdt__named_in_abort(st);
    } else {
        if (len)
            memcpy(content, payload, len);
        *content_len = len;
        *ret_set = st->set; /* now the caller's */
        *ret_n = st->n;
    }
    free(st);
    return r < 0 ? -1 : 0;
}

AFDT_EXPORT int afdt_recv_named_fds(int connfd, uint8_t *content, uint32_t *content_len,
                                    struct afdt_named_fd **ret_set, uint32_t *ret_n,
                                    struct afdt_error_t *err) {
    struct afdt__fail f;
    uint8_t payload[AFDT_MSGLEN];
    if (content_len == NULL || ret_set == NULL || ret_n == NULL ||
        (content == NULL && *content_len > 0)) {
        afdt__fail(&f, AFDT_RECVMSG, EINVAL, "content_len, ret_set or ret_n is NULL");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    struct afdt__frame_in in = {0};
    in.buf = payload;
    in.cap = AFDT_MSGLEN;
    if (afdt__recv_frame_until(connfd, &in, false, -1, &f) < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    if (in.excess || !afdt__is_named_header(payload, in.len, 0)) {
        afdt__fail(&f, AFDT_FORMAT, 0, "not a named set");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    if (afdt__named_recv_rest(connfd, payload, in.len, content, content_len, ret_set, ret_n, 0, -1,
                              &f) < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    return 0;
}

AFDT_EXPORT void afdt_named_fds_free(struct afdt_named_fd *set, uint32_t n, int close_fds) {
    if (set == NULL)
        return;
    if (close_fds)
        for (uint32_t i = 0; i < n; i++)
            afdt__close(set[i].fd);
    free(set);
}

AFDT_EXPORT int afdt_named_fds_find(const struct afdt_named_fd *set, uint32_t n, const char *name) {
    if (set == NULL || name == NULL)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (strncmp(set[i].name, name, sizeof(set[i].name)) == 0)
            return set[i].fd;
    return -1;
}
