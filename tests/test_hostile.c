/* SPDX-License-Identifier: BSD-3-Clause */
/* Hostile clients against the libevent server: every abuse is reported through the error
 * handler, and the server keeps answering good clients without leaking a descriptor. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

/* ---------------------------------------------------------------------------
 * The server child.  It runs the library's server on its own event loop and
 * answers, besides echo requests, control requests starting with '?' about what
 * its error handler saw, so the test process is free to be the hostile client.
 * ------------------------------------------------------------------------- */

#define LOG_MAX 16384

struct logged {
    int phase, op, eno;
};

/* Only the child touches this; it is a separate process, so globals are safe. */
static struct {
    void *handle;
    int devnull;
    int idle_fds; /* descriptors open while the server is up with no connection */
    long requests;
    struct logged log[LOG_MAX];
    unsigned nlog;
    long lost;
    bool bad_message, bad_phase, verbose;
} S;

struct child_cfg {
    const char *path;
    int ready_rd, ready_wr;
    int nofile_room; /* > 0: lower RLIMIT_NOFILE to leave only this many free slots */
};

static void child_on_error(const struct afdt_error_t *e, void *ud) {
    int eno = errno; /* before any other libc call */
    (void)ud;
    if (e->message == NULL)
        S.bad_message = true;
    if (e->phase != AFDT_ACCEPT_CLIENT && e->phase != AFDT_HANDLE_REQUEST)
        S.bad_phase = true;
    if (S.verbose)
        fprintf(stderr, "server: %s %s errno=%d %s\n", afdt_phase_str(e->phase),
                afdt_operation_str(e->operation), eno, e->message ? e->message : "(null)");
    if (S.nlog < LOG_MAX)
        S.log[S.nlog++] = (struct logged){(int)e->phase, (int)e->operation, eno};
    else
        S.lost++;
}

static long count_logged(int phase, int op, int eno) {
    long n = 0;
    for (unsigned i = 0; i < S.nlog; i++)
        if (S.log[i].phase == phase && S.log[i].op == op && S.log[i].eno == eno)
            n++;
    return n;
}

static long answer_control(const char *q) {
    int p, o, e;
    if (strcmp(q, "?quit") == 0)
        return afdt_close_server(S.handle);
    if (strcmp(q, "?extra") == 0)
        return fd_count() - 1 - S.idle_fds; /* minus this query's own connection */
    if (strcmp(q, "?requests") == 0)
        return S.requests;
    if (strcmp(q, "?errors") == 0)
        return (long)S.nlog + S.lost;
    if (sscanf(q, "?count %d %d %d", &p, &o, &e) == 3)
        return count_logged(p, o, e);
    return -1000;
}

static int child_on_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                            void *ud) {
    (void)ud;
    if (len == 0 || req[0] != '?') {
        S.requests++;
        memcpy(resp, req, len);
        *resp_len = len;
        return S.devnull;
    }
    char q[64];
    size_t n = len < sizeof(q) - 1 ? len : sizeof(q) - 1;
    memcpy(q, req, n);
    q[n] = '\0';
    int w = snprintf((char *)resp, *resp_len, "%ld", answer_control(q));
    *resp_len = (uint32_t)w;
    return -1;
}

/* The RLIMIT_NOFILE that leaves exactly @room descriptor numbers free once @closing is
 * closed (a process may inherit descriptors with holes below them, and the limit caps
 * numbers, not counts). */
static int limit_for_room(int room, int closing) {
    int fd = 0;
    for (int left = room; left > 0; fd++)
        if (fd == closing || fcntl(fd, F_GETFD) < 0)
            left--;
    return fd;
}

/* Exit codes: 0 clean, 3-5 setup failed, 10 descriptor leak, 11 NULL message, 12 wrong phase. */
static int server_child(void *arg) {
    const struct child_cfg *cfg = arg;
    const char *v = getenv("AFDT_HOSTILE_VERBOSE");
    S.verbose = v != NULL && v[0] != '\0';
    close(cfg->ready_rd);
    int start_fds = fd_count();
    struct event_base *eb = event_base_new();
    if (eb == NULL)
        return 3;
    S.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (S.devnull < 0 || afdt_create_server(cfg->path, eb, child_on_request, afdt_no_post,
                                            child_on_error, &S.handle, NULL) < 0)
        return 3;
    struct rlimit old;
    if (getrlimit(RLIMIT_NOFILE, &old) < 0)
        return 4;
    if (cfg->nofile_room > 0) {
        struct rlimit low = old;
        low.rlim_cur = (rlim_t)limit_for_room(cfg->nofile_room, cfg->ready_wr);
        if (setrlimit(RLIMIT_NOFILE, &low) < 0)
            return 4;
    }
    char ok = 1;
    if (write(cfg->ready_wr, &ok, 1) != 1)
        return 4;
    close(cfg->ready_wr);
    S.idle_fds = fd_count();

    int r = event_base_dispatch(eb);
    event_base_free(eb);
    close(S.devnull);
    (void)setrlimit(RLIMIT_NOFILE, &old);
    if (r < 0)
        return 5;
    /* The ready pipe's write end was open at the start and is closed now. */
    if (fd_count() != start_fds - 1) {
        fprintf(stderr, "server child: %d descriptors at start, %d at exit\n", start_fds - 1,
                fd_count());
        return 10;
    }
    if (S.bad_message)
        return 11;
    if (S.bad_phase)
        return 12;
    return 0;
}

/* ---------------------------------------------------------------------------
 * The test process's side: start, query and stop the server child.
 * ------------------------------------------------------------------------- */

struct server {
    pid_t pid;
    const char *path;
};

static struct server start_server(int nofile_room) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    struct child_cfg cfg = {tmp_path("hostile"), p[0], p[1], nofile_room};
    pid_t pid = spawn(server_child, &cfg);
    close(p[1]);
    struct pollfd pfd = {p[0], POLLIN, 0};
    int r = poll(&pfd, 1, 5000);
    char c = 0;
    ssize_t n = r == 1 ? read(p[0], &c, 1) : -1;
    close(p[0]);
    if (n != 1)
        harness_fail(__FILE__, __LINE__, "server child did not start (exit %d)", wait_exit(pid));
    return (struct server){pid, cfg.path};
}

static long ask(const struct server *s, const char *q) {
    uint8_t resp[64];
    uint32_t rlen = sizeof(resp) - 1;
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {5, 0};
    int r = afdt_sync_client(s->path, (const uint8_t *)q, (uint32_t)strlen(q), resp, &rlen, &fd,
                             &tv, &err);
    int e = errno;
    if (r < 0)
        harness_fail(__FILE__, __LINE__, "query %s: %s %s errno %d (%s)", q,
                     afdt_phase_str(err.phase), afdt_operation_str(err.operation), e, err.message);
    CHECK_INT(fd, ==, -1);
    resp[rlen] = '\0';
    return strtol((const char *)resp, NULL, 10);
}

static long count_errors(const struct server *s, enum afdt_phase phase, enum afdt_operation op,
                         int eno) {
    char q[64];
    snprintf(q, sizeof(q), "?count %d %d %d", (int)phase, (int)op, eno);
    return ask(s, q);
}

/* Wait (up to 5 s) for the server to have logged @want errors of one kind; returns the count,
 * so the caller checks it is exactly @want. */
static long wait_errors(const struct server *s, enum afdt_phase phase, enum afdt_operation op,
                        int eno, long want) {
    int64_t end = now_ms() + 5000;
    long n;
    while ((n = count_errors(s, phase, op, eno)) < want && now_ms() < end)
        sleep_ms(10);
    return n;
}

static long wait_requests(const struct server *s, long want) {
    int64_t end = now_ms() + 10000;
    long n;
    while ((n = ask(s, "?requests")) < want && now_ms() < end)
        sleep_ms(10);
    return n;
}

/* Wait until the server child holds no descriptor beyond its idle set. */
static void check_server_idle(const struct server *s) {
    int64_t end = now_ms() + 10000;
    long extra;
    while ((extra = ask(s, "?extra")) != 0 && now_ms() < end)
        sleep_ms(10);
    CHECK_INT(extra, ==, 0);
}

/* One good exchange through afdt_sync_client: the echo and the server's /dev/null. */
static void good_exchange(const struct server *s, int timeout_s) {
    static unsigned seq;
    char req[32];
    snprintf(req, sizeof(req), "good-%u", seq++);
    uint8_t resp[AFDT_MSGLEN];
    uint32_t rlen = sizeof(resp);
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {timeout_s, 0};
    int r = afdt_sync_client(s->path, (const uint8_t *)req, (uint32_t)strlen(req), resp, &rlen, &fd,
                             &tv, &err);
    int e = errno;
    if (r < 0)
        harness_fail(__FILE__, __LINE__, "good client failed: %s %s errno %d (%s)",
                     afdt_phase_str(err.phase), afdt_operation_str(err.operation), e, err.message);
    CHECK_INT(rlen, ==, strlen(req));
    CHECK_MEM(resp, req, rlen);
    int dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0 && same_file(fd, dn));
    close(dn);
    close(fd);
}

/* Quit the server through its own request handler; the child checks its descriptors. */
static void stop_server(const struct server *s) {
    CHECK_INT(ask(s, "?quit"), ==, 0);
    CHECK_INT(wait_exit(s->pid), ==, 0);
    CHECK(access(s->path, F_OK) != 0); /* a clean close removes the socket file */
}

/* The end of every test: a good client is answered, nothing is held, the child exits clean. */
static void finish(const struct server *s) {
    good_exchange(s, 3);
    check_server_idle(s);
    stop_server(s);
}

/* ---------------------------------------------------------------------------
 * Raw hostile-client tools.
 * ------------------------------------------------------------------------- */

static uint32_t rng_state = 0x9e3779b9u;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static int raw_connect(const struct server *s) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int e = errno;
    if (fd < 0)
        harness_fail(__FILE__, __LINE__, "socket: %s", strerror(e));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", s->path);
    int r;
    do {
        r = connect(fd, (const struct sockaddr *)&a, sizeof(a));
    } while (r < 0 && errno == EINTR);
    e = errno;
    if (r < 0)
        harness_fail(__FILE__, __LINE__, "connect: %s", strerror(e));
    return fd;
}

static void send_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        int e = errno;
        if (w < 0 && e == EINTR)
            continue;
        if (w < 0)
            harness_fail(__FILE__, __LINE__, "send: %s", strerror(e));
        p += w;
        n -= (size_t)w;
    }
}

/* Build a frame header (host byte order, as on the wire) followed by @len bytes of @payload. */
static size_t make_frame(uint8_t *out, uint32_t hdr, const void *payload, size_t len) {
    memcpy(out, &hdr, sizeof(hdr));
    if (len > 0)
        memcpy(out + sizeof(hdr), payload, len);
    return sizeof(hdr) + len;
}

/* One sendmsg of @n bytes carrying @nfds descriptors as SCM_RIGHTS. */
static void send_with_fds(int sock, const void *buf, size_t n, const int *fds, unsigned nfds) {
    ssize_t w = raw_sendmsg(sock, buf, n, fds, nfds);
    int e = errno;
    if (w != (ssize_t)n)
        harness_fail(__FILE__, __LINE__, "sendmsg of %u descriptors: %zd (%s)", nfds, w,
                     strerror(e));
}

/* Read whatever the server sends until it closes the connection (end of file or a reset).
 * Returns the byte count (the first @cap bytes kept in @buf), or -1 if the connection is
 * still open after @timeout_ms.  Descriptors that come along are discarded by the kernel. */
static long read_until_closed(int fd, uint8_t *buf, size_t cap, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    long total = 0;
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, left);
        if (r == 0)
            return -1;
        if (r < 0)
            continue; /* EINTR */
        uint8_t tmp[1024];
        ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n == 0)
            return total;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return total; /* ECONNRESET: the server closed with our bytes unread */
        }
        for (ssize_t i = 0; i < n; i++)
            if ((size_t)total + (size_t)i < cap)
                buf[(size_t)total + (size_t)i] = tmp[i];
        total += n;
    }
}

/* Whether the peer has closed: end of file or reset pending, without waiting. */
static bool peer_closed(int fd) {
    uint8_t b;
    ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void ensure_nofile(rlim_t want) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        harness_skip("RLIMIT_NOFILE hard limit too low for this test");
    rl.rlim_cur = want;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

/* CPU time (user + system) a process has used, in milliseconds, from /proc/<pid>/stat. */
static long cpu_ms(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    CHECK(n > 0);
    buf[n] = '\0';
    /* Field 2 (the command) may hold spaces: count from the last ')', which ends it;
     * then utime and stime are the 12th and 13th fields after it. */
    char *p = strrchr(buf, ')');
    CHECK(p != NULL);
    unsigned long ut = 0, st = 0;
    CHECK_INT(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st), ==,
              2);
    long tck = sysconf(_SC_CLK_TCK);
    return (long)((ut + st) * 1000 / (unsigned long)tck);
}

/* ---------------------------------------------------------------------------
 * Tests.
 * ------------------------------------------------------------------------- */

TEST(server_reports_length_field_beyond_msglen_as_format_error) {
    struct server s = start_server(0);
    uint32_t lengths[25] = {AFDT_MSGLEN + 1, AFDT_FULL_MSGLEN, 0x10000, 0x7fffffff, 0xffffffff};
    for (int i = 5; i < 25; i++)
        lengths[i] = (uint32_t)AFDT_MSGLEN + 1 + rnd() % (0xffffffffu - AFDT_MSGLEN);
    for (int i = 0; i < 25; i++) {
        uint8_t junk[200], frame[sizeof(junk) + 4];
        for (size_t j = 0; j < sizeof(junk); j++)
            junk[j] = (uint8_t)rnd();
        int fd = raw_connect(&s);
        send_all(fd, frame, make_frame(frame, lengths[i], junk, sizeof(junk)));
        /* No response, only the server closing the connection. */
        CHECK_INT(read_until_closed(fd, NULL, 0, 3000), ==, 0);
        close(fd);
    }
    CHECK_INT(count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0), ==, 25);
    CHECK_INT(ask(&s, "?errors"), ==, 25);
    CHECK_INT(ask(&s, "?requests"), ==, 0);
    finish(&s);
}

TEST(server_answers_or_rejects_random_byte_streams_exactly_as_framed) {
    struct server s = start_server(0);
    long answered = 0, rejected = 0, trailing = 0;
    for (int i = 0; i < 300; i++) {
        uint8_t buf[700], got[1024];
        size_t n = 1 + rnd() % sizeof(buf);
        for (size_t j = 0; j < n; j++)
            buf[j] = (uint8_t)rnd();
        if (rnd() % 2 && n >= 4) {
            /* Half the time a plausible length, which the bytes after it may or may not honour. */
            uint32_t hdr = rnd() % (AFDT_MSGLEN + 1);
            memcpy(buf, &hdr, sizeof(hdr));
        }
        if (n > 4 && buf[4] == '?')
            buf[4] = 'x'; /* not a control request for our test server */
        uint32_t hdr = 0;
        if (n >= 4)
            memcpy(&hdr, buf, sizeof(hdr));
        bool whole = n >= 4 && hdr <= AFDT_MSGLEN && n - 4 >= hdr;

        int fd = raw_connect(&s);
        send_all(fd, buf, n);
        CHECK_INT(shutdown(fd, SHUT_WR), ==, 0);
        long r = read_until_closed(fd, got, sizeof(got), 3000);
        close(fd);
        if (whole) {
            /* A complete frame is a request like any other: echoed; bytes after it (sent in
             * the same call, so read with it) are ignored and reported. */
            CHECK_INT(r, ==, 4 + (long)hdr);
            CHECK_MEM(got, buf, 4 + hdr);
            answered++;
            trailing += n - 4 > hdr;
        } else {
            CHECK_INT(r, ==, 0);
            rejected++;
        }
    }
    /* The generator exercised every outcome. */
    CHECK(answered > 20 && rejected > 20 && trailing > 10);
    CHECK_INT(ask(&s, "?requests"), ==, answered);
    CHECK_INT(count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0), ==, rejected + trailing);
    CHECK_INT(ask(&s, "?errors"), ==, rejected + trailing);
    finish(&s);
}

TEST(server_reports_frame_cut_short_by_eof_as_format_error) {
    struct server s = start_server(0);
    uint8_t frame[AFDT_FULL_MSGLEN];
    /* The header says 100 bytes, only 10 follow, then the client closes. */
    int fd = raw_connect(&s);
    send_all(fd, frame, make_frame(frame, 100, "0123456789", 10));
    close(fd);
    /* A header and nothing else. */
    fd = raw_connect(&s);
    send_all(fd, frame, make_frame(frame, 100, NULL, 0));
    close(fd);
    /* Half a header. */
    fd = raw_connect(&s);
    send_all(fd, frame, 2);
    close(fd);
    /* A lying length on a half-closed socket: the client still waits, and hears nothing. */
    fd = raw_connect(&s);
    send_all(fd, frame, make_frame(frame, AFDT_MSGLEN, "abc", 3));
    CHECK_INT(shutdown(fd, SHUT_WR), ==, 0);
    CHECK_INT(read_until_closed(fd, NULL, 0, 3000), ==, 0);
    close(fd);
    CHECK_INT(wait_errors(&s, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0, 4), ==, 4);
    CHECK_INT(ask(&s, "?errors"), ==, 4);
    CHECK_INT(ask(&s, "?requests"), ==, 0);
    finish(&s);
}

TEST(server_reports_connect_then_close_as_recvmsg_eof) {
    struct server s = start_server(0);
    for (int i = 0; i < 20; i++)
        close(raw_connect(&s));
    CHECK_INT(wait_errors(&s, AFDT_HANDLE_REQUEST, AFDT_RECVMSG, 0, 20), ==, 20);
    CHECK_INT(ask(&s, "?errors"), ==, 20);
    finish(&s);
}

TEST(server_drops_silent_and_dripping_clients_at_deadline_and_answers_others_meanwhile) {
    struct server s = start_server(0);
    int64_t t0 = now_ms();
    uint8_t frame[AFDT_FULL_MSGLEN];
    int socks[3];
    socks[0] = raw_connect(&s); /* says nothing */
    socks[1] = raw_connect(&s); /* drips a byte every 500 ms, never finishing its frame */
    socks[2] = raw_connect(&s); /* sends half a frame, then nothing */
    make_frame(frame, 100, NULL, 0);
    send_all(socks[1], frame, 1);
    size_t dripped = 1;
    uint8_t half[50] = {0}, frame2[sizeof(half) + 4];
    send_all(socks[2], frame2, make_frame(frame2, 100, half, sizeof(half)));
    good_exchange(&s, 2);

    int64_t closed_at[3] = {-1, -1, -1};
    int64_t next_drip = now_ms() + 500;
    bool mid_exchange_done = false;
    int open_left = 3;
    while (open_left > 0 && now_ms() - t0 < 15000) {
        struct pollfd p[3];
        for (int i = 0; i < 3; i++)
            p[i] = (struct pollfd){closed_at[i] < 0 ? socks[i] : -1, POLLIN, 0};
        (void)poll(p, 3, 100);
        for (int i = 0; i < 3; i++) {
            if (closed_at[i] < 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                peer_closed(socks[i])) {
                closed_at[i] = now_ms() - t0;
                open_left--;
            }
        }
        if (closed_at[1] < 0 && now_ms() >= next_drip) {
            uint8_t b = (uint8_t)(dripped < 4 ? frame[dripped] : 'd');
            (void)send(socks[1], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            dripped++;
            next_drip += 500;
        }
        if (!mid_exchange_done && now_ms() - t0 > 5000) {
            /* Halfway to the deadline, with all three still held, others are answered. */
            CHECK_INT(open_left, ==, 3);
            good_exchange(&s, 2);
            mid_exchange_done = true;
        }
    }
    for (int i = 0; i < 3; i++) {
        /* Dropped at the 10 s deadline: not before it, and not long after. */
        CHECK_INT(closed_at[i], >=, 9500);
        CHECK_INT(closed_at[i], <=, 13000);
        close(socks[i]);
    }
    CHECK(dripped > 10); /* the dripping client kept sending: progress does not extend it */
    CHECK_INT(count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_TIMEOUT, ETIMEDOUT), ==, 3);
    CHECK_INT(ask(&s, "?errors"), ==, 3);
    finish(&s);
}

TEST(server_reassembles_request_sent_one_byte_at_a_time) {
    struct server s = start_server(0);
    uint8_t frame[AFDT_FULL_MSGLEN], payload[AFDT_MSGLEN], resp[AFDT_MSGLEN];
    const char *small = "split-request-payload";
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)('a' + i % 26);
    struct {
        const void *payload;
        size_t len, chunk;
        int delay_ms;
    } cases[] = {{small, strlen(small), 1, 10}, {payload, sizeof(payload), 7, 1}};
    int dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t n = make_frame(frame, (uint32_t)cases[c].len, cases[c].payload, cases[c].len);
        int fd = raw_connect(&s);
        for (size_t off = 0; off < n; off += cases[c].chunk) {
            send_all(fd, frame + off, n - off < cases[c].chunk ? n - off : cases[c].chunk);
            sleep_ms(cases[c].delay_ms);
        }
        uint32_t rlen = sizeof(resp);
        int got = -1;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_recv_fd_msg(fd, resp, &rlen, &got, &err), ==, 0);
        CHECK_INT(rlen, ==, cases[c].len);
        CHECK_MEM(resp, cases[c].payload, rlen);
        CHECK(same_file(got, dn));
        close(got);
        close(fd);
    }
    close(dn);
    CHECK_INT(ask(&s, "?requests"), ==, 2);
    CHECK_INT(ask(&s, "?errors"), ==, 0);
    finish(&s);
}

TEST(server_closes_descriptors_sent_with_request_and_answers_it) {
    struct server s = start_server(0);
    /* Every descriptor we send is a copy of this pipe's write end: once the server has closed
     * all it received, and we ours, the read end sees end of file. */
    int pp[2];
    CHECK_INT(pipe2(pp, O_CLOEXEC), ==, 0);
    int fds[AFDT_MAX_FDS];
    for (int i = 0; i < AFDT_MAX_FDS; i++) {
        fds[i] = fcntl(pp[1], F_DUPFD_CLOEXEC, 0);
        CHECK(fds[i] >= 0);
    }
    int dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uint8_t frame[AFDT_FULL_MSGLEN], resp[AFDT_MSGLEN];
    const char *text = "request-with-descriptors";

    /* Answered: descriptors on the whole frame (1, 200, 253), on the payload only, on both
     * the header and the payload, and on an empty request (the "descriptor only" idiom). */
    struct {
        unsigned on_header, on_payload;
        bool split, empty;
    } answered[] = {{1, 0, false, false},  {200, 0, false, false},  {253, 0, false, false},
                    {0, 200, true, false}, {100, 150, true, false}, {5, 0, false, true}};
    size_t nanswered = sizeof(answered) / sizeof(answered[0]);
    for (size_t i = 0; i < nanswered; i++) {
        const char *req = answered[i].empty ? "" : text;
        size_t n = make_frame(frame, (uint32_t)strlen(req), req, strlen(req));
        int fd = raw_connect(&s);
        if (answered[i].split) {
            send_with_fds(fd, frame, 4, fds, answered[i].on_header);
            sleep_ms(5);
            send_with_fds(fd, frame + 4, n - 4, fds, answered[i].on_payload);
        } else {
            send_with_fds(fd, frame, n, fds, answered[i].on_header);
        }
        uint32_t rlen = sizeof(resp);
        int got = -1;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_recv_fd_msg(fd, resp, &rlen, &got, &err), ==, 0);
        CHECK_INT(rlen, ==, strlen(req));
        CHECK_MEM(resp, req, rlen);
        CHECK(same_file(got, dn));
        close(got);
        close(fd);
    }
    /* Rejected frames carrying descriptors: too long a length, and a lying one cut by EOF. */
    int fd = raw_connect(&s);
    send_with_fds(fd, frame, make_frame(frame, 0xffffffff, "0123456789", 10), fds, 100);
    CHECK_INT(read_until_closed(fd, NULL, 0, 3000), ==, 0);
    close(fd);
    fd = raw_connect(&s);
    send_with_fds(fd, frame, make_frame(frame, 100, "0123456789", 10), fds, 100);
    close(fd);
    CHECK_INT(wait_errors(&s, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0, (long)nanswered + 2), ==,
              (long)nanswered + 2);
    CHECK_INT(ask(&s, "?errors"), ==, (long)nanswered + 2);
    CHECK_INT(ask(&s, "?requests"), ==, (long)nanswered);
    check_server_idle(&s);

    for (int i = 0; i < AFDT_MAX_FDS; i++)
        close(fds[i]);
    close(pp[1]);
    close(dn);
    uint8_t b;
    struct pollfd p = {pp[0], POLLIN, 0};
    CHECK_INT(poll(&p, 1, 3000), ==, 1);
    CHECK_INT(read(pp[0], &b, 1), ==, 0); /* no copy of the write end is left anywhere */
    close(pp[0]);
    finish(&s);
}

TEST(server_cap_drops_oldest_waiting_connections_under_flood_of_2000) {
    enum { FLOOD = 2000, CAP = 1024 };
    ensure_nofile(FLOOD + 256); /* before the fork, so the server child gets room too */
    struct server s = start_server(0);
    static int socks[FLOOD];
    for (int i = 0; i < FLOOD; i++)
        socks[i] = raw_connect(&s);
    /* Connections are accepted in order, so this one comes after the whole flood. */
    good_exchange(&s, 2);
    long drops = count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_RECVMSG, ECONNABORTED);
    CHECK_INT(drops, >=, FLOOD - CAP);
    CHECK_INT(drops, <=, FLOOD - CAP + 2);
    CHECK_INT(ask(&s, "?errors"), ==, drops);
    /* The oldest were dropped; the newest are still held, waiting for their requests. */
    for (int i = 0; i < FLOOD - CAP; i++)
        if (!peer_closed(socks[i]))
            harness_fail(__FILE__, __LINE__, "flood connection %d (old) is still open", i);
    for (int i = FLOOD - CAP + 3; i < FLOOD; i++)
        if (peer_closed(socks[i]))
            harness_fail(__FILE__, __LINE__, "flood connection %d (new) was closed", i);
    for (int i = 0; i < FLOOD; i++)
        close(socks[i]);
    check_server_idle(&s);
    /* Every connection still held when we closed it ended with end of file. */
    CHECK_INT(count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_RECVMSG, 0), ==, FLOOD - drops);
    CHECK_INT(ask(&s, "?errors"), ==, FLOOD);
    finish(&s);
}

TEST(server_answers_1000_clients_that_never_read_their_response) {
    enum { N = 1000 };
    ensure_nofile(N + 256);
    struct server s = start_server(0);
    static int socks[N];
    uint8_t frame[64], resp[64];
    char req[32];
    for (int i = 0; i < N; i++) {
        socks[i] = raw_connect(&s);
        snprintf(req, sizeof(req), "never-read-%d", i);
        send_all(socks[i], frame, make_frame(frame, (uint32_t)strlen(req), req, strlen(req)));
    }
    CHECK_INT(wait_requests(&s, N), ==, N);
    CHECK_INT(ask(&s, "?errors"), ==, 0);
    /* The server holds nothing for them: their responses wait in their own sockets. */
    check_server_idle(&s);
    good_exchange(&s, 2);
    int dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < N; i += N - 1) {
        uint32_t rlen = sizeof(resp);
        int got = -1;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        snprintf(req, sizeof(req), "never-read-%d", i);
        CHECK_INT(afdt_recv_fd_msg(socks[i], resp, &rlen, &got, &err), ==, 0);
        CHECK_INT(rlen, ==, strlen(req));
        CHECK_MEM(resp, req, rlen);
        CHECK(same_file(got, dn));
        close(got);
    }
    close(dn);
    for (int i = 0; i < N; i++)
        close(socks[i]);
    CHECK_INT(ask(&s, "?errors"), ==, 0);
    finish(&s);
}

TEST(server_survives_clients_that_close_before_reading_response) {
    struct server s = start_server(0);
    uint8_t frame[64];
    size_t n = make_frame(frame, 7, "vanish!", 7);
    /* With the server stopped, every client is gone before its request is read: each answer
     * then meets a closed peer, which must be EPIPE and never SIGPIPE. */
    CHECK_INT(kill(s.pid, SIGSTOP), ==, 0);
    int st = 0;
    CHECK_INT(waitpid(s.pid, &st, WUNTRACED), ==, s.pid); /* stopped for sure, not on its way */
    CHECK(WIFSTOPPED(st));
    for (int i = 0; i < 100; i++) {
        int fd = raw_connect(&s);
        send_all(fd, frame, n);
        close(fd);
    }
    CHECK_INT(kill(s.pid, SIGCONT), ==, 0);
    CHECK_INT(wait_errors(&s, AFDT_HANDLE_REQUEST, AFDT_SENDMSG, EPIPE, 100), ==, 100);
    CHECK_INT(ask(&s, "?requests"), ==, 100);
    CHECK_INT(ask(&s, "?errors"), ==, 100);
    /* Racing the server: each request is still handled; an answer that finds the client gone
     * is EPIPE, and nothing else may go wrong. */
    for (int i = 0; i < 200; i++) {
        int fd = raw_connect(&s);
        send_all(fd, frame, n);
        close(fd);
    }
    CHECK_INT(wait_requests(&s, 300), ==, 300);
    long epipe = count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_SENDMSG, EPIPE);
    CHECK_INT(ask(&s, "?errors"), ==, epipe);
    finish(&s); /* the child exits 0: a SIGPIPE would have made it 128 + 13 */
}

TEST(server_is_not_stalled_by_a_lingering_socket_sent_with_a_request) {
    struct server s = start_server(0);
    int peer, l;
    int sock = lingering_socket(&peer, &l);
    /* Stopped, the server cannot take the socket before we let go of our copy: the one in
     * flight is then the last, and closing it would wait 5 s if it still lingered. */
    CHECK_INT(kill(s.pid, SIGSTOP), ==, 0);
    int st = 0;
    CHECK_INT(waitpid(s.pid, &st, WUNTRACED), ==, s.pid);
    CHECK(WIFSTOPPED(st));
    int fd = raw_connect(&s);
    uint8_t frame[64], resp[64];
    send_with_fds(fd, frame, make_frame(frame, 6, "linger", 6), &sock, 1);
    close(sock);
    CHECK_INT(kill(s.pid, SIGCONT), ==, 0);
    int64_t t0 = now_ms();
    uint32_t rlen = sizeof(resp);
    int got = -1;
    CHECK_INT(afdt_recv_fd_msg(fd, resp, &rlen, &got, NULL), ==, 0);
    CHECK_INT(now_ms() - t0, <, 2500); /* 5,000 if the server's close lingered */
    CHECK_INT(rlen, ==, 6);
    close(got);
    close(fd);
    good_exchange(&s, 3);
    CHECK_INT(wait_errors(&s, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0, 1), ==, 1);
    close(peer);
    close(l);
    finish(&s);
}

/* Poll (up to 10 s) until the server has hung up on @fd. */
static bool wait_hung_up(int fd) {
    int64_t end = now_ms() + 10000;
    while (!peer_closed(fd) && now_ms() < end)
        sleep_ms(10);
    return peer_closed(fd);
}

TEST(server_out_of_descriptors_trades_silent_connections_for_new_ones_without_spinning) {
    enum { CLIENTS = 50, ROOM = 20 };
    struct server s = start_server(ROOM);
    good_exchange(&s, 3);
    int socks[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        socks[i] = raw_connect(&s);
    /* ROOM are accepted and wait silently.  Out of descriptors, the server drops the
     * oldest silent connection for each next one in the backlog: the backlog drains, the
     * newest ROOM stay.  (No query may reach the server meanwhile: each would take a
     * silent connection's place.) */
    CHECK(wait_hung_up(socks[CLIENTS - ROOM - 1]));
    long cpu0 = cpu_ms(s.pid);
    sleep_ms(1000);
    long cpu1 = cpu_ms(s.pid);
    /* A server retrying accept in a loop would burn the whole second. */
    CHECK_INT(cpu1 - cpu0, <, 250);
    for (int i = 0; i < CLIENTS; i++)
        if (peer_closed(socks[i]) != (i < CLIENTS - ROOM))
            harness_fail(__FILE__, __LINE__, "connection %d: %s", i,
                         i < CLIENTS - ROOM ? "still held" : "dropped, yet newer than others");

    /* Still full of silent connections, the server answers a good client at once, in
     * place of the oldest of them. */
    good_exchange(&s, 3);
    CHECK(wait_hung_up(socks[CLIENTS - ROOM]));

    /* Fill the place that client left, then send a descriptor with a request: the server
     * has no room for it, so the kernel drops it (MSG_CTRUNC).  The request is answered as
     * usual, and the descriptor reported as any a client sends. */
    int extra = raw_connect(&s);
    /* It takes the free place; the accept after it fails for want of a descriptor, but
     * with nobody waiting, so it drops nobody (the counts below would show it). */
    sleep_ms(100);
    uint8_t frame[64], resp[64];
    int dn = open("/dev/null", O_RDONLY | O_CLOEXEC);
    send_with_fds(socks[CLIENTS - 1], frame, make_frame(frame, 4, "full", 4), &dn, 1);
    uint32_t rlen = sizeof(resp);
    int got = -1;
    CHECK_INT(afdt_recv_fd_msg(socks[CLIENTS - 1], resp, &rlen, &got, NULL), ==, 0);
    CHECK_INT(rlen, ==, 4);
    CHECK_MEM(resp, "full", 4);
    CHECK(same_file(got, dn));
    close(got);
    close(dn);

    for (int i = 0; i < CLIENTS; i++)
        close(socks[i]);
    close(extra);
    /* Every connection it held ends with end of file; then it serves as before. */
    const long held = ROOM - 2 + 1; /* the newest ROOM, less the dropped and the answered,
                                       plus the extra */
    CHECK_INT(wait_errors(&s, AFDT_HANDLE_REQUEST, AFDT_RECVMSG, 0, held), ==, held);
    /* One accept without room reported per connection dropped; one that found nobody
     * waiting either is no error, and pauses nothing (the next client would wait it out). */
    long emfile = count_errors(&s, AFDT_ACCEPT_CLIENT, AFDT_ACCEPT, EMFILE);
    CHECK_INT(emfile, ==, CLIENTS - ROOM + 1);
    CHECK_INT(count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_RECVMSG, ECONNABORTED), ==,
              CLIENTS - ROOM + 1);
    CHECK_INT(count_errors(&s, AFDT_HANDLE_REQUEST, AFDT_FORMAT, 0), ==, 1);
    CHECK_INT(ask(&s, "?errors"), ==, emfile + (CLIENTS - ROOM + 1) + 1 + held);
    finish(&s);
}
