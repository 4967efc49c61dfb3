/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the libevent server (extended and 2009-style) fed scripted raw clients over
 * real sockets, then asked one good question at the end of every input.
 *
 * Three servers live for the whole process on one event_base: afdt_create_server_ex() at
 * "@afdt-fuzz-<pid>" (at most 8 connections, so the cap is reachable), afdt_create_server() at
 * "@afdt-fuzz-<pid>-v0", and an extended one at "@afdt-fuzz-<pid>-short" with a 5 ms deadline
 * and a uid allow-list.  Their request handlers act on the request's first three bytes
 * (command, parameters): echo, echo with one or many copies of /dev/null, a named set (up to
 * 255 entries, long or one-byte names), no answer, an invalid reply, close the server from
 * inside the handler (it is created again afterwards), a full-size answer.
 *
 * The input is a script of one-byte operations (kind in the top three bits, a client index in
 * the low four) with operands after them: 0 connect (low two bits: extended, 2009-style,
 * short-deadline, extended), 1 a raw chunk of 1-16 bytes (bit 4: with descriptors), 2 a
 * request frame written in small uneven pieces (lying about its length, or with descriptors,
 * as a flags byte says), 3 run the loop, 4 read what the server sent, 5 acknowledge a named
 * set (bit 4: a count from the input, else 0, which asks for it), 6 close the client (bit 4: shut
 * down writing only), 7 control (low five bits 0-15: toggle refusing every peer; 16-31: sleep past
 * the short deadline, once per input).  Running out of descriptors is left to tests/test_hostile.c:
 * the server then pauses accepting for 100 ms, which would slow fuzzing a hundredfold.  The loop
 * runs (EVLOOP_NONBLOCK) after every write.  Then the clients are closed and the loop runs until
 * the process is back to its descriptors at the start; then each long-deadline server must answer a
 * good request, the count must be back again, and every reply must have had its post handler.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "afdt.h"
#include "fuzz_util.h"

#define MSGLEN ((uint32_t)AFDT_MSGLEN)
#define MAX_CLIENTS 12
#define MAX_CONNECTS 32
#define EX_MAX_CONNS 8
#define SHORT_TIMEOUT_MS 5
#define SLEEP_MS 6
#define MAX_NAMED 255
#define SETTLE_MS 3000

enum cmd {
    CMD_ECHO,
    CMD_ECHO_FD,
    CMD_ECHO_FDS,
    CMD_NAMED,
    CMD_DECLINE,
    CMD_BAD_REPLY,
    CMD_CLOSE_SERVER,
    CMD_FULL,
};

enum { SRV_EX, SRV_V0, SRV_SHORT, NSRV };

struct server {
    void *handle; /* NULL once closed from a handler, until created again */
    char name[64];
};

static struct {
    struct event_base *eb;
    struct server srv[NSRV];
    bool creating;
    bool refuse;
    bool slept, short_used;
    struct afdt_named_fd named_long[MAX_NAMED], named_short[MAX_NAMED];
    /* This input's replies and post handler calls: extended, 2009-style. */
    unsigned replies_ex, posts_ex, replies_v0, posts_v0;
} G;

static int clients[MAX_CLIENTS];
static unsigned nconnects;

/* --- The servers' callbacks -------------------------------------------- */

static void on_error(const struct afdt_error_t *e, void *ud) {
    int eno = errno;
    (void)ud;
    FUZZ_CHECK(e->message != NULL, "server error with a NULL message");
    if (getenv("AFDT_FUZZ_TRACE"))
        fprintf(stderr, "server error: %s %s errno %d %s\n", afdt_phase_str(e->phase),
                afdt_operation_str(e->operation), eno, e->message);
    if (G.creating)
        fuzz_violation("creating a server failed: %s %s errno %d (%s)", afdt_phase_str(e->phase),
                       afdt_operation_str(e->operation), eno, e->message);
    FUZZ_CHECK(e->phase == AFDT_ACCEPT_CLIENT || e->phase == AFDT_HANDLE_REQUEST,
               "server error in phase %s", afdt_phase_str(e->phase));
    switch (e->operation) {
    case AFDT_TIMEOUT: FUZZ_CHECK(eno == ETIMEDOUT, "AFDT_TIMEOUT with errno %d", eno); break;
    case AFDT_NO_OPERATION:
        FUZZ_CHECK(eno == EACCES && G.refuse, "AFDT_NO_OPERATION with errno %d", eno);
        break;
    case AFDT_FORMAT:
        FUZZ_CHECK(eno == 0 || eno == EMSGSIZE || eno == EINVAL, "AFDT_FORMAT with errno %d", eno);
        break;
    case AFDT_RECVMSG:
        FUZZ_CHECK(eno == 0 || eno == ECONNRESET || eno == ECONNABORTED || eno == EMFILE ||
                       eno == ENOBUFS,
                   "AFDT_RECVMSG with errno %d (%s)", eno, e->message);
        break;
    case AFDT_SENDMSG:
    case AFDT_ACCEPT:
    case AFDT_EVENT_ADD:
        FUZZ_CHECK(eno != 0, "%s with errno 0", afdt_operation_str(e->operation));
        break;
    case AFDT_MALLOC: FUZZ_CHECK(eno == ENOMEM, "AFDT_MALLOC with errno %d", eno); break;
    default:
        fuzz_violation("server error %s errno %d (%s)", afdt_operation_str(e->operation), eno,
                       e->message);
    }
}

static int authorize(const struct afdt_peer *peer, void *ud) {
    (void)ud;
    FUZZ_CHECK(peer->pid == getpid() && peer->uid == getuid() && peer->gid == getgid(),
               "SO_PEERCRED says pid %d uid %u gid %u", peer->pid, peer->uid, peer->gid);
    return !G.refuse;
}

static uint8_t req_byte(const uint8_t *req, uint32_t len, uint32_t i) {
    return i < len ? req[i] : 0;
}

static void close_from_handler(struct server *sv) {
    FUZZ_CHECK(afdt_close_server(sv->handle) == 0, "afdt_close_server failed in a handler");
    sv->handle = NULL;
}

static int on_request_ex(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                         struct afdt_reply *reply, void *ud) {
    FUZZ_CHECK(peer->pid == getpid(), "request from pid %d", peer->pid);
    FUZZ_CHECK(len <= MSGLEN, "request of %u bytes", len);
    FUZZ_CHECK(reply->content != NULL && reply->content_length == 0 && reply->fds != NULL &&
                   reply->nfds == 0 && reply->named == NULL && reply->nnamed == 0,
               "the reply does not start empty");
    uint8_t param = req_byte(req, len, 1);
    memcpy(reply->content, req, len);
    reply->content_length = len;
    switch ((enum cmd)(req_byte(req, len, 0) % 8u)) {
    case CMD_ECHO: break;
    case CMD_ECHO_FD:
        reply->fds[0] = fuzz_devnull();
        reply->nfds = 1;
        break;
    case CMD_ECHO_FDS:
        reply->nfds = param % (AFDT_MAX_FDS + 1u);
        for (uint32_t i = 0; i < reply->nfds; i++)
            reply->fds[i] = fuzz_devnull();
        break;
    case CMD_NAMED:
        reply->named = req_byte(req, len, 2) & 1 ? G.named_short : G.named_long;
        reply->nnamed = param;
        if (reply->content_length > MSGLEN - 14)
            reply->content_length = MSGLEN - 14;
        break;
    case CMD_DECLINE: return -1;
    case CMD_BAD_REPLY:
        if (param & 1)
            reply->content_length = MSGLEN + 1u + param;
        else
            reply->nfds = AFDT_MAX_FDS + 1u;
        break;
    case CMD_CLOSE_SERVER: close_from_handler(ud); break;
    case CMD_FULL:
        memset(reply->content, param, MSGLEN);
        reply->content_length = MSGLEN;
        break;
    }
    G.replies_ex++;
    return 0;
}

/* Runs once per reply, sent (@error 0) or not. */
static void on_post_ex(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                       const struct afdt_reply *reply, int error, void *ud) {
    (void)ud;
    FUZZ_CHECK(peer->pid == getpid(), "post handler for pid %d", peer->pid);
    G.posts_ex++;
    if (getenv("AFDT_FUZZ_TRACE"))
        fprintf(stderr, "post: command %u error %d\n", req_byte(req, len, 0), error);
    FUZZ_CHECK(G.posts_ex <= G.replies_ex, "more post handlers (%u) than replies (%u)", G.posts_ex,
               G.replies_ex);
    FUZZ_CHECK(error >= 0, "post handler given error %d", error);
    enum cmd c = (enum cmd)(req_byte(req, len, 0) % 8u);
    FUZZ_CHECK(c != CMD_BAD_REPLY || error != 0, "an invalid reply was sent");
    if (c == CMD_BAD_REPLY || c == CMD_FULL)
        return;
    FUZZ_CHECK(c == CMD_NAMED ? reply->named == G.named_long || reply->named == G.named_short
                              : reply->named == NULL,
               "post handler given another named set than the handler");
    uint32_t want = c == CMD_NAMED && len > MSGLEN - 14 ? MSGLEN - 14 : len;
    FUZZ_CHECK(reply->content_length == want && memcmp(reply->content, req, want) == 0,
               "post handler given another response than the handler wrote");
    for (uint32_t i = 0; i < reply->nfds; i++)
        FUZZ_CHECK(reply->fds[i] == fuzz_devnull(), "post handler given fds[%u] = %d", i,
                   reply->fds[i]);
}

static int on_request_v0(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                         void *ud) {
    (void)ud;
    FUZZ_CHECK(*resp_len == MSGLEN, "2009 request handler given room for %u bytes", *resp_len);
    memcpy(resp, req, len);
    *resp_len = len;
    G.replies_v0++;
    switch (req_byte(req, len, 0) % 4u) {
    case 0: return -1;
    case 1: return fuzz_devnull();
    case 2: *resp_len = 0; return -1;
    default: close_from_handler(ud); return fuzz_devnull();
    }
}

static void on_post_v0(const uint8_t *req, uint32_t len, const uint8_t *resp, uint32_t resp_len,
                       int sent_fd, void *ud) {
    (void)ud;
    G.posts_v0++;
    FUZZ_CHECK(G.posts_v0 <= G.replies_v0, "more post handlers than replies");
    unsigned c = req_byte(req, len, 0) % 4u;
    FUZZ_CHECK(sent_fd == (c == 0 || c == 2 ? -1 : fuzz_devnull()),
               "2009 post handler given sent_fd %d", sent_fd);
    if (c != 2)
        FUZZ_CHECK(resp_len == len && memcmp(resp, req, len) == 0,
                   "2009 post handler given another response than the handler wrote");
}

/* --- Servers and clients --------------------------------------------------- */

static void create_ex(int which) {
    static uint32_t uids[2];
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.authorize = authorize;
    o.request_handler = on_request_ex;
    o.post_handler = on_post_ex;
    o.error_handler = on_error;
    o.userdata = &G.srv[which];
    if (which == SRV_EX) {
        o.max_conns = EX_MAX_CONNS;
    } else {
        uids[0] = getuid() + 1; /* someone else first: the list is searched */
        uids[1] = getuid();
        o.n_allowed_uids = 2;
        o.allowed_uids = uids;
        o.conn_timeout_ms = SHORT_TIMEOUT_MS;
    }
    if (afdt_create_server_ex(G.srv[which].name, G.eb, &o, &G.srv[which].handle) < 0)
        fuzz_violation("afdt_create_server_ex failed");
}

/* Create the servers that are missing (closed from a handler, or not yet
 * created). */
static void ensure_servers(void) {
    G.creating = true;
    if (G.srv[SRV_EX].handle == NULL)
        create_ex(SRV_EX);
    if (G.srv[SRV_SHORT].handle == NULL)
        create_ex(SRV_SHORT);
    if (G.srv[SRV_V0].handle == NULL &&
        afdt_create_server(G.srv[SRV_V0].name, G.eb, on_request_v0, on_post_v0, on_error,
                           &G.srv[SRV_V0].handle, &G.srv[SRV_V0]) < 0)
        fuzz_violation("afdt_create_server failed");
    G.creating = false;
}

static void init_once(void) {
    if (G.eb)
        return;
    fuzz_devnull();
    G.eb = event_base_new();
    if (G.eb == NULL)
        fuzz_violation("event_base_new failed");
    snprintf(G.srv[SRV_EX].name, sizeof(G.srv[0].name), "@afdt-fuzz-%d", (int)getpid());
    snprintf(G.srv[SRV_V0].name, sizeof(G.srv[0].name), "@afdt-fuzz-%d-v0", (int)getpid());
    snprintf(G.srv[SRV_SHORT].name, sizeof(G.srv[0].name), "@afdt-fuzz-%d-short", (int)getpid());
    /* Long names take several frames; one-byte names fill a frame's
     * AFDT_MAX_FDS before its payload. */
    for (int i = 0; i < MAX_NAMED; i++) {
        G.named_long[i].fd = G.named_short[i].fd = fuzz_devnull();
        snprintf(G.named_long[i].name, sizeof(G.named_long[i].name), "fuzz-%d-%.*s", i, i * 13 % 40,
                 "0123456789012345678901234567890123456789");
        G.named_short[i].name[0] = (char)('a' + i % 26);
    }
    for (int i = 0; i < MAX_CLIENTS; i++)
        clients[i] = -1;
    ensure_servers();
}

static void pump(void) {
    event_base_loop(G.eb, EVLOOP_NONBLOCK);
    ensure_servers();
}

static int connect_client(int which) {
    int slot = -1;
    for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
        if (clients[i] < 0)
            slot = i;
    if (slot < 0 || nconnects >= MAX_CONNECTS)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fuzz_violation("socket failed");
    const char *name = G.srv[which].name + 1;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path + 1, name, strlen(name)); /* abstract: a NUL, then the name */
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    /* Refused while a server is being replaced: the client stays, unconnected. */
    (void)connect(fd, (struct sockaddr *)&sun, alen);
    clients[slot] = fd;
    nconnects++;
    G.short_used |= which == SRV_SHORT;
    return slot;
}

/* The client an operation names, connecting one if there is none. */
static int pick(uint8_t op) {
    int open[MAX_CLIENTS], n = 0;
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i] >= 0)
            open[n++] = i;
    if (n == 0)
        return connect_client(SRV_EX);
    return open[(op & 0xfu) % (unsigned)n];
}

static void send_piece(int slot, const uint8_t *data, size_t len, uint32_t nfds) {
    if (slot < 0 || len == 0)
        return;
    /* Refused, reset or full: the server's business, not ours. */
    (void)fuzz_send_devnulls(clients[slot], data, len, nfds);
    pump();
}

/* Write @len bytes in small uneven pieces (sizes from @seed), the loop
 * running between them; @nfds ride with the first. */
static void send_uneven(int slot, const uint8_t *data, size_t len, uint8_t seed, uint32_t nfds) {
    size_t done = 0;
    for (unsigned k = 0; done < len; k++) {
        size_t piece = 1u + (seed + k * 7u) % 16u;
        if (piece > len - done)
            piece = len - done;
        send_piece(slot, data + done, piece, done == 0 ? nfds : 0);
        done += piece;
    }
}

/* Take whatever the server sent; every descriptor must be one of ours. */
static size_t drain_client(int slot) {
    if (slot < 0)
        return 0;
    size_t total = 0;
    for (;;) {
        uint8_t buf[4096];
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * AFDT_MAX_FDS)];
        } cm;
        struct iovec iov = {buf, sizeof(buf)};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cm.buf;
        msg.msg_controllen = sizeof(cm.buf);
        ssize_t n = recvmsg(clients[slot], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n <= 0)
            return total;
        total += (size_t)n;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                FUZZ_CHECK(fuzz_is_devnull_copy(fd), "the server sent descriptor %d, not ours", fd);
                close(fd);
            }
        }
        FUZZ_CHECK(!(msg.msg_flags & MSG_CTRUNC), "descriptors from the server were truncated");
    }
}

static void close_client(int slot, bool shut_only) {
    if (slot < 0)
        return;
    if (shut_only) {
        shutdown(clients[slot], SHUT_WR);
    } else {
        close(clients[slot]);
        clients[slot] = -1;
    }
    pump();
}

static void op_request(struct script *s, uint8_t op) {
    int slot = pick(op);
    uint8_t buf[sizeof(uint32_t) + AFDT_MSGLEN];
    uint8_t cmd = script_u8(s), param = script_u8(s), arg2 = script_u8(s);
    uint8_t flags = script_u8(s);
    uint32_t len = 2u + script_u8(s) * 2u;
    if (len > MSGLEN)
        len = MSGLEN;
    uint32_t hdr = len;
    if (flags & 1) {
        int8_t delta = (int8_t)script_u8(s);
        hdr = (uint32_t)((int64_t)len + delta);
    }
    uint32_t nfds = (flags & 2) ? script_u8(s) % (AFDT_MAX_FDS + 1u) : 0;
    memcpy(buf, &hdr, sizeof(hdr));
    for (uint32_t i = 0; i < len; i++)
        buf[4 + i] = (uint8_t)(i + cmd);
    buf[4] = cmd;
    buf[5] = param;
    buf[6] = arg2; /* within the frame only when len > 2 */
    send_uneven(slot, buf, sizeof(uint32_t) + len, flags >> 2, nfds);
}

static void op_ack(struct script *s, uint8_t op) {
    int slot = pick(op);
    uint8_t buf[16];
    uint8_t split = script_u8(s);
    uint32_t len = 12, count = (op & 0x10) ? split : 0; /* 0 asks for the set */
    memcpy(buf, &len, 4);
    memcpy(buf + 4, "AFDTACK2", 8);
    memcpy(buf + 12, &count, 4);
    send_uneven(slot, buf, sizeof(buf), split, 0);
}

static void op_raw(struct script *s, uint8_t op) {
    int slot = pick(op);
    uint8_t buf[16];
    uint32_t nfds = (op & 0x10) ? script_u8(s) % (AFDT_MAX_FDS + 1u) : 0;
    size_t len = script_bytes(s, buf, 1u + script_u8(s) % 16u);
    send_piece(slot, buf, len, nfds);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run the loop until the process holds @baseline descriptors again: every
 * connection the servers had is gone. */
static void settle(int baseline, const char *when) {
    int64_t deadline = now_ms() + SETTLE_MS;
    for (unsigned i = 0;; i++) {
        pump();
        int n = fuzz_fd_count();
        if (n == baseline)
            return;
        if (now_ms() > deadline)
            fuzz_violation("%s: %d descriptors open, %d at the start", when, n, baseline);
        if (i > 64)
            poll(NULL, 0, 1);
    }
}

/* One good exchange with a server: connect, ask for an echo with a
 * descriptor, get exactly that. */
static void good_request(int which) {
    nconnects = 0; /* the script's clients are all closed by now */
    int slot = connect_client(which);
    FUZZ_CHECK(slot >= 0, "no room for the good client");
    int fd = clients[slot];
    const uint8_t req[] = {CMD_ECHO_FD, 0, 'o', 'k'};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    FUZZ_CHECK(afdt_send_plain_msg(fd, req, sizeof(req), &err) == 0,
               "good request not sent: %s errno %d", afdt_operation_str(err.operation), errno);
    int64_t deadline = now_ms() + SETTLE_MS;
    for (unsigned i = 0;; i++) {
        pump();
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, i > 64 ? 1 : 0) > 0)
            break;
        FUZZ_CHECK(now_ms() < deadline, "server %s did not answer a good request",
                   G.srv[which].name);
    }
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp);
    int got = -1;
    int r = afdt_recv_fd_msg(fd, resp, &len, &got, &err);
    if (getenv("AFDT_FUZZ_TRACE"))
        fprintf(stderr, "good request to %s answered\n", G.srv[which].name);
    FUZZ_CHECK(r == 0, "good response not received: %s errno %d (%s)",
               afdt_operation_str(err.operation), errno, err.message);
    FUZZ_CHECK(len == sizeof(req) && memcmp(resp, req, len) == 0, "wrong answer to a good request");
    FUZZ_CHECK(fuzz_is_devnull_copy(got), "good response came without our descriptor");
    close(got);
    close_client(slot, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init_once();
    int baseline = fuzz_fd_count();
    struct script s = {data, size};
    G.refuse = G.slept = G.short_used = false;
    G.replies_ex = G.posts_ex = G.replies_v0 = G.posts_v0 = 0;
    nconnects = 0;

    while (s.left > 0) {
        uint8_t op = script_u8(&s);
        switch (op >> 5) {
        case 0: connect_client((op & 3) == 3 ? SRV_EX : op & 3); break;
        case 1: op_raw(&s, op); break;
        case 2: op_request(&s, op); break;
        case 3:
            for (unsigned i = 0; i <= (op & 7u); i++)
                pump();
            break;
        case 4: drain_client(pick(op)); break;
        case 5: op_ack(&s, op); break;
        case 6: close_client(pick(op), op & 0x10); break;
        default:
            if ((op & 0x1f) < 16) {
                G.refuse = !G.refuse;
            } else {
                /* Past the short server's deadline, if that matters. */
                if (!G.slept && G.short_used)
                    poll(NULL, 0, SLEEP_MS);
                G.slept = true;
                pump();
            }
            break;
        }
    }

    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i] >= 0) {
            drain_client(i);
            close(clients[i]);
            clients[i] = -1;
        }
    }
    settle(baseline, "after closing the clients");
    G.refuse = false;
    good_request(SRV_EX);
    good_request(SRV_V0);
    settle(baseline, "after the good requests");
    FUZZ_CHECK(G.posts_ex == G.replies_ex, "%u replies but %u post handler calls", G.replies_ex,
               G.posts_ex);
    return 0;
}
