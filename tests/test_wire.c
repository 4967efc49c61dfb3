/* SPDX-License-Identifier: BSD-3-Clause */
/* The low-level interface: names, listen/connect, and frames on the wire. */
#include "afdt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "helpers.h"

/* --- Helpers ------------------------------------------------------------- */

static int open_null(void) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    return fd;
}

static void set_nonblock(int fd, bool on) {
    int fl = fcntl(fd, F_GETFL);
    CHECK(fl >= 0);
    CHECK_INT(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), ==, 0);
}

static bool is_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/* One raw sendmsg of @len bytes with @nfds descriptors, the way a program not
 * using this library (the 2009 one included) writes to the socket. */
static void raw_send(int s, const void *buf, size_t len, const int *fds, int nfds) {
    CHECK_INT(raw_sendmsg(s, buf, len, fds, (unsigned)nfds), ==, len);
}

/* Build a frame's bytes: header then payload; returns the total size. */
static size_t build_frame(uint8_t *out, uint32_t len_field, const void *payload, size_t n) {
    memcpy(out, &len_field, sizeof(len_field));
    if (n > 0)
        memcpy(out + sizeof(len_field), payload, n);
    return sizeof(len_field) + n;
}

/* The socket has nothing more to read right now. */
static void check_drained(int fd) {
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    int e = errno;
    CHECK_INT(r, ==, -1);
    CHECK_INT(e, ==, EAGAIN);
}

/* Send a plain frame and receive it, to prove the stream is still in step. */
static void check_in_step(int tx, int rx) {
    CHECK_INT(afdt_send_plain_msg(tx, (const uint8_t *)"step", 4, NULL), ==, 0);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(rx, buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(buf, "step", 4);
    CHECK_INT(fd, ==, -1);
}

static const char *abstract_name(const char *tag) {
    static char names[8][64];
    static int n;
    char *p = names[n++ % 8];
    snprintf(p, sizeof(names[0]), "@afdt-test-%d-%s-%d", (int)getpid(), tag, n);
    return p;
}

/* A path of exactly @len characters inside the test's private directory. */
static void path_of_length(char *out, size_t len) {
    const char *base = tmp_path("long");
    const char *slash = strrchr(base, '/');
    size_t dir = (size_t)(slash - base) + 1;
    CHECK(len > dir + 1);
    memcpy(out, base, dir);
    memset(out + dir, 'p', len - dir);
    out[len] = '\0';
}

static int accept_one(int lfd) {
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    CHECK(c >= 0);
    return c;
}

/* --- listen and connect -------------------------------------------------- */

TEST(listen_and_connect_make_a_working_connection) {
    const char *p = tmp_path("lc");
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int l = afdt_listen(p, &err);
    CHECK(l >= 0);
    struct stat st;
    CHECK_INT(stat(p, &st), ==, 0);
    CHECK(S_ISSOCK(st.st_mode));
    int c = afdt_connect(p, &err);
    CHECK(c >= 0);
    int a = accept_one(l);
    CHECK_INT(afdt_send_plain_msg(c, (const uint8_t *)"ping", 4, &err), ==, 0);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(a, buf, &len, &fd, &err), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(buf, "ping", 4);
    CHECK_INT(fd, ==, -1);
    close(a);
    close(c);
    close(l);
}

TEST(listen_and_connect_return_blocking_close_on_exec_sockets) {
    const char *p = tmp_path("cx");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    int c = afdt_connect(p, NULL);
    CHECK(c >= 0);
    CHECK(is_cloexec(l));
    CHECK(is_cloexec(c));
    CHECK(!is_nonblock(l));
    CHECK(!is_nonblock(c));
    int type = 0;
    socklen_t tl = sizeof(type);
    CHECK_INT(getsockopt(l, SOL_SOCKET, SO_TYPE, &type, &tl), ==, 0);
    CHECK_INT(type, ==, SOCK_STREAM);
    int acc = 0;
    tl = sizeof(acc);
    CHECK_INT(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &tl), ==, 0);
    CHECK_INT(acc, ==, 1);

    const char *an = abstract_name("cx");
    int al = afdt_listen(an, NULL);
    CHECK(al >= 0);
    int ac = afdt_connect(an, NULL);
    CHECK(ac >= 0);
    CHECK(is_cloexec(al));
    CHECK(is_cloexec(ac));
    close(ac);
    close(al);
    close(c);
    close(l);
}

TEST(listen_on_an_existing_socket_path_fails_with_bind_eaddrinuse) {
    const char *p = tmp_path("dup");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(p, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_BIND, EADDRINUSE, e);
    /* The failed call must not have removed the first server's name. */
    int c = afdt_connect(p, NULL);
    CHECK(c >= 0);
    close(c);
    close(l);
}

TEST(listen_on_an_existing_regular_file_fails_and_keeps_the_file) {
    const char *p = tmp_path("file");
    int f = open(p, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(f >= 0);
    CHECK_INT(write(f, "keep", 4), ==, 4);
    close(f);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(p, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_BIND, EADDRINUSE, e);
    struct stat st;
    CHECK_INT(stat(p, &st), ==, 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK_INT(st.st_size, ==, 4);
}

TEST(listen_on_an_existing_abstract_name_fails_with_bind_eaddrinuse) {
    const char *an = abstract_name("dup");
    int l = afdt_listen(an, NULL);
    CHECK(l >= 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(an, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_BIND, EADDRINUSE, e);
    close(l);
}

TEST(names_longer_than_sun_path_fail_with_pathname_enametoolong) {
    /* sun_path holds 108 bytes: a path of 107 characters and its NUL fit,
     * 108 characters do not. */
    char longest[200], too_long[200];
    path_of_length(longest, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    path_of_length(too_long, sizeof(((struct sockaddr_un *)0)->sun_path));
    CHECK_INT(strlen(too_long), ==, 108);

    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(too_long, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, ENAMETOOLONG, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(too_long, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, ENAMETOOLONG, e);
    /* Nothing was created under a truncated name. */
    too_long[107] = '\0';
    CHECK_INT(access(too_long, F_OK), <, 0);

    int l = afdt_listen(longest, NULL);
    CHECK(l >= 0);
    int c = afdt_connect(longest, NULL);
    CHECK(c >= 0);
    close(c);
    close(l);

    char big[4096];
    memset(big, 'x', sizeof(big) - 1);
    big[0] = '/';
    big[sizeof(big) - 1] = '\0';
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(big, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, ENAMETOOLONG, e);
}

TEST(abstract_names_longer_than_sun_path_fail_with_pathname_enametoolong) {
    /* An abstract name has no NUL at the end, so all 107 bytes after the
     * leading NUL are usable; 108 are not. */
    char name[120];
    int prefix = snprintf(name, sizeof(name), "@afdt-%d-", (int)getpid());
    memset(name + prefix, 'a', (size_t)(108 - prefix));
    name[108] = '\0'; /* '@' + 107 characters */
    int l = afdt_listen(name, NULL);
    CHECK(l >= 0);
    struct sockaddr_un sa;
    socklen_t sl = sizeof(sa);
    CHECK_INT(getsockname(l, (struct sockaddr *)&sa, &sl), ==, 0);
    CHECK_INT(sl, ==, sizeof(struct sockaddr_un));
    int c = afdt_connect(name, NULL);
    CHECK(c >= 0);
    close(c);
    close(l);

    name[108] = 'a';
    name[109] = '\0'; /* '@' + 108 characters */
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(name, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, ENAMETOOLONG, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(name, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, ENAMETOOLONG, e);
}

TEST(null_and_empty_names_fail_with_pathname_einval) {
    const char *bad[] = {NULL, "", "@"};
    for (int i = 0; i < 3; i++) {
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_listen(bad[i], &err), <, 0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EINVAL, e);
        err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_connect(bad[i], &err), <, 0);
        e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EINVAL, e);
    }
}

TEST(connect_to_a_missing_path_fails_with_connect_enoent) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(tmp_path("nobody"), &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ENOENT, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect("/nonexistent-afdt-dir/x.sock", &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ENOENT, e);
}

TEST(connect_to_a_missing_abstract_name_fails_with_connect_econnrefused) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(abstract_name("nobody"), &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ECONNREFUSED, e);
}

TEST(connect_to_a_stale_socket_file_fails_with_connect_econnrefused) {
    /* A socket file whose server has gone: bound, then closed. */
    const char *p = tmp_path("stale");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, p);
    CHECK_INT(bind(s, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    close(s);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(p, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ECONNREFUSED, e);

    /* A regular file in its place is refused the same way. */
    const char *q = tmp_path("regular");
    int f = open(q, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(f >= 0);
    close(f);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_connect(q, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ECONNREFUSED, e);
}

TEST(abstract_name_address_length_is_exact_without_trailing_nul) {
    const char *an = abstract_name("exact");
    size_t n = strlen(an + 1);
    int l = afdt_listen(an, NULL);
    CHECK(l >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0x55, sizeof(sa));
    socklen_t sl = sizeof(sa);
    CHECK_INT(getsockname(l, (struct sockaddr *)&sa, &sl), ==, 0);
    CHECK_INT(sl, ==, offsetof(struct sockaddr_un, sun_path) + 1 + n);
    CHECK_INT(sa.sun_family, ==, AF_UNIX);
    CHECK_INT(sa.sun_path[0], ==, 0);
    CHECK_MEM(sa.sun_path + 1, an + 1, n);
    /* No file appears for an abstract name. */
    CHECK_INT(access(an, F_OK), <, 0);

    int c = afdt_connect(an, NULL);
    CHECK(c >= 0);
    memset(&sa, 0x55, sizeof(sa));
    sl = sizeof(sa);
    CHECK_INT(getpeername(c, (struct sockaddr *)&sa, &sl), ==, 0);
    CHECK_INT(sl, ==, offsetof(struct sockaddr_un, sun_path) + 1 + n);
    CHECK_MEM(sa.sun_path + 1, an + 1, n);
    int a = accept_one(l);
    int nul = open_null();
    CHECK_INT(afdt_send_fd_msg(a, (const uint8_t *)"abs", 3, nul, NULL), ==, 0);
    uint8_t buf[3];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(c, buf, &len, &fd, NULL), ==, 0);
    CHECK(same_file(fd, nul));
    close(fd);
    close(nul);
    close(a);
    close(c);
    close(l);
}

TEST(abstract_names_interoperate_with_exact_length_raw_peers) {
    /* systemd, Go and Python bind and connect with the exact length: a raw
     * peer spelled that way must reach our listener, and we must reach its. */
    const char *an = abstract_name("raw");
    size_t n = strlen(an + 1);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, an + 1, n);
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);

    int l = afdt_listen(an, NULL);
    CHECK(l >= 0);
    int raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(raw >= 0);
    CHECK_INT(connect(raw, (struct sockaddr *)&sa, sl), ==, 0);
    close(raw);
    close(l);

    int rl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(rl >= 0);
    CHECK_INT(bind(rl, (struct sockaddr *)&sa, sl), ==, 0);
    CHECK_INT(listen(rl, 4), ==, 0);
    int c = afdt_connect(an, NULL);
    CHECK(c >= 0);
    close(c);
    close(rl);
}

/* Binds a raw listener with a backlog of 1 at @path and fills it with
 * connections nobody accepts; returns the listener, connections in @fill. */
static int full_backlog(const char *path, int *fill, int cap, int *nfill) {
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    CHECK_INT(bind(l, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    CHECK_INT(listen(l, 1), ==, 0);
    *nfill = 0;
    for (;;) {
        CHECK(*nfill < cap);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        CHECK(s >= 0);
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            int e = errno;
            close(s);
            CHECK_INT(e, ==, EAGAIN);
            return l;
        }
        fill[(*nfill)++] = s;
    }
}

static void note_signal(int sig) {
    (void)sig;
}

static int connect_to_full_backlog(void *arg) {
    /* Bounded here, in our own process, so a connect that never returns
     * fails the test instead of hanging it. */
    alarm(5);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int c = afdt_connect(arg, &err);
    CHECK(c >= 0);
    close(c);
    return 0;
}

TEST(connect_waits_while_the_backlog_is_full_and_succeeds_once_there_is_room) {
    const char *p = tmp_path("backlog");
    int fill[64], nfill;
    int l = full_backlog(p, fill, 64, &nfill);
    /* Signals while the child waits must not turn into an EINTR failure; the
     * handler (no SA_RESTART) is installed before the fork so the child has
     * it from its first instruction. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = note_signal;
    sigemptyset(&sa.sa_mask);
    CHECK_INT(sigaction(SIGUSR1, &sa, NULL), ==, 0);
    pid_t pid = spawn(connect_to_full_backlog, (void *)p);
    sleep_ms(100);
    for (int i = 0; i < 5; i++) {
        kill(pid, SIGUSR1);
        sleep_ms(20);
    }
    /* Accepting one queued connection makes room for the waiting one. */
    int a = accept_one(l);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(a);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(l);
}

TEST(listen_backlog_holds_hundreds_of_pending_connections) {
    /* The backlog is SOMAXCONN, not a small constant: 300 connections nobody
     * has accepted yet all get in at once. */
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_cur < 400)
        harness_skip("RLIMIT_NOFILE below 400");
    const char *p = tmp_path("somax");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, p);
    static int conns[300];
    for (int i = 0; i < 300; i++) {
        conns[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        CHECK(conns[i] >= 0);
        if (connect(conns[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
            harness_fail(__FILE__, __LINE__, "connection %d refused: %s", i, strerror(errno));
    }
    for (int i = 0; i < 300; i++)
        close(conns[i]);
    close(l);
}

/* --- Round trips ----------------------------------------------------------- */

TEST(fd_frame_round_trip_over_socketpair_gives_same_file_close_on_exec) {
    int sv[2];
    make_pair(sv);
    int f = make_file("round trip");
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"hello", 5, f, &err), >=, 0);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), >=, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "hello", 5);
    CHECK(fd >= 0);
    CHECK(fd != f);
    CHECK(same_file(fd, f));
    CHECK(is_cloexec(fd));
    check_file_contents(fd, "round trip");
    /* The sender kept its own copy. */
    CHECK(fcntl(f, F_GETFD) >= 0);
    check_drained(sv[1]);
    close(fd);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

static int forked_peer(void *arg) {
    const char *p = arg;
    int c = afdt_connect(p, NULL);
    CHECK(c >= 0);
    int f = make_file("from the child");
    CHECK_INT(afdt_send_fd_msg(c, (const uint8_t *)"child", 5, f, NULL), ==, 0);
    close(f);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(c, buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 6);
    CHECK_MEM(buf, "parent", 6);
    CHECK(fd >= 0);
    CHECK(is_cloexec(fd));
    check_file_contents(fd, "from the parent");
    close(fd);
    close(c);
    return 0;
}

TEST(fd_frames_round_trip_both_ways_with_a_forked_peer_over_listen_connect) {
    const char *p = tmp_path("fork");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    pid_t pid = spawn(forked_peer, (void *)p);
    int a = accept_one(l);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(a, buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "child", 5);
    CHECK(fd >= 0);
    CHECK(is_cloexec(fd));
    check_file_contents(fd, "from the child");
    close(fd);
    int f = make_file("from the parent");
    CHECK_INT(afdt_send_fd_msg(a, (const uint8_t *)"parent", 6, f, NULL), ==, 0);
    close(f);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(a);
    close(l);
}

TEST(plain_frames_of_every_boundary_size_round_trip_without_descriptor) {
    int sv[2];
    make_pair(sv);
    uint8_t out[AFDT_MSGLEN], in[AFDT_MSGLEN];
    for (size_t i = 0; i < sizeof(out); i++)
        out[i] = (uint8_t)(i * 7 + 1);
    const uint32_t sizes[] = {0, 1, 4, 255, 256, AFDT_MSGLEN - 1, AFDT_MSGLEN};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        CHECK_INT(afdt_send_plain_msg(sv[0], out, sizes[k], NULL), ==, 0);
        memset(in, 0, sizeof(in));
        uint32_t len = sizeof(in);
        int fd = -7;
        CHECK_INT(afdt_recv_fd_msg(sv[1], in, &len, &fd, NULL), ==, 0);
        CHECK_INT(len, ==, sizes[k]);
        CHECK_MEM(in, out, sizes[k]);
        CHECK_INT(fd, ==, -1);
        /* A frame that exactly fills the buffer is fine too. */
        CHECK_INT(afdt_send_plain_msg(sv[0], out, sizes[k], NULL), ==, 0);
        len = sizes[k];
        CHECK_INT(afdt_recv_plain_msg(sv[1], sizes[k] ? in : NULL, &len, NULL), ==, 0);
        CHECK_INT(len, ==, sizes[k]);
    }
    check_drained(sv[1]);
    close(sv[0]);
    close(sv[1]);
}

TEST(negative_fd_to_send_means_no_descriptor) {
    int sv[2];
    make_pair(sv);
    const int none[] = {-1, -5, -1000};
    for (int i = 0; i < 3; i++) {
        CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"n", 1, none[i], NULL), ==, 0);
        uint8_t buf[4];
        uint32_t len = sizeof(buf);
        int fd = -7;
        CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
        CHECK_INT(len, ==, 1);
        CHECK_INT(fd, ==, -1);
    }
    close(sv[0]);
    close(sv[1]);
}

TEST(empty_frame_with_null_content_carries_only_a_descriptor) {
    int sv[2];
    make_pair(sv);
    int f = make_file("empty frame");
    CHECK_INT(afdt_send_fd_msg(sv[0], NULL, 0, f, NULL), ==, 0);
    uint32_t len = 0;
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], NULL, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 0);
    CHECK(same_file(fd, f));
    CHECK(is_cloexec(fd));
    close(fd);
    /* The other combinations of NULL/0 on each side. */
    CHECK_INT(afdt_send_plain_msg(sv[0], NULL, 0, NULL), ==, 0);
    len = 0;
    CHECK_INT(afdt_recv_plain_msg(sv[1], NULL, &len, NULL), ==, 0);
    CHECK_INT(len, ==, 0);
    CHECK_INT(afdt_send_fd_msg(sv[0], NULL, 0, f, NULL), ==, 0);
    uint8_t big[AFDT_MSGLEN];
    len = sizeof(big);
    fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], big, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 0);
    CHECK(same_file(fd, f));
    close(fd);
    check_drained(sv[1]);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

TEST(recv_consumes_exactly_one_of_several_queued_frames) {
    int sv[2];
    make_pair(sv);
    int f1 = make_file("one"), f2 = make_file("two");
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"first", 5, f1, NULL), ==, 0);
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"second!", 7, f2, NULL), ==, 0);
    CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"third", 5, NULL), ==, 0);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "first", 5);
    CHECK(same_file(fd, f1));
    close(fd);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 7);
    CHECK_MEM(buf, "second!", 7);
    CHECK(same_file(fd, f2));
    close(fd);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "third", 5);
    CHECK_INT(fd, ==, -1);
    check_drained(sv[1]);
    close(f1);
    close(f2);
    close(sv[0]);
    close(sv[1]);
}

/* --- Send failures ------------------------------------------------------- */

TEST(send_of_more_than_msglen_fails_with_format_errno_0_and_sends_nothing) {
    int sv[2];
    make_pair(sv);
    uint8_t big[AFDT_MSGLEN + 1] = {0};
    int nul = open_null();
    const uint32_t lens[] = {AFDT_MSGLEN + 1, AFDT_FULL_MSGLEN, 0x7fffffff, UINT32_MAX};
    for (int i = 0; i < 4; i++) {
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        errno = 12345;
        CHECK_INT(afdt_send_fd_msg(sv[0], big, lens[i], nul, &err), <, 0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
        err = AFDT_ERROR_T_INIT;
        errno = 12345;
        CHECK_INT(afdt_send_plain_msg(sv[0], big, lens[i], &err), <, 0);
        e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
        err = AFDT_ERROR_T_INIT;
        errno = 12345;
        CHECK_INT(afdt_send_fds_msg(sv[0], big, lens[i], &nul, 1, &err), <, 0);
        e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    }
    check_drained(sv[1]);
    close(nul);
    close(sv[0]);
    close(sv[1]);
}

TEST(send_to_a_closed_peer_fails_with_epipe_and_raises_no_sigpipe) {
    /* The harness restored SIGPIPE's default action: a SIGPIPE kills us. */
    int sv[2];
    make_pair(sv);
    close(sv[1]);
    int nul = open_null();
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"x", 1, nul, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EPIPE, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"x", 1, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EPIPE, e);
    CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 0, &nul, 1, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EPIPE);
    CHECK_INT(afdt_send_fd_msg(sv[0], NULL, 0, -1, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EPIPE);
    close(nul);
    close(sv[0]);
}

static int exit_at_once(void *arg) {
    (void)arg;
    return 0;
}

TEST(send_to_an_exited_process_fails_with_epipe_and_raises_no_sigpipe) {
    const char *p = tmp_path("gone");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    int c = afdt_connect(p, NULL);
    CHECK(c >= 0);
    int a = accept_one(l);
    close(l);
    /* The accepted end lives on only in a child that exits. */
    pid_t pid = spawn(exit_at_once, NULL);
    close(a);
    CHECK_INT(wait_exit(pid), ==, 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(c, (const uint8_t *)"late", 4, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EPIPE, e);
    close(c);
}

TEST(send_with_a_bad_descriptor_fails_with_sendmsg_ebadf_and_sends_nothing) {
    int sv[2];
    make_pair(sv);
    CHECK_INT(fcntl(9999, F_GETFD), <, 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"bad", 3, 9999, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EBADF, e);
    int bad[2] = {0, 9999};
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"bad", 3, bad, 2, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EBADF, e);
    check_drained(sv[1]);
    check_in_step(sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);
}

TEST(send_on_a_full_nonblocking_socket_fails_with_eagain_and_sends_nothing) {
    int sv[2];
    make_pair(sv);
    set_nonblock(sv[0], true);
    size_t filled = 0;
    for (;;) {
        ssize_t r = send(sv[0], "f", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            CHECK_INT(errno, ==, EAGAIN);
            break;
        }
        filled++;
    }
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"late", 4, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EAGAIN, e);
    CHECK(is_nonblock(sv[0]));
    /* Nothing of the frame went out: the reader sees only the filler. */
    size_t drained = 0;
    char buf[4096];
    for (;;) {
        ssize_t r = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            CHECK_INT(buf[i], ==, 'f');
        drained += (size_t)r;
    }
    CHECK_INT(drained, ==, filled);
    set_nonblock(sv[0], false);
    check_in_step(sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);
}

TEST(send_with_null_content_and_nonzero_length_fails_with_format_einval) {
    int sv[2];
    make_pair(sv);
    int nul = open_null();
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fd_msg(sv[0], NULL, 3, nul, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(sv[0], NULL, 1, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 1, &nul, 1, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    check_drained(sv[1]);
    close(nul);
    close(sv[0]);
    close(sv[1]);
}

TEST(recv_with_a_null_buffer_of_nonzero_size_or_null_length_fails_with_einval) {
    int sv[2];
    make_pair(sv);
    int f = make_file("kept");
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"abc", 3, f, NULL), ==, 0);
    int before = fd_count();
    uint32_t len = 5;
    int fd = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], NULL, &len, &fd, NULL), <, 0);
    int e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(len, <=, 5);
    CHECK_INT(fd, ==, -1);
    fd = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], NULL, NULL, &fd, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(fd, ==, -1);
    len = 5;
    CHECK_INT(afdt_recv_plain_msg(sv[1], NULL, &len, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    uint8_t buf[8];
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, NULL, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    uint32_t n = 1;
    len = 5;
    CHECK_INT(afdt_recv_fds_msg(sv[1], NULL, &len, &fd, &n, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(n, ==, 0);
    len = sizeof(buf);
    n = 2;
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, NULL, &n, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, &fd, NULL, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    /* None of those consumed the frame waiting on the socket. */
    CHECK_FD_COUNT(before);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 3);
    CHECK(same_file(fd, f));
    close(fd);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

TEST(calls_on_a_bad_or_non_socket_descriptor_fail_with_the_system_errno) {
    int pfd[2];
    CHECK_INT(pipe2(pfd, O_CLOEXEC), ==, 0);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fd_msg(pfd[0], buf, &len, &fd, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, ENOTSOCK, e);
    CHECK_INT(fd, ==, -1);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(pfd[1], (const uint8_t *)"x", 1, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, ENOTSOCK, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fd_msg(-1, (const uint8_t *)"x", 1, pfd[0], &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_SENDMSG, EBADF, e);
    len = sizeof(buf);
    fd = 12345;
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fd_msg(-1, buf, &len, &fd, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, EBADF, e);
    CHECK_INT(fd, ==, -1);
    close(pfd[0]);
    close(pfd[1]);
}

/* --- Receive failures ---------------------------------------------------- */

TEST(recv_into_a_too_small_buffer_fails_with_format_closes_the_fd_and_stays_in_step) {
    int sv[2];
    make_pair(sv);
    int f = make_file("too big");
    int before = fd_count();
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"0123456789", 10, f, NULL), ==, 0);
    uint8_t buf[16];
    memset(buf, '#', sizeof(buf));
    uint32_t len = 3;
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(len, <=, 3);
    CHECK_INT(fd, ==, -1);
    CHECK_FD_COUNT(before);
    /* The buffer's size is respected: nothing written past it. */
    for (size_t i = 3; i < sizeof(buf); i++)
        CHECK_INT(buf[i], ==, '#');
    check_in_step(sv[0], sv[1]);

    /* The same with a zero-sized NULL buffer and with recv_plain_msg. */
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"xy", 2, f, NULL), ==, 0);
    len = 0;
    fd = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], NULL, &len, &fd, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, 0);
    CHECK_INT(len, ==, 0);
    CHECK_INT(fd, ==, -1);
    CHECK_FD_COUNT(before);
    check_in_step(sv[0], sv[1]);
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"0123456789", 10, f, NULL), ==, 0);
    len = 9;
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(len, <=, 9);
    CHECK_FD_COUNT(before);
    check_in_step(sv[0], sv[1]);
    check_drained(sv[1]);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

TEST(recv_of_a_length_field_over_msglen_fails_with_format_and_closes_the_fd) {
    const uint32_t lens[] = {AFDT_MSGLEN + 1, AFDT_FULL_MSGLEN, 0x10000, UINT32_MAX};
    for (int i = 0; i < 4; i++) {
        int sv[2];
        make_pair(sv);
        int f = make_file("oversized");
        int before = fd_count();
        uint8_t frame[64];
        size_t n = build_frame(frame, lens[i], "abcdefgh", 8);
        raw_send(sv[0], frame, n, &f, 1);
        uint8_t buf[AFDT_MSGLEN];
        uint32_t len = sizeof(buf);
        int fd = 12345;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        errno = 12345;
        CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
        CHECK_INT(len, <=, sizeof(buf));
        CHECK_INT(fd, ==, -1);
        CHECK_FD_COUNT(before);
        close(f);
        close(sv[0]);
        close(sv[1]);
    }
}

TEST(recv_at_end_of_file_fails_with_recvmsg) {
    int sv[2];
    make_pair(sv);
    close(sv[0]);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, 0, e);
    CHECK_INT(len, <=, sizeof(buf));
    CHECK_INT(fd, ==, -1);
    len = sizeof(buf);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, 0, e);
    close(sv[1]);
}

static int write_partial_frame_and_exit(void *arg) {
    int s = *(int *)arg;
    int f = make_file("partial");
    uint8_t frame[16];
    build_frame(frame, 10, "abc", 3);
    raw_send(s, frame, 7, &f, 1); /* header claims 10, only 3 follow */
    return 0;
}

TEST(recv_of_a_frame_cut_short_by_end_of_file_fails_with_format) {
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(write_partial_frame_and_exit, &sv[0]);
    close(sv[0]);
    CHECK_INT(wait_exit(pid), ==, 0);
    int before = fd_count();
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(len, <=, sizeof(buf));
    CHECK_INT(fd, ==, -1);
    CHECK_FD_COUNT(before);
    close(sv[1]);
}

TEST(recv_of_a_header_cut_short_by_end_of_file_fails_with_format) {
    int sv[2];
    make_pair(sv);
    uint32_t hdr = 5;
    CHECK_INT(write(sv[0], &hdr, 2), ==, 2);
    close(sv[0]);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(fd, ==, -1);
    close(sv[1]);
}

TEST(recv_on_an_idle_nonblocking_socket_fails_with_recvmsg_eagain) {
    int sv[2];
    make_pair(sv);
    set_nonblock(sv[1], true);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, EAGAIN, e);
    CHECK_INT(len, <=, sizeof(buf));
    CHECK_INT(fd, ==, -1);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EAGAIN);
    /* The socket is still usable for the next frame. */
    CHECK(is_nonblock(sv[1]));
    check_in_step(sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);
}

/* --- Partial I/O and EINTR -------------------------------------------------- */

/* Writes a frame with a descriptor a byte or a few at a time, pausing between
 * writes, so the receiver sees it arrive in pieces. */
static int dribble_frame(void *arg) {
    int s = *(int *)arg;
    int f = make_file("dribbled");
    const char *payload = "abcdefghijklmnopqrstuvwxyz";
    uint8_t frame[64];
    size_t n = build_frame(frame, 26, payload, 26);
    raw_send(s, frame, 1, &f, 1);
    close(f);
    size_t chunks[] = {1, 1, 1, 5, 1, 10, 10};
    size_t off = 1;
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        sleep_ms(15);
        CHECK_INT(write(s, frame + off, chunks[i]), ==, chunks[i]);
        off += chunks[i];
    }
    CHECK_INT(off, ==, n);
    return 0;
}

static void receive_dribbled(int s) {
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = -7;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fd_msg(s, buf, &len, &fd, &err), ==, 0);
    CHECK_INT(len, ==, 26);
    CHECK_MEM(buf, "abcdefghijklmnopqrstuvwxyz", 26);
    CHECK(fd >= 0);
    CHECK(is_cloexec(fd));
    check_file_contents(fd, "dribbled");
    close(fd);
}

TEST(recv_reassembles_a_frame_dribbled_byte_by_byte_on_a_blocking_socket) {
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(dribble_frame, &sv[0]);
    receive_dribbled(sv[1]);
    CHECK_INT(wait_exit(pid), ==, 0);
    check_in_step(sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);
}

TEST(recv_finishes_a_begun_frame_dribbled_byte_by_byte_on_a_nonblocking_socket) {
    int sv[2];
    make_pair(sv);
    set_nonblock(sv[1], true);
    pid_t pid = spawn(dribble_frame, &sv[0]);
    /* Wait for the first byte: once a frame has begun, the call must finish
     * it rather than fail with EAGAIN. */
    struct pollfd p = {.fd = sv[1], .events = POLLIN};
    CHECK_INT(poll(&p, 1, 5000), ==, 1);
    receive_dribbled(sv[1]);
    CHECK(is_nonblock(sv[1]));
    CHECK_INT(wait_exit(pid), ==, 0);
    check_in_step(sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);
}

static int fd_on_payload_byte(void *arg) {
    int s = *(int *)arg;
    int f = make_file("late fd");
    uint8_t frame[16];
    build_frame(frame, 4, "late", 4);
    raw_send(s, frame, 4, NULL, 0);
    sleep_ms(20);
    raw_send(s, frame + 4, 4, &f, 1);
    close(f);
    return 0;
}

TEST(recv_takes_a_descriptor_attached_to_a_later_byte_of_the_frame) {
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(fd_on_payload_byte, &sv[0]);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(buf, "late", 4);
    CHECK(fd >= 0);
    check_file_contents(fd, "late fd");
    close(fd);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(sv[0]);
    close(sv[1]);
}

static volatile sig_atomic_t signals_seen;

static void count_signal(int sig) {
    (void)sig;
    signals_seen++;
}

/* Install a handler without SA_RESTART, so blocked calls see EINTR. */
static void interruptible_sigusr1(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = count_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    CHECK_INT(sigaction(SIGUSR1, &sa, NULL), ==, 0);
}

struct pester {
    int sock;
    pid_t target;
};

/* Signal the parent for a while, then send a frame in two pieces with more
 * signals in between. */
static int pester_then_send(void *arg) {
    struct pester *p = arg;
    for (int i = 0; i < 40; i++) {
        kill(p->target, SIGUSR1);
        sleep_ms(3);
    }
    int f = make_file("interrupted");
    uint8_t frame[16];
    size_t n = build_frame(frame, 6, "signal", 6);
    raw_send(p->sock, frame, 5, &f, 1);
    for (int i = 0; i < 20; i++) {
        kill(p->target, SIGUSR1);
        sleep_ms(3);
    }
    raw_send(p->sock, frame + 5, n - 5, NULL, 0);
    return 0;
}

TEST(recv_blocked_through_signals_returns_the_frame_not_eintr) {
    interruptible_sigusr1();
    int sv[2];
    make_pair(sv);
    struct pester p = {sv[0], getpid()};
    pid_t pid = spawn(pester_then_send, &p);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = -7;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), ==, 0);
    CHECK_INT(len, ==, 6);
    CHECK_MEM(buf, "signal", 6);
    check_file_contents(fd, "interrupted");
    close(fd);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK_INT(signals_seen, >, 0);
    close(sv[0]);
    close(sv[1]);
}

/* Signal the parent (blocked sending into a full socket), then drain the
 * socket and check the frame arrived whole after the filler. */
static int pester_then_drain(void *arg) {
    struct pester *p = arg;
    for (int i = 0; i < 40; i++) {
        kill(p->target, SIGUSR1);
        sleep_ms(3);
    }
    for (;;) {
        char c;
        read_exactly(p->sock, &c, 1);
        if (c != 'f') {
            /* The first header byte: 508 in host order does not start with 'f'. */
            uint8_t rest[3];
            read_exactly(p->sock, rest, 3);
            uint8_t hdr[4] = {(uint8_t)c, rest[0], rest[1], rest[2]};
            uint32_t len;
            memcpy(&len, hdr, 4);
            CHECK_INT(len, ==, AFDT_MSGLEN);
            uint8_t body[AFDT_MSGLEN];
            read_exactly(p->sock, body, sizeof(body));
            for (size_t i = 0; i < sizeof(body); i++)
                CHECK_INT(body[i], ==, 'B');
            return 0;
        }
    }
}

TEST(send_blocked_on_a_full_socket_through_signals_sends_the_whole_frame) {
    interruptible_sigusr1();
    int sv[2];
    make_pair(sv);
    set_nonblock(sv[0], true);
    while (send(sv[0], "f", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1) {
    }
    set_nonblock(sv[0], false);
    struct pester p = {sv[1], getpid()};
    pid_t pid = spawn(pester_then_drain, &p);
    uint8_t body[AFDT_MSGLEN];
    memset(body, 'B', sizeof(body));
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_plain_msg(sv[0], body, sizeof(body), &err), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(sv[0]);
    close(sv[1]);
}

/* --- Frames interleaved with other data ------------------------------------ */

TEST(recv_keeps_bytes_after_the_frame_in_the_stream) {
    int sv[2];
    make_pair(sv);
    int f = make_file("before XYZ");
    /* Library frame then raw bytes, queued together before the receive. */
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"frame", 5, f, NULL), ==, 0);
    CHECK_INT(write(sv[0], "XYZ", 3), ==, 3);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "frame", 5);
    CHECK(same_file(fd, f));
    close(fd);
    char rest[8] = {0};
    CHECK_INT(read(sv[1], rest, sizeof(rest)), ==, 3);
    CHECK_MEM(rest, "XYZ", 3);

    /* One raw write holding the frame and the bytes after it. */
    uint8_t both[32];
    size_t n = build_frame(both, 5, "frame", 5);
    memcpy(both + n, "XYZ", 3);
    raw_send(sv[0], both, n + 3, &f, 1);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK(same_file(fd, f));
    close(fd);
    memset(rest, 0, sizeof(rest));
    CHECK_INT(read(sv[1], rest, sizeof(rest)), ==, 3);
    CHECK_MEM(rest, "XYZ", 3);

    /* And with recv_plain_msg. */
    raw_send(sv[0], both, n + 3, NULL, 0);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    memset(rest, 0, sizeof(rest));
    CHECK_INT(read(sv[1], rest, sizeof(rest)), ==, 3);
    CHECK_MEM(rest, "XYZ", 3);
    close(f);
    close(sv[0]);
    close(sv[1]);
}

#define LIGHT_ROUNDS 6

/* The HHVM light-process idiom: an empty frame carrying a descriptor, then
 * the command as raw bytes, several times, all written in one burst. */
static int light_process_writer(void *arg) {
    int s = *(int *)arg;
    for (int i = 0; i < LIGHT_ROUNDS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "file %d", i);
        int f = make_file(name);
        CHECK_INT(afdt_send_fd_msg(s, NULL, 0, f, NULL), ==, 0);
        close(f);
        char cmd[32];
        int n = snprintf(cmd, sizeof(cmd), "exec %d\n", i);
        CHECK_INT(write(s, cmd, (size_t)n), ==, n);
    }
    return 0;
}

/* Read what light_process_writer wrote: each empty frame's descriptor, then
 * the raw line after it.  With @big_buffer the receiver offers its whole
 * buffer, and must still stop at each frame's end. */
static void read_light_process(bool big_buffer) {
    int before = fd_count();
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(light_process_writer, &sv[0]);
    CHECK_INT(wait_exit(pid), ==, 0); /* everything is queued before we read */
    for (int i = 0; i < LIGHT_ROUNDS; i++) {
        uint8_t buf[AFDT_MSGLEN];
        uint32_t len = big_buffer ? sizeof(buf) : 0;
        int fd = -7;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_recv_fd_msg(sv[1], big_buffer ? buf : NULL, &len, &fd, &err), ==, 0);
        CHECK_INT(len, ==, 0);
        CHECK(fd >= 0);
        char name[32];
        snprintf(name, sizeof(name), "file %d", i);
        check_file_contents(fd, name);
        close(fd);
        char want[32], got[32] = {0};
        int n = snprintf(want, sizeof(want), "exec %d\n", i);
        read_exactly(sv[1], got, (size_t)n);
        CHECK_STR(got, want);
    }
    check_drained(sv[1]);
    close(sv[0]);
    close(sv[1]);
    CHECK_FD_COUNT(before);
}

TEST(empty_fd_frames_interleave_with_raw_data_on_one_socket) {
    read_light_process(false);
}

TEST(empty_fd_frames_interleave_with_raw_data_using_a_big_buffer) {
    read_light_process(true);
}

/* --- Descriptors: more than asked for, none wanted, none room -------------- */

TEST(recv_fd_msg_takes_the_first_of_several_descriptors_and_closes_the_rest) {
    int sv[2];
    make_pair(sv);
    int fs[3] = {make_file("first"), make_file("second"), make_file("third")};
    uint8_t frame[16];
    size_t n = build_frame(frame, 3, "abc", 3);
    raw_send(sv[0], frame, n, fs, 3);
    int before = fd_count();
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = -7;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), ==, 0);
    CHECK_INT(len, ==, 3);
    CHECK_MEM(buf, "abc", 3);
    CHECK(same_file(fd, fs[0]));
    CHECK_FD_COUNT(before + 1);
    close(fd);
    check_in_step(sv[0], sv[1]);
    for (int i = 0; i < 3; i++)
        close(fs[i]);
    close(sv[0]);
    close(sv[1]);
}

TEST(recv_plain_msg_closes_any_descriptor_that_arrives) {
    int sv[2];
    make_pair(sv);
    int fs[3] = {make_file("a"), make_file("b"), make_file("c")};
    int before = fd_count();
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"one", 3, fs[0], NULL), ==, 0);
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"three", 5, fs, 3, NULL), ==, 0);
    CHECK_INT(afdt_send_fd_msg(sv[0], NULL, 0, fs[1], NULL), ==, 0);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, NULL), ==, 0);
    CHECK_INT(len, ==, 3);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    len = 0;
    CHECK_INT(afdt_recv_plain_msg(sv[1], NULL, &len, NULL), ==, 0);
    CHECK_INT(len, ==, 0);
    CHECK_FD_COUNT(before);
    for (int i = 0; i < 3; i++)
        close(fs[i]);
    close(sv[0]);
    close(sv[1]);
}

/* In its own process, since it lowers RLIMIT_NOFILE: receive a frame whose
 * descriptor cannot be installed. */
static int receive_out_of_descriptors(void *arg) {
    (void)arg;
    int sv[2];
    make_pair(sv);
    int f = make_file("no room");
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"full", 4, f, NULL), ==, 0);
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"after", 5, f, NULL), ==, 0);
    close(f);
    int before = fd_count();

    struct fill full;
    fill_descriptors(&full, 64);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int r = afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err);
    int e = errno;
    release_descriptors(&full);

    CHECK_INT(r, <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, EMFILE, e);
    CHECK_INT(len, <=, sizeof(buf));
    CHECK_INT(fd, ==, -1);
    CHECK_FD_COUNT(before);
    /* The truncated frame was consumed whole: the next one is intact. */
    len = sizeof(buf);
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "after", 5);
    check_file_contents(fd, "no room");
    close(fd);
    CHECK_FD_COUNT(before);
    close(sv[0]);
    close(sv[1]);
    return 0;
}

TEST(recv_without_room_for_the_descriptor_fails_with_emfile_and_leaks_nothing) {
    pid_t pid = spawn(receive_out_of_descriptors, NULL);
    CHECK_INT(wait_exit(pid), ==, 0);
}

/* A frame with three descriptors reaches a process with room for one: what
 * each receive call makes of it (in its own process, as above). */
struct short_of_room {
    int call;               /* 0 afdt_recv_fd_msg, 1 afdt_recv_plain_msg, 2 afdt_recv_fds_msg */
    uint32_t n;             /* what afdt_recv_fds_msg asks for */
    int result;             /* what the call must return */
    enum afdt_operation op; /* and on failure, its error */
    int eno;
};

static int receive_three_with_room_for_one(void *arg) {
    const struct short_of_room *c = arg;
    int sv[2];
    make_pair(sv);
    int fs[3] = {make_file("first"), make_file("second"), make_file("third")};
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"three", 5, fs, 3, NULL), ==, 0);
    CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"after", 5, NULL), ==, 0);
    for (int i = 0; i < 3; i++)
        close(fs[i]);
    int before = fd_count();

    struct fill full;
    fill_descriptors(&full, 64);
    close(full.fds[--full.n]); /* exactly one slot */
    uint8_t buf[16];
    uint32_t len = sizeof(buf), n = c->n;
    int fds[3] = {-7, -7, -7};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int r = c->call == 0   ? afdt_recv_fd_msg(sv[1], buf, &len, &fds[0], &err)
            : c->call == 1 ? afdt_recv_plain_msg(sv[1], buf, &len, &err)
                           : afdt_recv_fds_msg(sv[1], buf, &len, fds, &n, &err);
    int e = errno;
    release_descriptors(&full);

    CHECK_INT(r, ==, c->result);
    if (r == 0) {
        /* The receiver asked for no more than it got: the rest are gone,
         * as if it had closed them, and that is no error. */
        CHECK_INT(len, ==, 5);
        CHECK_MEM(buf, "three", 5);
        if (c->call == 0)
            check_file_contents(fds[0], "first");
        CHECK_FD_COUNT(before + (c->call == 0));
        if (c->call == 0)
            close(fds[0]);
    } else {
        /* Asked for three, got one: descriptors it wanted were lost (EMFILE).
         * Asked for exactly one: the frame had more than that (EMSGSIZE), as
         * when there is room for them all. */
        CHECK_ERR(err, AFDT_NO_PHASE, c->op, c->eno, e);
        CHECK_INT(n, ==, 0);
    }
    CHECK_FD_COUNT(before);
    len = sizeof(buf);
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, NULL), ==, 0);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(buf, "after", 5);
    close(sv[0]);
    close(sv[1]);
    return 0;
}

TEST(recv_out_of_descriptors_keeps_what_it_asked_for_or_fails_with_emfile) {
    static const struct short_of_room cases[] = {{0, 0, 0, AFDT_NO_OPERATION, 0},
                                                 {1, 0, 0, AFDT_NO_OPERATION, 0},
                                                 {2, 3, -1, AFDT_RECVMSG, EMFILE},
                                                 {2, 1, -1, AFDT_FORMAT, EMSGSIZE}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pid_t pid = spawn(receive_three_with_room_for_one, (void *)&cases[i]);
        CHECK_INT(wait_exit(pid), ==, 0);
    }
}

TEST(recv_does_not_wait_for_a_lingering_socket_it_closes) {
    /* A peer can send a socket that would make our close() of it wait: the
     * descriptors a receive closes must not stall it. */
    int before = fd_count();
    int peer, l;
    int s = lingering_socket(&peer, &l);
    int sv[2];
    make_pair(sv);
    int fds[2] = {make_file("kept"), s};
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"two", 3, fds, 2, NULL), ==, 0);
    close(fds[0]);
    close(s); /* not the last reference yet: the frame in flight holds one */
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = -7;
    int64_t t0 = now_ms();
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(now_ms() - t0, <, 2500); /* 5,000 if the close lingered */
    CHECK_INT(len, ==, 3);
    check_file_contents(fd, "kept");
    close(fd);
    close(peer);
    close(l);
    close(sv[0]);
    close(sv[1]);
    CHECK_FD_COUNT(before);
}

/* --- Many descriptors per frame (extension) -------------------------------- */

TEST(fds_msg_carries_253_descriptors_in_one_frame_in_order) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_cur < 600)
        harness_skip("RLIMIT_NOFILE below 600");
    int sv[2];
    make_pair(sv);
    static int sent[AFDT_MAX_FDS], got[AFDT_MAX_FDS + 10];
    for (int i = 0; i < AFDT_MAX_FDS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%d", i);
        sent[i] = make_file(name);
    }
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"many", 4, sent, AFDT_MAX_FDS, NULL), ==,
              0);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    uint32_t n = AFDT_MAX_FDS + 10; /* more capacity than needed is fine */
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, got, &n, &err), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(buf, "many", 4);
    CHECK_INT(n, ==, AFDT_MAX_FDS);
    for (int i = 0; i < AFDT_MAX_FDS; i++) {
        CHECK(same_file(got[i], sent[i]));
        CHECK(is_cloexec(got[i]));
        close(got[i]);
        close(sent[i]);
    }
    check_drained(sv[1]);
    close(sv[0]);
    close(sv[1]);
}

TEST(fds_msg_with_zero_one_or_capacity_descriptors_round_trips) {
    int sv[2];
    make_pair(sv);
    int fs[3] = {make_file("x"), make_file("y"), make_file("z")};
    int got[3] = {-7, -7, -7};
    for (uint32_t k = 0; k <= 3; k++) {
        CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 0, k ? fs : NULL, k, NULL), ==, 0);
        uint32_t len = 0;
        uint32_t n = 3;
        CHECK_INT(afdt_recv_fds_msg(sv[1], NULL, &len, got, &n, NULL), ==, 0);
        CHECK_INT(n, ==, k);
        for (uint32_t i = 0; i < k; i++) {
            CHECK(same_file(got[i], fs[i]));
            close(got[i]);
        }
    }
    /* A one-descriptor receiver gets the first of a multi-descriptor frame. */
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"m", 1, fs, 3, NULL), ==, 0);
    int before = fd_count();
    uint8_t buf[4];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK(same_file(fd, fs[0]));
    CHECK_FD_COUNT(before + 1);
    close(fd);
    for (int i = 0; i < 3; i++)
        close(fs[i]);
    close(sv[0]);
    close(sv[1]);
}

TEST(recv_fds_msg_over_capacity_fails_with_format_and_closes_every_descriptor) {
    int sv[2];
    make_pair(sv);
    int fs[5];
    for (int i = 0; i < 5; i++)
        fs[i] = make_file("over");
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"five", 4, fs, 5, NULL), ==, 0);
    int before = fd_count();
    int got[2] = {-7, -7};
    uint32_t n = 2;
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, got, &n, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EMSGSIZE, e);
    CHECK_INT(n, ==, 0);
    CHECK_INT(len, <=, sizeof(buf));
    CHECK_FD_COUNT(before);
    check_in_step(sv[0], sv[1]);

    /* Capacity zero: any descriptor at all is too many. */
    CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 0, fs, 1, NULL), ==, 0);
    n = 0;
    len = 0;
    CHECK_INT(afdt_recv_fds_msg(sv[1], NULL, &len, NULL, &n, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EMSGSIZE);
    CHECK_INT(n, ==, 0);
    CHECK_FD_COUNT(before);
    check_in_step(sv[0], sv[1]);
    for (int i = 0; i < 5; i++)
        close(fs[i]);
    close(sv[0]);
    close(sv[1]);
}

TEST(send_fds_msg_rejects_more_than_253_descriptors_or_null_fds) {
    int sv[2];
    make_pair(sv);
    static int fds[AFDT_MAX_FDS + 1];
    int nul = open_null();
    for (int i = 0; i <= AFDT_MAX_FDS; i++)
        fds[i] = nul;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"x", 1, fds, AFDT_MAX_FDS + 1, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"x", 1, fds, UINT32_MAX, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"x", 1, NULL, 2, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    check_drained(sv[1]);
    close(nul);
    close(sv[0]);
    close(sv[1]);
}

/* --- Compatibility with 2009-style peers ----------------------------------- */

static int sync_pipe[2];

/* Exactly what a 2009 receiver does: one recvmsg into {header, buffer} with
 * room for one descriptor.  It blocks before the sender writes, so a sender
 * that split the frame over two sendmsg calls would be caught. */
static int receive_like_2009(void *arg) {
    int s = *(int *)arg;
    CHECK_INT(write(sync_pipe[1], "r", 1), ==, 1);
    uint32_t hdr = 0;
    uint8_t buf[AFDT_MSGLEN];
    struct iovec iov[2] = {{&hdr, sizeof(hdr)}, {buf, sizeof(buf)}};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    msg.msg_control = cm.buf;
    msg.msg_controllen = sizeof(cm.buf);
    ssize_t n = recvmsg(s, &msg, 0);
    CHECK_INT(n, ==, sizeof(hdr) + AFDT_MSGLEN);
    CHECK_INT(hdr, ==, AFDT_MSGLEN);
    for (size_t i = 0; i < AFDT_MSGLEN; i++)
        CHECK_INT(buf[i], ==, (uint8_t)i);
    CHECK_INT(msg.msg_flags & MSG_CTRUNC, ==, 0);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    CHECK(c != NULL);
    CHECK_INT(c->cmsg_level, ==, SOL_SOCKET);
    CHECK_INT(c->cmsg_type, ==, SCM_RIGHTS);
    CHECK_INT(c->cmsg_len, ==, CMSG_LEN(sizeof(int)));
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    check_file_contents(fd, "for 2009");
    close(fd);

    /* Second frame: short payload, no descriptor. */
    msg.msg_controllen = sizeof(cm.buf);
    msg.msg_flags = 0;
    n = recvmsg(s, &msg, 0);
    CHECK_INT(n, ==, sizeof(hdr) + 3);
    CHECK_INT(hdr, ==, 3);
    CHECK_MEM(buf, "old", 3);
    CHECK_INT(msg.msg_controllen, ==, 0);
    return 0;
}

TEST(sent_frames_arrive_whole_in_one_recvmsg_of_a_2009_receiver) {
    int sv[2];
    make_pair(sv);
    CHECK_INT(pipe2(sync_pipe, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(receive_like_2009, &sv[1]);
    char c;
    CHECK_INT(read(sync_pipe[0], &c, 1), ==, 1);
    sleep_ms(30); /* let the child block in recvmsg */
    uint8_t body[AFDT_MSGLEN];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)i;
    int f = make_file("for 2009");
    CHECK_INT(afdt_send_fd_msg(sv[0], body, sizeof(body), f, NULL), ==, 0);
    close(f);
    sleep_ms(30);
    CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"old", 3, NULL), ==, 0);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(sync_pipe[0]);
    close(sync_pipe[1]);
    close(sv[0]);
    close(sv[1]);
}

/* Exactly what a 2009 sender does: one sendmsg of {header, payload} with one
 * descriptor. */
static int send_like_2009(void *arg) {
    int s = *(int *)arg;
    int f = make_file("from 2009");
    uint8_t frame[AFDT_FULL_MSGLEN];
    uint8_t body[AFDT_MSGLEN];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(255 - i);
    size_t n = build_frame(frame, AFDT_MSGLEN, body, sizeof(body));
    CHECK_INT(n, ==, AFDT_FULL_MSGLEN);
    raw_send(s, frame, n, &f, 1);
    n = build_frame(frame, 0, NULL, 0);
    raw_send(s, frame, n, &f, 1);
    close(f);
    return 0;
}

TEST(frames_from_a_2009_sender_are_received_whole) {
    int sv[2];
    make_pair(sv);
    pid_t pid = spawn(send_like_2009, &sv[0]);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    int fd = -7;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, AFDT_MSGLEN);
    for (size_t i = 0; i < AFDT_MSGLEN; i++)
        CHECK_INT(buf[i], ==, (uint8_t)(255 - i));
    check_file_contents(fd, "from 2009");
    close(fd);
    len = 0;
    CHECK_INT(afdt_recv_fd_msg(sv[1], NULL, &len, &fd, NULL), ==, 0);
    CHECK_INT(len, ==, 0);
    check_file_contents(fd, "from 2009");
    close(fd);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(sv[0]);
    close(sv[1]);
}

TEST(a_2009_receiver_gets_the_first_descriptor_of_a_multi_descriptor_frame) {
    int sv[2];
    make_pair(sv);
    int fs[3] = {make_file("1st"), make_file("2nd"), make_file("3rd")};
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"3", 1, fs, 3, NULL), ==, 0);
    int before = fd_count();
    uint32_t hdr = 0;
    uint8_t buf[AFDT_MSGLEN];
    struct iovec iov[2] = {{&hdr, sizeof(hdr)}, {buf, sizeof(buf)}};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    msg.msg_control = cm.buf;
    msg.msg_controllen = sizeof(cm.buf);
    CHECK_INT(recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC), ==, 5);
    CHECK_INT(hdr, ==, 1);
    CHECK(msg.msg_flags & MSG_CTRUNC);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    CHECK(c != NULL);
    /* CMSG_SPACE(sizeof(int)) is padded to 8 bytes of data on LP64, so the
     * kernel fills the padding with a second descriptor: a receiver sized
     * for one gets the first two, and the rest are dropped. */
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    CHECK_INT(n, >=, 1);
    CHECK_INT(n, <=, 2);
    for (size_t i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        CHECK(same_file(fd, fs[i]));
        close(fd);
    }
    CHECK_FD_COUNT(before);
    for (int i = 0; i < 3; i++)
        close(fs[i]);
    close(sv[0]);
    close(sv[1]);
}

/* --- The error convention -------------------------------------------------- */

TEST(every_low_level_call_accepts_a_null_err) {
    int sv[2];
    make_pair(sv);
    uint8_t buf[4];
    uint32_t len;
    int fd;

    errno = 0;
    CHECK_INT(afdt_listen(NULL, NULL), <, 0);
    CHECK_INT(errno, ==, EINVAL);
    int l = afdt_listen(tmp_path("nullerr"), NULL);
    CHECK(l >= 0);
    errno = 0;
    CHECK_INT(afdt_connect(tmp_path("none"), NULL), <, 0);
    CHECK_INT(errno, ==, ENOENT);
    errno = 12345;
    CHECK_INT(afdt_send_fd_msg(sv[0], buf, AFDT_MSGLEN + 1, -1, NULL), <, 0);
    CHECK_INT(errno, ==, 0);
    errno = 12345;
    CHECK_INT(afdt_send_plain_msg(sv[0], buf, AFDT_MSGLEN + 1, NULL), <, 0);
    CHECK_INT(errno, ==, 0);
    errno = 0;
    CHECK_INT(afdt_send_fds_msg(sv[0], buf, 1, NULL, 1, NULL), <, 0);
    CHECK_INT(errno, ==, EINVAL);
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"toolong", 7, -1, NULL), ==, 0);
    len = sizeof(buf);
    fd = 12345;
    errno = 12345;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), <, 0);
    CHECK_INT(errno, ==, 0);
    CHECK_INT(fd, ==, -1);
    set_nonblock(sv[1], true);
    len = sizeof(buf);
    errno = 0;
    CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, NULL), <, 0);
    CHECK_INT(errno, ==, EAGAIN);
    uint32_t n = 1;
    len = sizeof(buf);
    errno = 0;
    CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, &fd, &n, NULL), <, 0);
    CHECK_INT(errno, ==, EAGAIN);
    close(l);
    close(sv[0]);
    close(sv[1]);
}

TEST(low_level_calls_set_operation_and_message_but_keep_the_callers_phase) {
    int sv[2];
    make_pair(sv);
    const enum afdt_phase phases[] = {AFDT_HANDLE_RESPONSE, AFDT_ACCEPT_CLIENT,
                                      (enum afdt_phase)42};
    for (int i = 0; i < 3; i++) {
        struct afdt_error_t err = {phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_listen("", &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_PATHNAME);
        CHECK(err.message != NULL);

        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_connect(tmp_path("none"), &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_CONNECT);
        CHECK(err.message != NULL);

        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_send_fd_msg(sv[0], NULL, AFDT_MSGLEN + 1, -1, &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_FORMAT);
        CHECK(err.message != NULL);

        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_send_plain_msg(sv[0], NULL, AFDT_MSGLEN + 1, &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_FORMAT);

        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_send_fds_msg(sv[0], NULL, 0, NULL, 1, &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_FORMAT);

        set_nonblock(sv[1], true);
        uint8_t buf[4];
        uint32_t len = sizeof(buf);
        int fd;
        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_RECVMSG);
        CHECK(err.message != NULL);

        len = sizeof(buf);
        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_RECVMSG);

        uint32_t n = 1;
        len = sizeof(buf);
        err = (struct afdt_error_t){phases[i], AFDT_MALLOC, NULL};
        CHECK_INT(afdt_recv_fds_msg(sv[1], buf, &len, &fd, &n, &err), <, 0);
        CHECK_INT(err.phase, ==, phases[i]);
        CHECK_INT(err.operation, ==, AFDT_RECVMSG);
    }
    close(sv[0]);
    close(sv[1]);
}

/* --- Threads ----------------------------------------------------------------- */

#define THREADS 8
#define ROUNDS 200

static void *round_trips(void *arg) {
    int id = (int)(intptr_t)arg;
    int sv[2];
    make_pair(sv);
    char name[32];
    snprintf(name, sizeof(name), "thread %d", id);
    int f = make_file(name);
    for (int i = 0; i < ROUNDS; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "%d:%d", id, i);
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)msg, (uint32_t)n, f, &err), ==, 0);
        uint8_t buf[32];
        uint32_t len = sizeof(buf);
        int fd = -7;
        CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, &err), ==, 0);
        CHECK_INT(len, ==, n);
        CHECK_MEM(buf, msg, (size_t)n);
        CHECK(same_file(fd, f));
        CHECK(is_cloexec(fd));
        close(fd);
        /* Every thread's errors are its own: a failure here must report
         * this thread's cause, whatever the others are doing. */
        errno = 0;
        len = 1;
        CHECK_INT(afdt_send_plain_msg(sv[0], (const uint8_t *)"xy", 2, &err), ==, 0);
        CHECK_INT(afdt_recv_plain_msg(sv[1], buf, &len, &err), <, 0);
        CHECK_INT(errno, ==, 0);
        CHECK_INT(err.operation, ==, AFDT_FORMAT);
    }
    close(f);
    close(sv[0]);
    close(sv[1]);
    return NULL;
}

TEST(eight_threads_do_200_round_trips_each_at_once) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_INT(pthread_create(&t[i], NULL, round_trips, (void *)(intptr_t)i), ==, 0);
    for (int i = 0; i < THREADS; i++)
        CHECK_INT(pthread_join(t[i], NULL), ==, 0);
}
