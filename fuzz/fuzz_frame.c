/* SPDX-License-Identifier: BSD-3-Clause */
/* Fuzz target: the frame receivers reading a stream that the input scripts, checked against a
 * model of that stream.
 *
 * The input is a script.  Its first four bytes are two receive specs (two bytes each) that the
 * final drain alternates.  Then operations, one byte each (kind in the top three bits) with
 * operands from the following bytes:
 *   0  raw bytes: length in the low five bits (31: 31 + next byte), then the bytes;
 *   1  a frame: payload length (next byte, plus low two bits << 8), split spec, a lying
 *      header when bit 2 is set (the next byte, signed, is added), descriptors when bit 4;
 *   2  a named-set header frame ("AFDTNAMED1", count, content);
 *   3  a named-set data frame (1 + low four bits entries, names from the input);
 *   4  raw bytes as kind 0, with descriptors (the byte before the length);
 *   5  receive now, while the writer is still open (spec: the next two bytes; a call that
 *      could wait for bytes not written yet shuts the writer down first);
 *   6  control: 0-7 lower RLIMIT_NOFILE to leave that many descriptors, 8 restore it,
 *      9 shut the writer down, 10 close it;
 *   7  a frame whose payload comes from the input (length in the next byte).
 * Each write is one sendmsg() on a SOCK_STREAM socketpair; "descriptors" are k (0-253, from
 * the input) copies of /dev/null attached to the first byte.  At the end the writer is shut
 * down and the receiver drains until a call makes no progress.
 *
 * The model: the receiver sits at stream offset (bytes written - bytes queued); the kernel
 * hands a write's descriptors to the recvmsg() that takes its first byte, so the descriptors
 * of a frame are those of the writes that begin inside it.  From that each call's outcome is
 * predicted exactly (result, operation, errno, bytes consumed, descriptors, payload); with
 * RLIMIT_NOFILE lowered, "out of descriptors" outcomes are accepted too.  A named set is
 * checked against the convention in named.c and afdt_named_fds(3), names included.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "afdt.h"
#include "fuzz_util.h"

#define HDR ((uint32_t)sizeof(uint32_t))
#define MSGLEN ((uint32_t)AFDT_MSGLEN)
#define NAMED_HDR 14u /* "AFDTNAMED1" and a uint32_t count */
#define MAX_STREAM (64u * 1024u)
#define MAX_CHUNKS 2048u
#define MAX_FDS_SENT 4096u
#define MAX_RECV_CALLS 1024u
#define MAX_ENTRIES (MAX_STREAM / 2u)
/* The callers leave err->phase alone: start it at a value nobody else sets. */
#define PHASE_SENTINEL AFDT_HANDLE_RESPONSE

enum recv_fn { FN_FD, FN_PLAIN, FN_FDS, FN_NAMED };

struct recv_spec {
    enum recv_fn fn;
    uint32_t size;     /* content buffer */
    bool null_content; /* pass NULL as the content buffer */
    uint32_t fdcap;    /* afdt_recv_fds_msg capacity (above AFDT_MAX_FDS counts as it) */
    bool null_out;     /* NULL received_fd (afdt_recv_fd_msg) or fds (capacity 0) */
    bool bad_args;     /* NULL content or fds with a non-zero size: EINVAL */
};

/* What a call should do. */
struct outcome {
    uint32_t end; /* stream offset where the receiver should stop */
    bool ok;
    enum afdt_operation op;
    int eno;
    bool may_ctrunc; /* RECVMSG EMFILE/ENOBUFS also fine, stopping no later than end */
    bool lenient;    /* any self-consistent outcome */
    uint32_t nfds;   /* on success */
    uint32_t len;    /* on success: content length */
    uint32_t content_at;
    uint32_t count; /* named: entries */
};

struct chunk {
    uint32_t start, nfds;
};

struct entry {
    uint32_t at;
    uint8_t len;
};

static struct state {
    uint8_t stream[MAX_STREAM]; /* every byte written, in order */
    uint32_t total;
    struct chunk chunk[MAX_CHUNKS];
    uint32_t nchunks;
    uint32_t fds_sent;
    int rx, tx;
    bool tx_shut, tx_closed;
    bool tx_unread;     /* the receiver sent acknowledgements nobody reads */
    bool reset_pending; /* so closing the writer left ECONNRESET for the receiver */
    bool lowered;
    struct rlimit saved;
    unsigned calls;
    struct entry entries[MAX_ENTRIES]; /* named: the names the model expects */
} S;

/* What *ret_set points to before a named receive: a failure must leave it. */
static struct afdt_named_fd untouched_set[1];

static void restore_rlimit(void) {
    if (S.lowered && setrlimit(RLIMIT_NOFILE, &S.saved) < 0)
        abort();
    S.lowered = false;
}

/* Leave the receiver room for about @room more descriptors. */
static void lower_rlimit(unsigned room) {
    restore_rlimit();
    if (getrlimit(RLIMIT_NOFILE, &S.saved) < 0 || S.saved.rlim_cur == RLIM_INFINITY)
        return;
    struct rlimit rl = S.saved;
    rl.rlim_cur = (rlim_t)fuzz_free_fd(room);
    if (rl.rlim_cur < S.saved.rlim_cur && setrlimit(RLIMIT_NOFILE, &rl) == 0)
        S.lowered = true;
}

static uint32_t get_u32(uint32_t at) {
    uint32_t v;
    memcpy(&v, S.stream + at, sizeof(v));
    return v;
}

static uint32_t queued(void) {
    int n = 0;
    if (ioctl(S.rx, FIONREAD, &n) < 0 || n < 0 || (uint32_t)n > S.total)
        fuzz_violation("FIONREAD gave %d with %u bytes written", n, S.total);
    return (uint32_t)n;
}

/* Descriptors of the writes that begin in [from, to). */
static uint32_t fds_between(uint32_t from, uint32_t to) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < S.nchunks; i++)
        if (S.chunk[i].start >= from && S.chunk[i].start < to)
            n += S.chunk[i].nfds;
    return n;
}

static void shut_writer(bool close_it) {
    if (S.tx < 0)
        return;
    if (close_it) {
        close(S.tx);
        S.tx = -1;
        S.tx_closed = true;
        /* A Unix socket closed with unread data makes its peer's next read
         * that finds nothing queued fail with ECONNRESET, once. */
        S.reset_pending = S.tx_unread;
    } else {
        shutdown(S.tx, SHUT_WR);
    }
    S.tx_shut = true;
}

/* --- Writing ----------------------------------------------------------- */

/* One sendmsg() of @len bytes with @nfds copies of /dev/null. */
static void write_piece(const uint8_t *data, uint32_t len, uint32_t nfds) {
    if (S.tx_shut || len == 0 || S.nchunks == MAX_CHUNKS || S.total + len > MAX_STREAM)
        return;
    if (S.fds_sent + nfds > MAX_FDS_SENT)
        nfds = 0;
    ssize_t n = fuzz_send_devnulls(S.tx, data, len, nfds);
    if (n <= 0)
        return; /* full (or too many descriptors in flight): nothing was written */
    S.chunk[S.nchunks++] = (struct chunk){S.total, nfds};
    memcpy(S.stream + S.total, data, (size_t)n);
    S.total += (uint32_t)n;
    S.fds_sent += nfds;
}

/* Write @len bytes in pieces whose uneven sizes @split describes (0: one
 * piece); the descriptors go with the first. */
static void write_split(const uint8_t *data, uint32_t len, uint8_t split, uint32_t nfds) {
    uint32_t done = 0;
    for (uint32_t k = 0; done < len; k++) {
        uint32_t piece = split == 0 ? len : 1u + (split & 0xfu) + (k * (split >> 4u)) % 16u;
        if (piece > len - done)
            piece = len - done;
        write_piece(data + done, piece, done == 0 ? nfds : 0);
        done += piece;
    }
}

static uint32_t take_nfds(struct script *s) {
    return script_u8(s) % (AFDT_MAX_FDS + 1u);
}

static void op_raw(struct script *s, uint8_t op, bool with_fds) {
    uint8_t buf[31 + 255];
    uint32_t nfds = with_fds ? take_nfds(s) : 0;
    uint32_t len = op & 0x1fu;
    if (len == 0x1f)
        len += script_u8(s);
    len = (uint32_t)script_bytes(s, buf, len);
    write_piece(buf, len, nfds);
}

/* A frame of @len bytes of filler, its header maybe lying. */
static void op_frame(struct script *s, uint8_t op) {
    uint8_t buf[HDR + 1024];
    uint32_t len = script_u8(s) | ((op & 3u) << 8);
    uint8_t split = script_u8(s);
    uint32_t hdr = len;
    if (op & 0x4) {
        int8_t delta = (int8_t)script_u8(s);
        hdr = (uint32_t)((int64_t)len + delta);
    }
    uint32_t nfds = (op & 0x10) ? take_nfds(s) : 0;
    memcpy(buf, &hdr, HDR);
    for (uint32_t i = 0; i < len; i++)
        buf[HDR + i] = (uint8_t)(i * 7u + len);
    write_split(buf, HDR + len, split, nfds);
}

static void op_named_header(struct script *s, uint8_t op) {
    uint8_t buf[HDR + NAMED_HDR + 63];
    uint32_t count = script_u8(s);
    if (op & 0x8)
        count <<= 16; /* more than any process has room for */
    uint32_t clen = (op & 7u) * 9u;
    uint8_t split = script_u8(s);
    uint32_t nfds = (op & 0x10) ? take_nfds(s) : 0;
    uint32_t len = NAMED_HDR + clen;
    memcpy(buf, &len, HDR);
    memcpy(buf + HDR, "AFDTNAMED1", 10);
    memcpy(buf + HDR + 10, &count, sizeof(count));
    for (uint32_t i = 0; i < clen; i++)
        buf[HDR + NAMED_HDR + i] = (uint8_t)('A' + i % 26u);
    write_split(buf, HDR + len, split, nfds);
}

/* A data frame: one descriptor per entry unless bit 4 says otherwise; a name
 * byte with its top bit set starts the name with an arbitrary byte. */
static void op_named_data(struct script *s, uint8_t op) {
    uint8_t buf[HDR + 16 * 9];
    uint32_t n = 1u + (op & 0xfu), used = 0;
    uint32_t nfds = (op & 0x10) ? take_nfds(s) : n;
    uint8_t split = script_u8(s);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = script_u8(s);
        uint32_t len = 1u + (c & 7u);
        buf[HDR + used++] = (uint8_t)len;
        for (uint32_t j = 0; j < len; j++)
            buf[HDR + used + j] = (uint8_t)('a' + (c + j) % 26u);
        if (c & 0x80)
            buf[HDR + used] = (uint8_t)(c * 5u);
        used += len;
    }
    memcpy(buf, &used, HDR);
    write_split(buf, HDR + used, split, nfds);
}

static void op_input_frame(struct script *s, uint8_t op) {
    uint8_t buf[HDR + 511];
    uint32_t want = script_u8(s) + ((op & 1u) ? 256u : 0u);
    uint32_t nfds = (op & 0x10) ? take_nfds(s) : 0;
    uint8_t split = script_u8(s);
    uint32_t len = (uint32_t)script_bytes(s, buf + HDR, want);
    memcpy(buf, &len, HDR);
    write_split(buf, HDR + len, split, nfds);
}

/* --- The model ----------------------------------------------------------- */

static void expect_fail(struct outcome *m, uint32_t end, enum afdt_operation op, int eno) {
    m->end = end;
    m->ok = false;
    m->op = op;
    m->eno = eno;
}

/* The receiver reads on after the last byte written (with the writer shut
 * down): end of file, or the reset that closing the writer left. */
static void expect_end(struct outcome *m, enum afdt_operation op) {
    if (S.reset_pending) {
        expect_fail(m, S.total, AFDT_RECVMSG, ECONNRESET);
    } else {
        expect_fail(m, S.total, op, 0);
    }
}

/* The frame at @at: true with its payload length when it is all there;
 * otherwise the failure of reading it. */
static bool frame_at(uint32_t at, struct outcome *m, uint32_t *ret_len) {
    uint32_t q = S.total - at;
    if (q == 0) {
        if (S.tx_shut)
            expect_end(m, AFDT_RECVMSG);
        else
            expect_fail(m, at, AFDT_RECVMSG, EAGAIN);
        return false;
    }
    if (q < HDR) {
        expect_end(m, AFDT_FORMAT); /* the stream ends inside the header */
        return false;
    }
    uint32_t len = get_u32(at);
    if (len > MSGLEN) {
        expect_fail(m, at + HDR, AFDT_FORMAT, 0); /* only the header is taken */
        return false;
    }
    if (q < HDR + len) {
        expect_end(m, AFDT_FORMAT);
        return false;
    }
    *ret_len = len;
    return true;
}

/* Whether a receive at @at can finish without waiting for more bytes. */
static bool frame_ready(uint32_t at) {
    uint32_t q = S.total - at;
    if (q == 0)
        return true;
    if (q < HDR)
        return false;
    uint32_t len = get_u32(at);
    return len > MSGLEN || q >= HDR + len;
}

static struct outcome predict_frame(const struct recv_spec *sp, uint32_t at) {
    struct outcome m = {0};
    uint32_t len;
    if (sp->bad_args) {
        expect_fail(&m, at, AFDT_RECVMSG, EINVAL);
        return m;
    }
    if (!frame_at(at, &m, &len))
        return m;
    uint32_t k = fds_between(at, at + HDR + len);
    uint32_t cap = sp->fdcap < AFDT_MAX_FDS ? sp->fdcap : AFDT_MAX_FDS;
    m.may_ctrunc = S.lowered && k > 0;
    if (len > sp->size) {
        expect_fail(&m, at + HDR + len, AFDT_FORMAT, 0);
    } else if (sp->fn == FN_FDS && k > cap) {
        expect_fail(&m, at + HDR + len, AFDT_FORMAT, EMSGSIZE);
    } else {
        m.end = at + HDR + len;
        m.ok = true;
        m.len = len;
        m.content_at = at + HDR;
        m.nfds = sp->fn == FN_FDS ? k : sp->fn == FN_FD ? (k > 0) : 0;
    }
    return m;
}

/* A name as the convention allows it: 1-255 printable ASCII bytes, no ':'. */
static bool name_ok(uint32_t at, uint32_t len) {
    if (len == 0)
        return false;
    for (uint32_t i = 0; i < len; i++) {
        uint8_t c = S.stream[at + i];
        if (c < 0x20 || c > 0x7e || c == ':')
            return false;
    }
    return true;
}

static struct outcome predict_named(const struct recv_spec *sp, uint32_t at) {
    struct outcome m = {0};
    uint32_t len;
    if (sp->bad_args) {
        expect_fail(&m, at, AFDT_RECVMSG, EINVAL);
        return m;
    }
    if (!frame_at(at, &m, &len))
        return m;
    m.may_ctrunc = S.lowered;
    uint32_t hend = at + HDR + len;
    if (fds_between(at, hend) == 0 && len >= NAMED_HDR &&
        memcmp(S.stream + at + HDR, "AFDTNAMED2", 10) == 0) {
        /* A version 2 offer: the receiver answers it (room checked, then an ask) before the
         * set comes, which a one-way stream cannot model; only the outcome's shape, the
         * descriptor count and the buffers are checked (fuzz_server plays a real sender). */
        m.lenient = true;
        return m;
    }
    if (fds_between(at, hend) > 0 || len < NAMED_HDR ||
        memcmp(S.stream + at + HDR, "AFDTNAMED1", 10) != 0) {
        expect_fail(&m, hend, AFDT_FORMAT, 0);
        return m;
    }
    uint32_t count = get_u32(at + HDR + 10);
    struct rlimit rl;
    /* Lowered, the room is hard to tell (the library needs a descriptor to
     * look): may_ctrunc already accepts EMFILE after the header. */
    if (!S.lowered && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        uint64_t open_now = (uint64_t)fuzz_fd_count();
        uint64_t room = rl.rlim_cur > open_now ? rl.rlim_cur - open_now : 0;
        if (count + 2u >= room && count <= room + 2u) {
            m.lenient = true; /* too close to call */
            return m;
        }
        if (count > room) {
            expect_fail(&m, hend, AFDT_RECVMSG, EMFILE);
            return m;
        }
    }
    if (len - NAMED_HDR > sp->size) {
        expect_fail(&m, hend, AFDT_FORMAT, 0);
        return m;
    }
    uint32_t n = 0, p = hend;
    while (n < count) {
        uint32_t dlen;
        if (!frame_at(p, &m, &dlen))
            return m;
        uint32_t dend = p + HDR + dlen;
        uint32_t k = fds_between(p, dend);
        if (k > AFDT_MAX_FDS) {
            expect_fail(&m, dend, AFDT_FORMAT, EMSGSIZE);
            return m;
        }
        if (k > count - n) {
            expect_fail(&m, dend, AFDT_FORMAT, 0);
            return m;
        }
        uint32_t q = p + HDR, j = 0;
        while (q < dend && j < k) {
            uint32_t nlen = S.stream[q++];
            if (q + nlen > dend || !name_ok(q, nlen))
                break;
            if (n + j < MAX_ENTRIES)
                S.entries[n + j] = (struct entry){q, (uint8_t)nlen};
            q += nlen;
            j++;
        }
        if (k == 0 || j != k || q != dend) {
            expect_fail(&m, dend, AFDT_FORMAT, 0);
            return m;
        }
        n += k;
        p = dend;
    }
    if (S.tx_closed) {
        expect_fail(&m, p, AFDT_SENDMSG, EPIPE); /* the acknowledgement has nowhere to go */
        return m;
    }
    m.end = p;
    m.ok = true;
    m.len = len - NAMED_HDR;
    m.content_at = at + HDR + NAMED_HDR;
    m.count = count;
    m.nfds = count;
    return m;
}

/* --- Receiving and checking ---------------------------------------------- */

/* A receive spec from two bytes: @a bits 0-1 the call (fd, plain, fds,
 * named), bits 2-3 the buffer (AFDT_MSGLEN, 0, @b, AFDT_MSGLEN + @b), bit 4
 * NULL for a zero-sized buffer, bit 5 NULL received_fd (or fds with capacity
 * 0), bit 6 invalid arguments; @b is also the fds capacity. */
static struct recv_spec decode_spec(uint8_t a, uint8_t b) {
    struct recv_spec sp = {0};
    sp.fn = (enum recv_fn)(a & 3u);
    switch ((a >> 2) & 3u) {
    case 0: sp.size = MSGLEN; break;
    case 1: sp.size = 0; break;
    case 2: sp.size = b; break;
    default: sp.size = MSGLEN + b; break;
    }
    sp.null_content = sp.size == 0 && (a & 0x10);
    sp.fdcap = b;
    sp.null_out = (a & 0x20) && (sp.fn == FN_FD || sp.fdcap == 0);
    if ((a & 0x40) && sp.size > 0 && sp.fn != FN_FDS)
        sp.bad_args = sp.null_content = true;
    if ((a & 0x40) && sp.fn == FN_FDS && sp.fdcap > 0)
        sp.bad_args = sp.null_out = true;
    else if ((a & 0x40) && sp.fn == FN_FDS && sp.size > 0)
        sp.bad_args = sp.null_content = true;
    return sp;
}

/* What every failure must look like, whatever the model says. */
static void check_failure_shape(const struct afdt_error_t *err, int eno) {
    switch (err->operation) {
    case AFDT_RECVMSG:
        FUZZ_CHECK(eno == 0 || eno == EAGAIN || eno == EMFILE || eno == ENOBUFS ||
                       eno == ECONNRESET || eno == EINVAL,
                   "AFDT_RECVMSG with errno %d", eno);
        break;
    case AFDT_FORMAT:
        FUZZ_CHECK(eno == 0 || eno == EMSGSIZE, "AFDT_FORMAT with errno %d", eno);
        break;
    case AFDT_SENDMSG:
    case AFDT_POLL:
        FUZZ_CHECK(eno != 0, "%s with errno 0", afdt_operation_str(err->operation));
        break;
    case AFDT_MALLOC: FUZZ_CHECK(eno == ENOMEM, "AFDT_MALLOC with errno %d", eno); break;
    default: fuzz_violation("a receive failed with %s", afdt_operation_str(err->operation));
    }
}

static void check_outcome(const struct outcome *m, int r, const struct afdt_error_t *err, int eno,
                          uint32_t at, uint32_t end) {
    FUZZ_CHECK(err->message != NULL, "err.message is NULL");
    FUZZ_CHECK(err->phase == PHASE_SENTINEL, "err.phase changed to %s", afdt_phase_str(err->phase));
    if (r < 0)
        check_failure_shape(err, eno);
    if (m->lenient)
        return;
    if (r < 0 && m->may_ctrunc && err->operation == AFDT_RECVMSG &&
        (eno == EMFILE || eno == ENOBUFS)) {
        FUZZ_CHECK(end <= m->end, "out of descriptors at %u, but consumed to %u (frame ends %u)",
                   at, end, m->end);
        return;
    }
    if (m->ok) {
        FUZZ_CHECK(r >= 0, "receive at %u failed (%s, errno %d, \"%s\"); the model says success",
                   at, afdt_operation_str(err->operation), eno, err->message);
    } else {
        FUZZ_CHECK(r < 0, "receive at %u succeeded; the model says %s errno %d", at,
                   afdt_operation_str(m->op), m->eno);
        FUZZ_CHECK(err->operation == m->op && eno == m->eno,
                   "receive at %u failed with %s errno %d (\"%s\"); the model says %s errno %d", at,
                   afdt_operation_str(err->operation), eno, err->message, afdt_operation_str(m->op),
                   m->eno);
    }
    FUZZ_CHECK(end == m->end, "receive at %u consumed up to %u; the model says %u", at, end,
               m->end);
}

static void check_content(const struct outcome *m, const uint8_t *content, uint32_t len_in,
                          uint32_t len_out) {
    FUZZ_CHECK(len_out <= len_in, "*content_len grew from %u to %u", len_in, len_out);
    FUZZ_CHECK(len_out == m->len, "*content_len is %u; the model says %u", len_out, m->len);
    FUZZ_CHECK(len_out == 0 || memcmp(content, S.stream + m->content_at, len_out) == 0,
               "the content differs from what was sent");
}

/* One receive call with @sp.  Returns whether it consumed anything. */
static bool recv_step(const struct recv_spec *sp) {
    uint32_t q = queued(), at = S.total - q;
    /* A begun frame is finished before a call returns, waiting if need be:
     * make sure it cannot wait for bytes that will never come. */
    if (!S.tx_shut && (sp->fn == FN_NAMED || !frame_ready(at)))
        shut_writer(false);
    struct outcome m = sp->fn == FN_NAMED ? predict_named(sp, at) : predict_frame(sp, at);

    uint8_t *content = sp->null_content ? NULL : malloc(sp->size ? sp->size : 1);
    uint32_t fdcap = sp->fdcap;
    int *fds = sp->null_out && sp->fn == FN_FDS ? NULL : malloc(fdcap ? sizeof(int) * fdcap : 1);
    if ((content == NULL && !sp->null_content) || (fds == NULL && !sp->null_out))
        abort();
    if (content)
        memset(content, 0xa5, sp->size ? sp->size : 1);
    uint32_t len = sp->size, nfds = fdcap;
    int rfd = -7;
    struct afdt_named_fd *set = untouched_set; /* must stay as it is on failure */
    uint32_t nset = 0xdeadu;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    err.phase = PHASE_SENTINEL;

    errno = 0;
    int r;
    switch (sp->fn) {
    case FN_FD: r = afdt_recv_fd_msg(S.rx, content, &len, sp->null_out ? NULL : &rfd, &err); break;
    case FN_PLAIN: r = afdt_recv_plain_msg(S.rx, content, &len, &err); break;
    case FN_FDS: r = afdt_recv_fds_msg(S.rx, content, &len, fds, &nfds, &err); break;
    default: r = afdt_recv_named_fds(S.rx, content, &len, &set, &nset, &err); break;
    }
    int eno = errno;
    uint32_t end = S.total - queued();
    if (getenv("AFDT_FUZZ_TRACE")) {
        const char *verdict = m.lenient ? "lenient" : m.ok ? "ok" : "fail";
        fprintf(stderr,
                "recv fn %d size %u at %u: r %d %s errno %d end %u (model: %s %s %d end %u)\n",
                (int)sp->fn, sp->size, at, r, r < 0 ? afdt_operation_str(err.operation) : "ok",
                r < 0 ? eno : 0, end, verdict, afdt_operation_str(m.op), m.eno, m.end);
    }
    check_outcome(&m, r, &err, eno, at, end);
    if (r < 0 && eno == ECONNRESET)
        S.reset_pending = false; /* reported once */
    if (sp->fn == FN_NAMED && r >= 0)
        S.tx_unread = true;

    if (r < 0) {
        FUZZ_CHECK(len <= sp->size, "*content_len grew from %u to %u on failure", sp->size, len);
        if (sp->fn == FN_FD && !sp->null_out)
            FUZZ_CHECK(rfd == -1, "*received_fd is %d after a failure", rfd);
        if (sp->fn == FN_FDS)
            FUZZ_CHECK(nfds == 0, "*nfds is %u after a failure", nfds);
        if (sp->fn == FN_NAMED)
            FUZZ_CHECK(set == untouched_set && nset == 0xdeadu,
                       "*ret_set or *ret_n changed on failure");
    } else if (sp->fn == FN_FD) {
        if (!m.lenient)
            check_content(&m, content, sp->size, len);
        if (!sp->null_out) {
            FUZZ_CHECK(rfd == -1 || fuzz_is_devnull_copy(rfd),
                       "*received_fd %d is not a close-on-exec copy of what was sent", rfd);
            FUZZ_CHECK(m.lenient || (rfd >= 0) == (m.nfds > 0),
                       "*received_fd is %d; the model says %u descriptor(s)", rfd, m.nfds);
            if (rfd >= 0)
                close(rfd);
        }
    } else if (sp->fn == FN_PLAIN) {
        if (!m.lenient)
            check_content(&m, content, sp->size, len);
    } else if (sp->fn == FN_FDS) {
        if (!m.lenient)
            check_content(&m, content, sp->size, len);
        FUZZ_CHECK(nfds <= fdcap && nfds <= AFDT_MAX_FDS, "*nfds is %u for capacity %u", nfds,
                   fdcap);
        FUZZ_CHECK(m.lenient || nfds == m.nfds, "*nfds is %u; the model says %u", nfds, m.nfds);
        for (uint32_t i = 0; i < nfds; i++) {
            FUZZ_CHECK(fuzz_is_devnull_copy(fds[i]),
                       "fds[%u] = %d is not a close-on-exec copy of what was sent", i, fds[i]);
            close(fds[i]);
        }
    } else {
        FUZZ_CHECK(set != NULL && set != untouched_set, "no set returned");
        if (!m.lenient) {
            check_content(&m, content, sp->size, len);
            FUZZ_CHECK(nset == m.count, "%u named descriptors; the model says %u", nset, m.count);
        }
        for (uint32_t i = 0; i < nset; i++) {
            FUZZ_CHECK(fuzz_is_devnull_copy(set[i].fd),
                       "set[%u].fd = %d is not a close-on-exec copy of what was sent", i,
                       set[i].fd);
            if (m.lenient || i >= MAX_ENTRIES)
                continue;
            const struct entry *e = &S.entries[i];
            FUZZ_CHECK(strlen(set[i].name) == e->len &&
                           memcmp(set[i].name, S.stream + e->at, e->len) == 0,
                       "set[%u].name \"%s\" is not the name that was sent", i, set[i].name);
        }
        afdt_named_fds_free(set, nset, 1);
    }
    free(content);
    free(fds);
    S.calls++;
    return end != at;
}

static void setup(void) {
    memset(&S, 0, offsetof(struct state, entries));
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fuzz_violation("socketpair failed");
    S.rx = sv[0];
    S.tx = sv[1];
}

static void teardown(void) {
    restore_rlimit();
    close(S.rx);
    if (S.tx >= 0)
        close(S.tx);
    S.rx = S.tx = -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_devnull();
    fuzz_on_violation(restore_rlimit);
    int baseline = fuzz_fd_count();
    struct script s = {data, size};
    uint8_t drain[4];
    for (int i = 0; i < 4; i++)
        drain[i] = script_u8(&s);
    setup();

    while (s.left > 0 && S.calls < MAX_RECV_CALLS) {
        uint8_t op = script_u8(&s);
        switch (op >> 5) {
        case 0: op_raw(&s, op, false); break;
        case 1: op_frame(&s, op); break;
        case 2: op_named_header(&s, op); break;
        case 3: op_named_data(&s, op); break;
        case 4: op_raw(&s, op, true); break;
        case 5: {
            uint8_t a = script_u8(&s);
            struct recv_spec sp = decode_spec(a, script_u8(&s));
            recv_step(&sp);
            break;
        }
        case 6:
            if ((op & 0x1f) < 8)
                lower_rlimit(op & 7u);
            else if ((op & 0x1f) == 8)
                restore_rlimit();
            else if ((op & 0x1f) == 9 || (op & 0x1f) == 10)
                shut_writer((op & 0x1f) == 10);
            break;
        default: op_input_frame(&s, op); break;
        }
    }

    shut_writer(false);
    for (unsigned i = 0; S.calls < MAX_RECV_CALLS; i++) {
        struct recv_spec sp = decode_spec(drain[(i & 1u) * 2], drain[(i & 1u) * 2 + 1]);
        if (!recv_step(&sp))
            break;
    }

    teardown();
    int now = fuzz_settled_fd_count(baseline);
    FUZZ_CHECK(now == baseline, "%d descriptors open after the input, %d before", now, baseline);
    return 0;
}
