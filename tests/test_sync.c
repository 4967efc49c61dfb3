/* SPDX-License-Identifier: BSD-3-Clause */
/* The synchronous client against real forked servers, well-behaved and not. */
#include "afdt.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "helpers.h"

/* --- Helpers ------------------------------------------------------------- */

/* Read one request frame the way any server would. */
static void read_request(int c) {
    uint32_t len;
    read_exactly(c, &len, sizeof(len));
    CHECK_INT(len, <=, AFDT_MSGLEN);
    uint8_t buf[AFDT_MSGLEN];
    read_exactly(c, buf, len);
}

static void raw_send(int s, const void *buf, size_t len, int fd) {
    CHECK_INT(raw_sendmsg(s, buf, len, &fd, fd >= 0), ==, len);
}

static int accept_one(int lfd) {
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    CHECK(c >= 0);
    return c;
}

static void stop(pid_t pid) {
    kill(pid, SIGKILL);
    wait_exit(pid);
}

/* --- A real afdt server in a child process -------------------------------- */

#define NFILES 64

/* Set up in the parent before the fork, so both sides know the files. */
static struct {
    const char *path;
    int file;          /* the descriptor most answers carry */
    int files[NFILES]; /* "file N" answers with files[N] */
    int ready[2];      /* the child writes a byte once it is listening */
} srv;

static int on_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                      void *ud) {
    (void)ud;
    char cmd[AFDT_MSGLEN + 1];
    memcpy(cmd, req, len);
    cmd[len] = '\0';
    if (strcmp(cmd, "empty") == 0) {
        *resp_len = 0;
        return srv.file;
    }
    if (strcmp(cmd, "nofd") == 0) {
        memcpy(resp, "nofd", 4);
        *resp_len = 4;
        return -1;
    }
    if (strcmp(cmd, "big") == 0) {
        memset(resp, 'B', 100);
        *resp_len = 100;
        return srv.file;
    }
    if (strcmp(cmd, "slow") == 0) {
        sleep_ms(250);
        memcpy(resp, "slow", 4);
        *resp_len = 4;
        return srv.file;
    }
    int n;
    if (sscanf(cmd, "file %d", &n) == 1 && n >= 0 && n < NFILES) {
        memcpy(resp, req, len);
        *resp_len = len;
        return srv.files[n];
    }
    memcpy(resp, req, len); /* echo */
    *resp_len = len;
    return srv.file;
}

static void ignore_error(const struct afdt_error_t *e, void *ud) {
    (void)e;
    (void)ud;
}

static int server_main(void *arg) {
    (void)arg;
    struct event_base *eb = event_base_new();
    CHECK(eb != NULL);
    if (afdt_create_server(srv.path, eb, on_request, afdt_no_post, ignore_error, NULL, NULL) < 0)
        return 3;
    CHECK_INT(write(srv.ready[1], "r", 1), ==, 1);
    event_base_dispatch(eb);
    return 0;
}

/* Start a server at @path; the files it hands out are made here. */
static pid_t start_server(const char *path) {
    srv.path = path;
    srv.file = make_file("server file");
    for (int i = 0; i < NFILES; i++)
        srv.files[i] = -1;
    CHECK_INT(pipe2(srv.ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(server_main, NULL);
    char c;
    CHECK_INT(read(srv.ready[0], &c, 1), ==, 1);
    if (path[0] != '@')
        CHECK_INT(access(path, F_OK), ==, 0);
    return pid;
}

static void stop_server(pid_t pid) {
    stop(pid);
    close(srv.ready[0]);
    close(srv.ready[1]);
    close(srv.file);
    for (int i = 0; i < NFILES; i++)
        if (srv.files[i] >= 0)
            close(srv.files[i]);
}

static const struct timeval two_s = {2, 0};

/* One exchange that must succeed; returns the descriptor received. */
static int exchange(const char *path, const char *req, uint8_t *resp, uint32_t *resp_len) {
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int r = afdt_sync_client(path, (const uint8_t *)req, (uint32_t)strlen(req), resp, resp_len, &fd,
                             &two_s, &err);
    if (r < 0)
        harness_fail(__FILE__, __LINE__, "sync client: %s %s errno=%d", afdt_phase_str(err.phase),
                     afdt_operation_str(err.operation), errno);
    return fd;
}

/* --- Success ------------------------------------------------------------- */

TEST(sync_client_receives_the_response_and_a_close_on_exec_descriptor) {
    const char *p = tmp_path("ok");
    pid_t pid = start_server(p);
    int before = fd_count();
    uint8_t resp[64];
    uint32_t len = sizeof(resp);
    int fd = exchange(p, "hello", resp, &len);
    CHECK_INT(len, ==, 5);
    CHECK_MEM(resp, "hello", 5);
    CHECK(fd >= 0);
    CHECK(same_file(fd, srv.file));
    CHECK(is_cloexec(fd));
    check_file_contents(fd, "server file");
    /* The received descriptor is the only one the call left open. */
    CHECK_FD_COUNT(before + 1);
    close(fd);
    stop_server(pid);
}

TEST(sync_client_two_byte_request_fits_a_three_byte_response_buffer) {
    /* HHVM asks with a 2-byte request and a 3-byte buffer. */
    const char *p = tmp_path("hhvm");
    pid_t pid = start_server(p);
    uint8_t resp[3] = {0, 0, '#'};
    uint32_t len = sizeof(resp);
    int fd = exchange(p, "ok", resp, &len);
    CHECK_INT(len, ==, 2);
    CHECK_MEM(resp, "ok", 2);
    CHECK_INT(resp[2], ==, '#');
    CHECK(same_file(fd, srv.file));
    close(fd);
    stop_server(pid);
}

TEST(sync_client_accepts_a_null_response_buffer_for_an_empty_answer) {
    const char *p = tmp_path("empty");
    pid_t pid = start_server(p);
    uint32_t len = 0;
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"empty", 5, NULL, &len, &fd, &two_s, &err), >=,
              0);
    CHECK_INT(len, ==, 0);
    CHECK(same_file(fd, srv.file));
    CHECK(is_cloexec(fd));
    close(fd);
    /* An empty answer into a big buffer is fine too. */
    uint8_t resp[AFDT_MSGLEN];
    len = sizeof(resp);
    fd = exchange(p, "empty", resp, &len);
    CHECK_INT(len, ==, 0);
    CHECK(same_file(fd, srv.file));
    close(fd);
    stop_server(pid);
}

TEST(sync_client_sends_an_empty_request_and_gets_an_empty_answer) {
    const char *p = tmp_path("emptyreq");
    pid_t pid = start_server(p);
    uint32_t len = 0;
    int fd = 12345;
    CHECK_INT(afdt_sync_client(p, NULL, 0, NULL, &len, &fd, &two_s, NULL), >=, 0);
    CHECK_INT(len, ==, 0); /* the server echoes the empty request */
    CHECK(same_file(fd, srv.file));
    close(fd);
    stop_server(pid);
}

TEST(sync_client_reports_minus_one_when_the_server_sends_no_descriptor) {
    const char *p = tmp_path("nofd");
    pid_t pid = start_server(p);
    int before = fd_count();
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = exchange(p, "nofd", resp, &len);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(resp, "nofd", 4);
    CHECK_FD_COUNT(before);
    stop_server(pid);
}

TEST(sync_client_carries_a_full_msglen_request_and_response) {
    const char *p = tmp_path("max");
    pid_t pid = start_server(p);
    char req[AFDT_MSGLEN + 1];
    for (size_t i = 0; i < AFDT_MSGLEN; i++)
        req[i] = (char)('a' + i % 26);
    req[AFDT_MSGLEN] = '\0';
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp);
    int fd = exchange(p, req, resp, &len);
    CHECK_INT(len, ==, AFDT_MSGLEN);
    CHECK_MEM(resp, req, AFDT_MSGLEN);
    close(fd);
    stop_server(pid);
}

TEST(sync_client_with_a_null_timeout_completes) {
    const char *p = tmp_path("forever");
    pid_t pid = start_server(p);
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"null", 4, resp, &len, &fd, NULL, &err), >=, 0);
    CHECK_INT(len, ==, 4);
    CHECK(same_file(fd, srv.file));
    close(fd);
    stop_server(pid);
}

TEST(sync_client_reaches_a_server_on_an_abstract_name) {
    char name[64];
    snprintf(name, sizeof(name), "@afdt-test-%d-sync", (int)getpid());
    pid_t pid = start_server(name);
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = exchange(name, "abs", resp, &len);
    CHECK_INT(len, ==, 3);
    CHECK(same_file(fd, srv.file));
    close(fd);
    stop_server(pid);
}

static volatile sig_atomic_t signals_seen;

static void count_signal(int sig) {
    (void)sig;
    signals_seen++;
}

/* Count SIGUSR1 from now on; @flags 0 or SA_RESTART. */
static void catch_sigusr1(int flags) {
    struct sigaction act;
    memset(&act, 0, sizeof(act));
    act.sa_handler = count_signal;
    sigemptyset(&act.sa_mask);
    act.sa_flags = flags;
    CHECK_INT(sigaction(SIGUSR1, &act, NULL), ==, 0);
}

struct pester_args {
    pid_t target;
    int ms; /* how long to keep signalling */
};

/* In a child: SIGUSR1 to the target every 5 ms, for a while. */
static int pester(void *arg) {
    struct pester_args *a = arg;
    for (int waited = 0; waited < a->ms; waited += 5) {
        if (kill(a->target, SIGUSR1) < 0)
            break;
        sleep_ms(5);
    }
    return 0;
}

TEST(sync_client_waits_through_signals_without_failing_on_eintr) {
    const char *p = tmp_path("eintr");
    pid_t pid = start_server(p);
    catch_sigusr1(0); /* no SA_RESTART: blocked calls see EINTR */
    struct pester_args pa = {getpid(), 300};
    pid_t pester_pid = spawn(pester, &pa);
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = exchange(p, "slow", resp, &len); /* the server takes 250 ms */
    CHECK_INT(len, ==, 4);
    CHECK_MEM(resp, "slow", 4);
    CHECK(same_file(fd, srv.file));
    close(fd);
    CHECK_INT(wait_exit(pester_pid), ==, 0);
    CHECK_INT(signals_seen, >, 0);
    stop_server(pid);
}

/* A raw server that answers one request a byte at a time. */
static int dribbling_server(void *arg) {
    int l = *(int *)arg;
    int c = accept_one(l);
    read_request(c);
    int f = make_file("dribbled");
    uint8_t frame[32];
    uint32_t n = 7;
    memcpy(frame, &n, 4);
    memcpy(frame + 4, "dribble", 7);
    raw_send(c, frame, 1, f);
    for (size_t i = 1; i < 11; i++) {
        sleep_ms(10);
        CHECK_INT(write(c, frame + i, 1), ==, 1);
    }
    /* Hold the connection open until the client is done. */
    char x;
    CHECK_INT(read(c, &x, 1), ==, 0);
    return 0;
}

TEST(sync_client_reassembles_a_response_dribbled_byte_by_byte) {
    const char *p = tmp_path("dribble");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    pid_t pid = spawn(dribbling_server, &l);
    int before = fd_count();
    uint8_t resp[16];
    uint32_t len = sizeof(resp);
    int fd = exchange(p, "give", resp, &len);
    CHECK_INT(len, ==, 7);
    CHECK_MEM(resp, "dribble", 7);
    check_file_contents(fd, "dribbled");
    CHECK(is_cloexec(fd));
    CHECK_FD_COUNT(before + 1);
    close(fd);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(l);
}

/* --- Failures ------------------------------------------------------------- */

TEST(sync_client_response_longer_than_the_buffer_fails_with_format_and_leaks_nothing) {
    const char *p = tmp_path("big");
    pid_t pid = start_server(p);
    int before = fd_count();
    uint8_t resp[16];
    memset(resp, '#', sizeof(resp));
    uint32_t len = 10;
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"big", 3, resp, &len, &fd, &two_s, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, <=, 10);
    for (size_t i = 10; i < sizeof(resp); i++)
        CHECK_INT(resp[i], ==, '#');
    CHECK_FD_COUNT(before);

    /* A zero-sized NULL buffer is too small for any payload. */
    len = 0;
    fd = 12345;
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"x", 1, NULL, &len, &fd, &two_s, &err), <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, ==, 0);
    CHECK_FD_COUNT(before);
    stop_server(pid);
}

/* A sync call to @path given @tv must fail with AFDT_TIMEOUT after @ms (and
 * well within ten times that), having received nothing and leaked nothing. */
static void expect_timeout(const char *path, struct timeval tv, int64_t ms) {
    int before = fd_count();
    uint8_t resp[32];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int64_t t0 = now_ms();
    CHECK_INT(afdt_sync_client(path, (const uint8_t *)"hi", 2, resp, &len, &fd, &tv, &err), <, 0);
    int e = errno;
    int64_t took = now_ms() - t0;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_TIMEOUT, ETIMEDOUT, e);
    CHECK_INT(took, >=, ms);
    CHECK_INT(took, <, 10 * ms);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, <=, sizeof(resp));
    CHECK_FD_COUNT(before);
}

TEST(sync_client_times_out_on_a_server_that_never_accepts) {
    const char *p = tmp_path("silent");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    expect_timeout(p, (struct timeval){0, 300000}, 300);
    close(l);
}

static int accept_and_stay_silent(void *arg) {
    int l = *(int *)arg;
    int c = accept_one(l);
    read_request(c);
    pause();
    close(c);
    return 0;
}

TEST(sync_client_times_out_on_a_server_that_accepts_and_never_answers) {
    const char *p = tmp_path("mute");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    pid_t pid = spawn(accept_and_stay_silent, &l);
    expect_timeout(p, (struct timeval){0, 400000}, 400);
    stop(pid);
    close(l);
}

TEST(sync_client_counts_a_non_normalised_timeval_in_full) {
    const char *p = tmp_path("usec");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    /* 1.5 s, not 0.5 s and not an error */
    expect_timeout(p, (struct timeval){0, 1500000}, 1500);
    close(l);
}

/* Sends a response slowly enough that it would finish only well after the
 * client's deadline. */
static int answer_too_slowly(void *arg) {
    int l = *(int *)arg;
    int c = accept_one(l);
    read_request(c);
    int f = make_file("too late");
    uint8_t frame[32];
    uint32_t n = 20;
    memcpy(frame, &n, 4);
    memset(frame + 4, 's', 20);
    raw_send(c, frame, 1, f);
    for (size_t i = 1; i < 24; i++) {
        sleep_ms(250);
        if (send(c, frame + i, 1, MSG_NOSIGNAL) != 1)
            break; /* the client gave up, as it should */
    }
    close(c);
    return 0;
}

TEST(sync_client_timeout_covers_the_whole_exchange_not_each_read) {
    const char *p = tmp_path("trickle");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    pid_t pid = spawn(answer_too_slowly, &l);
    /* The whole response would take 5.75 s; the descriptor that came with
     * its first byte is closed. */
    expect_timeout(p, (struct timeval){0, 500000}, 500);
    stop(pid);
    close(l);
}

TEST(sync_client_to_a_missing_path_fails_with_connect_enoent) {
    int before = fd_count();
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(tmp_path("nobody"), (const uint8_t *)"hi", 2, resp, &len, &fd,
                               &two_s, &err),
              <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ENOENT, e);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, <=, sizeof(resp));
    CHECK_FD_COUNT(before);
    /* Without a timeout the answer is the same, at once. */
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(
        afdt_sync_client(tmp_path("nobody"), (const uint8_t *)"hi", 2, resp, &len, &fd, NULL, &err),
        <, 0);
    e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ENOENT, e);
    CHECK_FD_COUNT(before);
}

TEST(sync_client_to_a_stale_socket_file_fails_with_connect_econnrefused) {
    const char *p = tmp_path("stale");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, p);
    CHECK_INT(bind(s, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    close(s);
    int before = fd_count();
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ECONNREFUSED, e);
    CHECK_INT(fd, ==, -1);
    CHECK_FD_COUNT(before);
}

static int close_without_answering(void *arg) {
    int l = *(int *)arg;
    int c = accept_one(l);
    read_request(c);
    close(c);
    return 0;
}

TEST(sync_client_fails_with_recvmsg_when_the_server_closes_without_answering) {
    const char *p = tmp_path("rude");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    pid_t pid = spawn(close_without_answering, &l);
    int before = fd_count();
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, 0, e);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, <=, sizeof(resp));
    CHECK_FD_COUNT(before);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(l);
}

/* A raw server whose one answer is @arg's kind of broken frame. */
struct broken {
    int l;
    int kind; /* 0: cut short by close, 1: length over AFDT_MSGLEN */
};

static int send_broken_answer(void *arg) {
    struct broken *b = arg;
    int c = accept_one(b->l);
    read_request(c);
    int f = make_file("broken");
    uint8_t frame[32];
    uint32_t n = b->kind == 0 ? 10 : AFDT_MSGLEN + 1;
    memcpy(frame, &n, 4);
    memcpy(frame + 4, "abcdefgh", 8);
    raw_send(c, frame, b->kind == 0 ? 7 : 12, f);
    close(f);
    if (b->kind == 1) {
        char x;
        CHECK_INT(read(c, &x, 1), <=, 0); /* wait for the client to hang up */
    }
    close(c);
    return 0;
}

TEST(sync_client_fails_with_format_on_a_broken_answer_and_closes_its_descriptor) {
    for (int kind = 0; kind < 2; kind++) {
        const char *p = tmp_path("broken");
        int l = afdt_listen(p, NULL);
        CHECK(l >= 0);
        struct broken b = {l, kind};
        pid_t pid = spawn(send_broken_answer, &b);
        int before = fd_count();
        uint8_t resp[AFDT_MSGLEN];
        uint32_t len = sizeof(resp);
        int fd = 12345;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        errno = 12345;
        CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err), <,
                  0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
        CHECK_INT(fd, ==, -1);
        CHECK_INT(len, <=, sizeof(resp));
        CHECK_FD_COUNT(before);
        CHECK_INT(wait_exit(pid), ==, 0);
        close(l);
    }
}

TEST(sync_client_rejects_a_request_over_msglen_with_format_before_connecting) {
    const char *p = tmp_path("unused");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    int before = fd_count();
    uint8_t req[AFDT_MSGLEN + 1] = {0};
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    errno = 12345;
    CHECK_INT(afdt_sync_client(p, req, sizeof(req), resp, &len, &fd, &two_s, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, 0, e);
    CHECK_INT(fd, ==, -1);
    CHECK_FD_COUNT(before);
    /* Nothing connected to the server. */
    int fl = fcntl(l, F_GETFL);
    CHECK_INT(fcntl(l, F_SETFL, fl | O_NONBLOCK), ==, 0);
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    e = errno;
    CHECK_INT(c, ==, -1);
    CHECK_INT(e, ==, EAGAIN);
    close(l);
}

TEST(sync_client_rejects_bad_names_with_pathname) {
    char too_long[200];
    memset(too_long, 'n', sizeof(too_long) - 1);
    too_long[0] = '/';
    too_long[sizeof(too_long) - 1] = '\0';
    const char *names[] = {NULL, "", too_long};
    const int want[] = {EINVAL, EINVAL, ENAMETOOLONG};
    int before = fd_count();
    for (int i = 0; i < 3; i++) {
        uint8_t resp[8];
        uint32_t len = sizeof(resp);
        int fd = 12345;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(
            afdt_sync_client(names[i], (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err), <,
            0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, want[i], e);
        CHECK_INT(fd, ==, -1);
    }
    CHECK_FD_COUNT(before);
}

TEST(sync_client_with_a_null_err_still_fails_with_errno) {
    int before = fd_count();
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    errno = 0;
    CHECK_INT(afdt_sync_client(tmp_path("nobody"), (const uint8_t *)"hi", 2, resp, &len, &fd,
                               &two_s, NULL),
              <, 0);
    CHECK_INT(errno, ==, ENOENT);
    CHECK_INT(fd, ==, -1);
    const char *p = tmp_path("silent");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    struct timeval tv = {0, 100000};
    errno = 0;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &tv, NULL), <, 0);
    CHECK_INT(errno, ==, ETIMEDOUT);
    close(l);
    CHECK_FD_COUNT(before);
}

TEST(sync_client_rejects_null_buffers_of_nonzero_size_and_null_lengths_with_einval) {
    const char *p = tmp_path("unused");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    int before = fd_count();
    uint32_t len = 4;
    int fd = 12345;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, NULL, &len, &fd, &two_s, NULL), <, 0);
    int e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(len, <=, 4);
    CHECK_INT(fd, ==, -1);
    uint8_t resp[4];
    fd = 12345;
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, NULL, &fd, &two_s, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_INT(fd, ==, -1);
    len = sizeof(resp);
    CHECK_INT(afdt_sync_client(p, NULL, 2, resp, &len, &fd, &two_s, NULL), <, 0);
    e = errno;
    CHECK_INT(e, ==, EINVAL);
    CHECK_FD_COUNT(before);
    close(l);
}

TEST(sync_client_leaves_the_callers_phase_and_sets_the_operation) {
    int before = fd_count();
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = {AFDT_HANDLE_RESPONSE, AFDT_MALLOC, NULL};
    CHECK_INT(
        afdt_sync_client(tmp_path("none"), (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err),
        <, 0);
    CHECK_INT(err.phase, ==, AFDT_HANDLE_RESPONSE);
    CHECK_INT(err.operation, ==, AFDT_CONNECT);
    CHECK(err.message != NULL);
    const char *p = tmp_path("silent");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    struct timeval tv = {0, 50000};
    err = (struct afdt_error_t){AFDT_CREATE_CLIENT, AFDT_MALLOC, NULL};
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &tv, &err), <, 0);
    CHECK_INT(err.phase, ==, AFDT_CREATE_CLIENT);
    CHECK_INT(err.operation, ==, AFDT_TIMEOUT);
    CHECK(err.message != NULL);
    close(l);
    CHECK_FD_COUNT(before);
}

/* A listening socket at @path that nobody accepts on, its backlog full.
 * With @requests each filler connection has sent a well-formed request, so a
 * server that starts accepting later can serve them and make room. */
struct backlog {
    int l;
    int n;
    int fill[64];
};

static void backlog_fill(struct backlog *b, const char *path, bool requests) {
    b->l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(b->l >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    CHECK_INT(bind(b->l, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
    CHECK_INT(listen(b->l, 1), ==, 0);
    for (b->n = 0;; b->n++) {
        CHECK(b->n < 64);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        CHECK(s >= 0);
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            int e = errno;
            close(s);
            CHECK_INT(e, ==, EAGAIN);
            break;
        }
        uint8_t req[4] = {0};
        if (requests)
            CHECK_INT(write(s, req, 4), ==, 4);
        b->fill[b->n] = s;
    }
    CHECK_INT(b->n, >=, 1);
}

static void backlog_release(struct backlog *b) {
    for (int i = 0; i < b->n; i++)
        close(b->fill[i]);
    close(b->l);
}

TEST(sync_client_times_out_when_the_server_backlog_is_full) {
    /* With a timeout given, a full backlog is waited out, not AFDT_CONNECT
     * with EAGAIN. */
    const char *p = tmp_path("backlog");
    struct backlog b;
    backlog_fill(&b, p, false);
    expect_timeout(p, (struct timeval){0, 300000}, 300);
    backlog_release(&b);
}

/* Signals (SIGUSR1 every 5 ms for 5 s, even with SA_RESTART handlers) must
 * not restart a wait with a fresh timeout: the deadline is for the whole call. */
static void expect_timeout_through_signals(const char *path) {
    catch_sigusr1(SA_RESTART);
    signals_seen = 0;
    struct pester_args pa = {getpid(), 5000};
    pid_t pester_pid = spawn(pester, &pa);
    expect_timeout(path, (struct timeval){0, 300000}, 300);
    stop(pester_pid);
    CHECK_INT(signals_seen, >, 0);
}

TEST(sync_client_timeout_on_a_full_backlog_holds_through_signals) {
    const char *p = tmp_path("backlog-sig");
    struct backlog b;
    backlog_fill(&b, p, false);
    expect_timeout_through_signals(p);
    backlog_release(&b);
}

TEST(sync_client_timeout_on_a_silent_server_holds_through_signals) {
    const char *p = tmp_path("silent-sig");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    expect_timeout_through_signals(p);
    close(l);
}

static int hang_up_at_once(void *arg) {
    int l = *(int *)arg;
    for (int i = 0; i < 20; i++)
        close(accept_one(l));
    return 0;
}

TEST(sync_client_fails_cleanly_without_sigpipe_when_the_server_hangs_up_at_once) {
    /* Depending on timing the request meets a closed socket (EPIPE, which
     * must not raise SIGPIPE) or the answer never comes (end of file or
     * reset): either way an error, and nothing left open. */
    const char *p = tmp_path("hangup");
    int l = afdt_listen(p, NULL);
    CHECK(l >= 0);
    pid_t pid = spawn(hang_up_at_once, &l);
    int before = fd_count();
    for (int i = 0; i < 20; i++) {
        uint8_t resp[8];
        uint32_t len = sizeof(resp);
        int fd = 12345;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err), <,
                  0);
        int e = errno;
        CHECK(err.operation == AFDT_SENDMSG || err.operation == AFDT_RECVMSG);
        CHECK(e == EPIPE || e == ECONNRESET || e == 0);
        CHECK_INT(fd, ==, -1);
        CHECK_FD_COUNT(before);
    }
    CHECK_INT(wait_exit(pid), ==, 0);
    close(l);
}

/* A backlog that is full for a moment: a child accepts after 200 ms. */
static int accept_late_and_answer(void *arg) {
    int l = *(int *)arg;
    sleep_ms(200);
    for (int i = 0; i < 100; i++) {
        int c = accept_one(l);
        uint32_t len;
        read_exactly(c, &len, sizeof(len));
        CHECK_INT(len, <=, AFDT_MSGLEN);
        uint8_t buf[AFDT_MSGLEN];
        if (len > 0)
            read_exactly(c, buf, len);
        uint8_t frame[8];
        uint32_t n = 4;
        memcpy(frame, &n, 4);
        memcpy(frame + 4, "late", 4);
        raw_send(c, frame, 8, -1);
        close(c);
    }
    return 0;
}

TEST(sync_client_waits_for_room_in_a_full_backlog_within_its_timeout) {
    const char *p = tmp_path("backlog2");
    struct backlog b;
    backlog_fill(&b, p, true);
    pid_t pid = spawn(accept_late_and_answer, &b.l);
    uint8_t resp[8];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {3, 0};
    CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &tv, &err), ==, 0);
    CHECK_INT(len, ==, 4);
    CHECK_MEM(resp, "late", 4);
    CHECK_INT(fd, ==, -1);
    stop(pid);
    backlog_release(&b);
}

/* In its own process, since it lowers RLIMIT_NOFILE: leave room for the
 * client's socket but not for the descriptor the server sends. */
static int sync_client_out_of_descriptors(void *arg) {
    (void)arg;
    int before = fd_count();
    struct fill full;
    fill_descriptors(&full, 64);
    CHECK(full.n > 0);
    close(full.fds[--full.n]); /* exactly one slot: the client's socket */
    uint8_t resp[16];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int r = afdt_sync_client(srv.path, (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, &err);
    int e = errno;
    /* The slot is free again only if the client closed its socket. */
    int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);
    if (probe >= 0)
        close(probe);
    release_descriptors(&full);
    CHECK_INT(r, <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_RECVMSG, EMFILE, e);
    CHECK_INT(fd, ==, -1);
    CHECK_INT(len, <=, sizeof(resp));
    CHECK(probe >= 0);
    CHECK_FD_COUNT(before);
    return 0;
}

TEST(sync_client_without_room_for_the_descriptor_fails_with_emfile_and_leaks_nothing) {
    const char *p = tmp_path("emfile");
    pid_t pid = start_server(p);
    pid_t child = spawn(sync_client_out_of_descriptors, NULL);
    CHECK_INT(wait_exit(child), ==, 0);
    stop_server(pid);
}

/* --- No leaks, ever ---------------------------------------------------------- */

TEST(sync_client_never_leaks_its_socket_on_any_path) {
    /* The 2009 library leaked its socket on every call: repeat each path so
     * a leak of one per call cannot hide. */
    const char *p = tmp_path("leak");
    pid_t pid = start_server(p);
    const char *silent = tmp_path("leak-silent");
    int l = afdt_listen(silent, NULL);
    CHECK(l >= 0);
    int before = fd_count();
    struct timeval short_tv = {0, 20000};
    for (int i = 0; i < 20; i++) {
        uint8_t resp[16];
        uint32_t len = sizeof(resp);
        int fd = 12345;
        /* Success, then close what we were given. */
        CHECK_INT(afdt_sync_client(p, (const uint8_t *)"hi", 2, resp, &len, &fd, &two_s, NULL), ==,
                  0);
        CHECK(fd >= 0);
        close(fd);
        /* Success with no descriptor. */
        len = sizeof(resp);
        CHECK_INT(afdt_sync_client(p, (const uint8_t *)"nofd", 4, resp, &len, &fd, NULL, NULL), ==,
                  0);
        CHECK_INT(fd, ==, -1);
        /* Response too big. */
        len = 3;
        CHECK_INT(afdt_sync_client(p, (const uint8_t *)"big", 3, resp, &len, &fd, &two_s, NULL), <,
                  0);
        /* Timeout. */
        len = sizeof(resp);
        CHECK_INT(
            afdt_sync_client(silent, (const uint8_t *)"hi", 2, resp, &len, &fd, &short_tv, NULL), <,
            0);
        /* Missing server. */
        CHECK_INT(afdt_sync_client(tmp_path("none"), (const uint8_t *)"hi", 2, resp, &len, &fd,
                                   &two_s, NULL),
                  <, 0);
        /* Request too long. */
        uint8_t req[AFDT_MSGLEN + 1] = {0};
        CHECK_INT(afdt_sync_client(p, req, sizeof(req), resp, &len, &fd, &two_s, NULL), <, 0);
        CHECK_FD_COUNT(before);
    }
    close(l);
    stop_server(pid);
}

/* --- Many at once ------------------------------------------------------------ */

static void *one_client(void *arg) {
    int n = (int)(intptr_t)arg;
    char req[32];
    snprintf(req, sizeof(req), "file %d", n);
    uint8_t resp[32];
    uint32_t len = sizeof(resp);
    int fd = 12345;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {10, 0};
    int r = afdt_sync_client(srv.path, (const uint8_t *)req, (uint32_t)strlen(req), resp, &len, &fd,
                             &tv, &err);
    if (r < 0)
        harness_fail(__FILE__, __LINE__, "client %d: %s errno=%d", n,
                     afdt_operation_str(err.operation), errno);
    CHECK_INT(len, ==, strlen(req));
    CHECK_MEM(resp, req, len);
    CHECK(same_file(fd, srv.files[n]));
    CHECK(is_cloexec(fd));
    char want[32];
    snprintf(want, sizeof(want), "file %d", n);
    check_file_contents(fd, want);
    close(fd);
    return NULL;
}

TEST(sixty_four_concurrent_sync_clients_each_get_their_own_file) {
    const char *p = tmp_path("many");
    srv.path = p;
    srv.file = make_file("server file");
    for (int i = 0; i < NFILES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "file %d", i);
        srv.files[i] = make_file(name);
    }
    CHECK_INT(pipe2(srv.ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(server_main, NULL);
    char c;
    CHECK_INT(read(srv.ready[0], &c, 1), ==, 1);
    int before = fd_count();
    pthread_t t[NFILES];
    for (int i = 0; i < NFILES; i++)
        CHECK_INT(pthread_create(&t[i], NULL, one_client, (void *)(intptr_t)i), ==, 0);
    for (int i = 0; i < NFILES; i++)
        CHECK_INT(pthread_join(t[i], NULL), ==, 0);
    CHECK_FD_COUNT(before);
    stop_server(pid);
}
