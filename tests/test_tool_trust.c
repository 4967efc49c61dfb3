/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1) against the people it protects from: another user squatting its control or
 * predecessor path, flooding its control channel or notify socket, holding its lock file; and
 * against bad input and tight limits.  Multi-user tests run the other user for real (root
 * only; they skip otherwise). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"
#include "tool_fixture.h"

/* ---- a squatter: something of another user answering where a supervisor should be ---- */

struct squatter {
    char where[128]; /* a socket path, or @name */
    int record[2];   /* every request it gets, one per line, after "listening" */
    bool stale;      /* bind and never listen: a socket file nobody answers at */
    pid_t pid;
};

/* Answers as a running supervisor would, and hands out a socket named "web" to whoever asks:
 * what an attacker would do to be taken for the predecessor. */
static int squat(void *arg) {
    struct squatter *q = arg;
    close(q->record[0]);
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    int lfd = -1;
    if (q->stale) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%.100s", q->where);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
            return 1;
    } else {
        lfd = afdt_listen(q->where, &e);
    }
    int web = afdt_open_spec("tcp:127.0.0.1:0", &e);
    if (lfd < 0 || web < 0 || write(q->record[1], "listening\n", 10) != 10)
        return 1;
    struct afdt_named_fd set[1] = {{web, "web"}};
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (q->stale)
                pause();
            continue;
        }
        uint8_t req[AFDT_MSGLEN + 1];
        uint32_t len = AFDT_MSGLEN;
        if (afdt_recv_plain_msg(c, req, &len, NULL) == 0) {
            req[len] = '\n';
            (void)!write(q->record[1], req, len + 1);
            static const char hello[] = "afdt-supervisor 1 pid=1 gen=1 notify=0 restarts=0 "
                                        "rollbacks=0 restart=0 state=running";
            if (len == 5 && memcmp(req, "hello", 5) == 0)
                afdt_send_plain_msg(c, (const uint8_t *)hello, sizeof(hello) - 1, NULL);
            else if (len == 9 && memcmp(req, "listeners", 9) == 0)
                afdt_send_named_fds(c, (const uint8_t *)"afdt-supervisor 1", 17, set, 1, NULL);
            else
                afdt_send_plain_msg(c, (const uint8_t *)"ok", 2, NULL);
        }
        close(c);
    }
}

/* Start a squatter as @u at @where, and wait until it answers there. */
static void squatter_start(struct squatter *q, const struct test_user *u, const char *where,
                           bool stale) {
    memset(q, 0, sizeof(*q));
    snprintf(q->where, sizeof(q->where), "%s", where);
    q->stale = stale;
    CHECK_INT(pipe2(q->record, O_CLOEXEC), ==, 0);
    q->pid = spawn_as_user(u, 0, squat, q);
    close(q->record[1]);
    char buf[16] = "";
    CHECK_INT(read(q->record[0], buf, 10), ==, 10);
    CHECK(memcmp(buf, "listening\n", 10) == 0);
}

/* Stop the squatter; what it was asked, one request per line, goes to @asked. */
static void squatter_stop(struct squatter *q, char *asked, size_t size) {
    kill(q->pid, SIGKILL);
    reap(q->pid, WAIT_MS);
    ssize_t n = read(q->record[0], asked, size - 1);
    asked[n > 0 ? n : 0] = '\0';
    close(q->record[0]);
}

/* A name in the abstract namespace no other test uses. */
static void abstract_name(char *buf, size_t size, const char *tag) {
    snprintf(buf, size, "@afdt-test-%d-%s", (int)getpid(), tag);
}

/* The uid as the tool must name it. */
static void uid_words(char *buf, size_t size, uid_t uid) {
    snprintf(buf, size, "uid %u", (unsigned)uid);
}

static void serve_refuses_squatter(bool abstract) {
    become_subreaper();
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct squatter q;
    char where[128], out[4096], asked[1024], uid[32], unix_spec[160];
    const char *path = tmp_path("listen");
    if (abstract)
        abstract_name(where, sizeof(where), "ctl");
    else
        snprintf(where, sizeof(where), "%s", user_tmp_path(&u, "ctl"));
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    squatter_start(&q, &u, where, false);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", where, "--listen", unix_spec, "--listen",
                       "web=tcp:127.0.0.1:0", "--", AFDT_TEST_SERVER),
              ==, 1);
    uid_words(uid, sizeof(uid), u.uid);
    if (strstr(out, uid) == NULL)
        harness_fail(__FILE__, __LINE__, "the refusal does not name %s: %s", uid, out);
    CHECK(strstr(out, "generation") == NULL);
    CHECK(!exists(path)); /* nothing bound */
    squatter_stop(&q, asked, sizeof(asked));
    CHECK_STR(asked, ""); /* not even "hello" */
    check_no_children();
}

TEST(serve_refuses_a_squatter_of_another_uid_at_the_control_path) {
    serve_refuses_squatter(false);
}

TEST(serve_refuses_a_squatter_of_another_uid_at_an_abstract_control_name) {
    serve_refuses_squatter(true);
}

TEST(serve_leaves_a_stale_control_socket_of_another_uid_alone) {
    become_subreaper();
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct squatter q;
    char where[128], out[4096], asked[64], uid[32];
    snprintf(where, sizeof(where), "%s", user_tmp_path(&u, "ctl"));
    squatter_start(&q, &u, where, true);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", where, "--listen", "web=tcp:127.0.0.1:0", "--",
                       AFDT_TEST_SERVER),
              ==, 1);
    uid_words(uid, sizeof(uid), u.uid);
    if (strstr(out, uid) == NULL)
        harness_fail(__FILE__, __LINE__, "the refusal does not name %s: %s", uid, out);
    struct stat st;
    CHECK_INT(lstat(where, &st), ==, 0); /* still there, still the squatter's */
    CHECK_INT(st.st_uid, ==, u.uid);
    squatter_stop(&q, asked, sizeof(asked));
    check_no_children();
}

TEST(exec_from_refuses_a_squatter_of_another_uid_unless_trusted) {
    become_subreaper();
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct squatter q;
    char where[128], out[4096], asked[1024], uid[32], num[16];
    snprintf(where, sizeof(where), "%s", user_tmp_path(&u, "ctl"));
    squatter_start(&q, &u, where, false);
    CHECK_INT(RUN_TOOL(out, "exec", "--from", where, "--", AFDT_TEST_SERVER, "--describe"), ==, 1);
    uid_words(uid, sizeof(uid), u.uid);
    if (strstr(out, uid) == NULL)
        harness_fail(__FILE__, __LINE__, "the refusal does not name %s: %s", uid, out);
    CHECK(strstr(out, "LISTEN_FDS") == NULL);
    CHECK(strstr(out, "the exchange with") == NULL); /* one message, the refusal */
    /* The operator may name whom to trust. */
    snprintf(num, sizeof(num), "%u", (unsigned)u.uid);
    CHECK_INT(RUN_TOOL(out, "exec", "--from", where, "--trust-uid", num, "--", AFDT_TEST_SERVER,
                       "--describe"),
              ==, 0);
    CHECK(strstr(out, "LISTEN_FDS=1 LISTEN_FDNAMES=web") != NULL);
    squatter_stop(&q, asked, sizeof(asked));
    CHECK_STR(asked, "listeners\n"); /* only the trusted exec asked anything */
    check_no_children();
}

/* ---- abstract control names ---- */

TEST(an_abstract_control_name_serves_every_verb_and_self_upgrade) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    abstract_name(a.ctl, sizeof(a.ctl), "upgrade");
    sv_init(&b);
    memcpy(b.ctl, a.ctl, sizeof(b.ctl));
    char out[8192];
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&a, "web");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", a.ctl), ==, 0);
    CHECK(strstr(out, "restart 1 succeeded: generation 2") != NULL);
    SV_START(&b, "--listen", "web=tcp:127.0.0.1:0");
    CHECK_INT(reap(a.pid, WAIT_MS), ==, 0);
    CHECK(wait_log(b.log, "taking over from the supervisor", 1));
    CHECK_INT(tcp_gen(port), ==, 3);
    CHECK_INT(RUN_TOOL(out, "status", "--control", b.ctl), ==, 0);
    char me[64];
    snprintf(me, sizeof(me), "supervisor   pid %d, running", (int)b.pid);
    CHECK(strstr(out, me) != NULL);
    sv_stop(&b);
    check_no_children();
}

/* ---- floods and stalls ---- */

/* How long "afdt status" takes, in ms. */
static int64_t status_ms(const char *ctl) {
    char out[8192];
    int64_t t0 = now_ms();
    CHECK_INT(RUN_TOOL(out, "status", "--control", ctl), ==, 0);
    return now_ms() - t0;
}

static int count_lines(const char *path) {
    static char buf[1 << 20];
    read_file(path, buf, sizeof(buf));
    int n = 0;
    for (const char *p = buf; (p = strchr(p, '\n')) != NULL; p++)
        n++;
    return n;
}

/* Like wait_log, for a log too long for it: the whole file is read. */
static bool wait_log_end(const char *log, const char *text, int ms) {
    static char buf[1 << 20];
    int64_t end = now_ms() + ms;
    do {
        read_file(log, buf, sizeof(buf));
        if (strstr(buf, text))
            return true;
        sleep_ms(50);
    } while (now_ms() < end);
    size_t len = strlen(buf);
    fprintf(stderr, "log %s lacks \"%s\"; it ends:\n%s\n", log, text,
            buf + (len > 2000 ? len - 2000 : 0));
    return false;
}

struct flood {
    char where[128];
    int ms;
};

/* As fast as it can for @ms: a request the supervisor must refuse (another user's), then a
 * connection that hangs up inside its frame. */
static int flood_connections(void *arg) {
    struct flood *f = arg;
    int64_t end = now_ms() + f->ms;
    while (now_ms() < end) {
        uint8_t resp[AFDT_MSGLEN];
        uint32_t len = sizeof(resp);
        struct timeval tv = {1, 0};
        int fd = -1;
        if (afdt_sync_client(f->where, (const uint8_t *)"stop", 4, resp, &len, &fd, &tv, NULL) ==
                0 &&
            fd >= 0)
            close(fd);
        int c = afdt_connect(f->where, NULL);
        if (c >= 0) {
            (void)!write(c, "x", 1);
            close(c);
        }
    }
    return 0;
}

TEST(another_user_flooding_an_abstract_control_name_neither_delays_nor_floods_the_log) {
    become_subreaper();
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct sv s;
    sv_init(&s);
    abstract_name(s.ctl, sizeof(s.ctl), "flood");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int64_t quiet = status_ms(s.ctl);
    int before = count_lines(s.log);
    struct flood f;
    snprintf(f.where, sizeof(f.where), "%s", s.ctl);
    f.ms = 3000;
    pid_t flooders[2] = {spawn_as_user(&u, 0, flood_connections, &f),
                         spawn_as_user(&u, 0, flood_connections, &f)};
    sleep_ms(500);
    int64_t worst = 0;
    for (int i = 0; i < 5; i++) {
        int64_t t = status_ms(s.ctl);
        worst = t > worst ? t : worst;
    }
    for (int i = 0; i < 2; i++)
        CHECK_INT(reap(flooders[i], WAIT_MS), ==, 0);
    fprintf(stderr, "afdt status: %lld ms quiet, at worst %lld ms under the flood\n",
            (long long)quiet, (long long)worst);
    /* Generous: a loaded machine, a sanitizer build.  Before, the log grew by one line per
     * connection. */
    CHECK_INT(worst, <, 2000);
    int grown = count_lines(s.log) - before;
    if (grown > 6)
        harness_fail(__FILE__, __LINE__, "the log grew by %d lines in 3 s of flood", grown);
    CHECK(wait_log(s.log, "refused", WAIT_MS)); /* said, once, with a count */
    sv_stop(&s);
    check_no_children();
}

/* The pid of generation @gen, from "afdt status --json". */
static pid_t gen_pid(const char *ctl, int gen) {
    static char out[1 << 20];
    char key[32];
    CHECK_INT(RUN_TOOL(out, "status", "--control", ctl, "--json"), ==, 0);
    snprintf(key, sizeof(key), "{\"id\":%d,\"pid\":", gen);
    const char *p = strstr(out, key);
    CHECK(p != NULL);
    return (pid_t)atoi(p + strlen(key));
}

/* One datagram to @path (with @fd attached when >= 0); returns 0 or an errno. */
static int send_notify(const char *path, const char *msg, int fd) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%.100s", path);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {(void *)msg, strlen(msg)};
    struct msghdr m = {
        .msg_name = &sun, .msg_namelen = sizeof(sun), .msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        m.msg_control = &ctl;
        m.msg_controllen = sizeof(ctl);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    int r = sendmsg(s, &m, MSG_DONTWAIT) < 0 ? errno : 0;
    close(s);
    return r;
}

struct notify_flood {
    char path[128];
    int sent, refused;
    int result[2];
};

static int flood_notify(void *arg) {
    struct notify_flood *f = arg;
    close(f->result[0]);
    int sent = 0, refused = 0;
    for (int i = 0; i < 2000; i++) {
        if (send_notify(f->path, "STATUS=flood", -1) == 0)
            sent++;
        else
            refused++;
    }
    int r[2] = {sent, refused};
    return write(f->result[1], r, sizeof(r)) == sizeof(r) ? 0 : 1;
}

TEST(another_user_can_neither_reach_nor_flood_the_notify_socket) {
    become_subreaper();
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    struct notify_flood f;
    notify_socket_of(gen_pid(s.ctl, 1), f.path, sizeof(f.path));
    /* The directory it lives in is the supervisor's alone. */
    char dir[128];
    snprintf(dir, sizeof(dir), "%s", f.path);
    *strrchr(dir, '/') = '\0';
    struct stat st;
    CHECK_INT(stat(dir, &st), ==, 0);
    CHECK_INT(st.st_mode & 0777, ==, 0700);
    CHECK_INT(st.st_uid, ==, getuid());
    int before = count_lines(s.log);
    CHECK_INT(pipe2(f.result, O_CLOEXEC), ==, 0);
    pid_t pid = spawn_as_user(&u, 0, flood_notify, &f);
    close(f.result[1]);
    CHECK_INT(reap(pid, WAIT_MS), ==, 0);
    int r[2] = {-1, -1};
    CHECK_INT(read(f.result[0], r, sizeof(r)), ==, sizeof(r));
    close(f.result[0]);
    CHECK_INT(r[0], ==, 0); /* not one datagram got there */
    CHECK_INT(count_lines(s.log) - before, <=, 1);
    char out[8192];
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "flood") == NULL);
    sv_stop(&s);
    check_no_children();
}

/* Wait until "afdt status" shows @word; returns how long from @t0. */
static int64_t status_shows(const struct sv *s, const char *word, int64_t t0) {
    char out[8192];
    do {
        CHECK_INT(RUN_TOOL(out, "status", "--control", s->ctl), ==, 0);
    } while (strstr(out, word) == NULL && now_ms() - t0 < WAIT_MS);
    CHECK(strstr(out, word) != NULL);
    return now_ms() - t0;
}

TEST(a_lingering_socket_sent_to_the_notify_socket_does_not_stall_the_supervisor) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    char path[128];
    notify_socket_of(gen_pid(s.ctl, 1), path, sizeof(path));
    /* Closed without changing it: its options are the sender's too. */
    int peer, listener, sock = lingering_socket(&peer, &listener);
    CHECK_INT(send_notify(path, "STATUS=kept", sock), ==, 0);
    status_shows(&s, "kept", now_ms());
    struct linger l = {0, 0};
    socklen_t len = sizeof(l);
    CHECK_INT(getsockopt(sock, SOL_SOCKET, SO_LINGER, &l, &len), ==, 0);
    CHECK_INT(l.l_onoff, ==, 1);
    CHECK_INT(l.l_linger, ==, 5);
    l.l_onoff = 0; /* ours to change, so that our close does not wait */
    CHECK_INT(setsockopt(sock, SOL_SOCKET, SO_LINGER, &l, sizeof(l)), ==, 0);
    close(sock);
    close(peer);
    close(listener);

    /* The one in the supervisor's queue is the last reference: the supervisor is stopped while
     * it is sent and our copy closed.  Before, its close froze the loop for 5 s. */
    sock = lingering_socket(&peer, &listener);
    CHECK_INT(kill(s.pid, SIGSTOP), ==, 0);
    CHECK_INT(send_notify(path, "STATUS=lingering", sock), ==, 0);
    close(sock);
    int64_t t0 = now_ms();
    CHECK_INT(kill(s.pid, SIGCONT), ==, 0);
    int64_t t = status_shows(&s, "lingering", t0);
    fprintf(stderr, "the supervisor read the lingering socket and answered in %lld ms\n",
            (long long)t);
    CHECK_INT(t, <, 2500); /* the linger is 5 s */
    close(peer);
    close(listener);
    sv_stop(&s);
    check_no_children();
}

TEST(retire_is_refused_from_anyone_but_the_successor) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    uint8_t resp[AFDT_MSGLEN + 1];
    uint32_t len = AFDT_MSGLEN;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int fd = -1;
    if (afdt_sync_client(s.ctl, (const uint8_t *)"retire", 6, resp, &len, &fd, &tv, &err) < 0)
        harness_fail(__FILE__, __LINE__, "retire: %s %s: %s", afdt_operation_str(err.operation),
                     strerror(errno), err.message);
    CHECK_INT(fd, ==, -1);
    resp[len] = '\0';
    CHECK(strncmp((char *)resp, "error ", 6) == 0);
    sleep_ms(200);
    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 1);
    char out[8192];
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, ", running,") != NULL);
    sv_stop(&s);
    check_no_children();
}

/* Holds an exclusive flock on @where for as long as it lives, as another user would. */
static int hold_lock(void *arg) {
    const char *where = arg;
    int fd = open(where, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) < 0)
        return 1;
    pause();
    return 0;
}

TEST(a_lock_file_held_by_another_user_fails_serve_in_time_and_is_left_alone) {
    become_subreaper();
    struct test_user u;
    test_user("afdt-test-a", &u);
    char ctl[128], lock[160], out[4096], unix_spec[160], uid[32];
    snprintf(ctl, sizeof(ctl), "%s", user_tmp_path(&u, "ctl"));
    snprintf(lock, sizeof(lock), "%s.lock", ctl);
    const char *path = tmp_path("listen");
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    /* Our own stale control socket, so that serve has to take the lock to replace it. */
    int stale = afdt_listen(ctl, NULL);
    CHECK(stale >= 0);
    close(stale);
    pid_t holder = spawn_as_user(&u, 0, hold_lock, lock);
    for (int i = 0; i < 500 && !exists(lock); i++)
        sleep_ms(10);
    sleep_ms(100);
    int64_t t0 = now_ms();
    int rc =
        RUN_TOOL(out, "serve", "--control", ctl, "--listen", unix_spec, "--", AFDT_TEST_SERVER);
    int64_t took = now_ms() - t0;
    kill(holder, SIGKILL);
    reap(holder, WAIT_MS);
    CHECK_INT(rc, ==, 1); /* -1 when it hung */
    CHECK(took < 10000);
    uid_words(uid, sizeof(uid), u.uid);
    CHECK(strstr(out, ".lock") != NULL);
    if (strstr(out, uid) == NULL)
        harness_fail(__FILE__, __LINE__, "the refusal does not name %s: %s", uid, out);
    CHECK(!exists(path)); /* it failed before binding anything */
    struct stat st;
    CHECK_INT(lstat(lock, &st), ==, 0); /* another user's file: not ours to remove */
    CHECK_INT(st.st_uid, ==, u.uid);
    unlink(ctl);
    check_no_children();
}

/* ---- limits ---- */

/* Run the tool with @argv under RLIMIT_NOFILE @soft/@hard; output to @log. */
struct limited {
    const char *const *argv;
    const char *log;
    rlim_t soft, hard;
};

static int run_limited(void *arg) {
    struct limited *l = arg;
    struct rlimit rl = {l->soft, l->hard};
    int log = open(l->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0 ||
        setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 126;
    execv(AFDT_TOOL, (char *const *)l->argv);
    return 127;
}

/* The soft descriptor limit of @pid, from /proc. */
static long soft_nofile(pid_t pid) {
    char path[64], buf[8192];
    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    read_file(path, buf, sizeof(buf));
    const char *p = strstr(buf, "Max open files");
    CHECK(p != NULL);
    return strtol(p + strlen("Max open files"), NULL, 10);
}

TEST(a_thousand_listeners_start_when_capped_by_descriptor_limit_1024) {
    become_subreaper();
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 2200)
        harness_skip("the hard descriptor limit is below 2200");
    enum { N = 1000 };
    static char specs[N][32];
    static const char *argv[2 * N + 10];
    struct sv s;
    sv_init(&s);
    int n = 0;
    argv[n++] = AFDT_TOOL;
    argv[n++] = "serve";
    argv[n++] = "--control";
    argv[n++] = s.ctl;
    for (int i = 0; i < N; i++) {
        snprintf(specs[i], sizeof(specs[i]), "s%d=tcp:127.0.0.1:0", i);
        argv[n++] = "--listen";
        argv[n++] = specs[i];
    }
    argv[n++] = "--";
    argv[n++] = AFDT_TEST_SERVER;
    argv[n] = NULL;
    struct limited l = {argv, s.log, 1024, rl.rlim_max};
    s.pid = spawn(run_limited, &l);
    CHECK(wait_log_end(s.log, "is ready", WAIT_MS));
    pid_t g = gen_pid(s.ctl, 1);
    CHECK_INT(soft_nofile(g), ==, 1024);
    char fd[64];
    snprintf(fd, sizeof(fd), "/proc/%d/fd/%d", (int)g, 3 + N - 1);
    CHECK(exists(fd));
    sv_stop(&s);
    check_no_children();
}

TEST(running_out_of_descriptors_says_what_to_change) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    const char *argv[] = {AFDT_TOOL,   "serve",
                          "--control", s.ctl,
                          "--listen",  "a=tcp:127.0.0.1:0",
                          "--listen",  "b=tcp:127.0.0.1:0",
                          "--",        AFDT_TEST_SERVER,
                          NULL};
    struct limited l = {argv, s.log, 12, 12};
    s.pid = spawn(run_limited, &l);
    int rc = reap(s.pid, WAIT_MS);
    char log[8192];
    read_file(s.log, log, sizeof(log));
    if (rc == 0 || (rc != 1 && rc != 127) || strstr(log, "ulimit -n") == NULL)
        harness_fail(__FILE__, __LINE__, "exit %d without saying what to change:\n%s", rc, log);
    CHECK(strstr(log, "generation 1 started") == NULL);
    check_no_children();
}

TEST(listen_fdnames_too_long_for_exec_is_refused_with_what_to_change) {
    become_subreaper();
    /* 600 names of 250 characters: 150 kB, over the 128 kB one environment string may have. */
    enum { N = 600 };
    static char specs[N][300];
    static const char *argv[2 * N + 10];
    const char *ctl = tmp_path("ctl"), *log = tmp_path("log");
    int n = 0;
    argv[n++] = AFDT_TOOL;
    argv[n++] = "serve";
    argv[n++] = "--control";
    argv[n++] = ctl;
    for (int i = 0; i < N; i++) {
        snprintf(specs[i], sizeof(specs[i]), "%0250d=unix:@afdt-test-%d-%d", i, (int)getpid(), i);
        argv[n++] = "--listen";
        argv[n++] = specs[i];
    }
    argv[n++] = "--";
    argv[n++] = AFDT_TEST_SERVER;
    argv[n] = NULL;
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    struct limited l = {argv, log, rl.rlim_cur, rl.rlim_max};
    int rc = reap(spawn(run_limited, &l), WAIT_MS);
    static char out[1 << 20];
    read_file(log, out, sizeof(out));
    if (rc == 0 || strstr(out, "LISTEN_FDNAMES") == NULL || strstr(out, "shorter") == NULL)
        harness_fail(__FILE__, __LINE__, "exit %d; the log ends:\n%s", rc,
                     out + (strlen(out) > 2000 ? strlen(out) - 2000 : 0));
    CHECK(strstr(out, "generation 1 started") == NULL);
    check_no_children();
}

/* ---- bad input ---- */

/* Whether @s is valid UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool valid_utf8(const unsigned char *s) {
    while (*s) {
        unsigned c = *s++, n, min;
        uint32_t cp;
        if (c < 0x80)
            continue;
        if ((c & 0xe0) == 0xc0)
            n = 1, min = 0x80, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0)
            n = 2, min = 0x800, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0)
            n = 3, min = 0x10000, cp = c & 0x07;
        else
            return false;
        for (unsigned i = 0; i < n; i++, s++) {
            if ((*s & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*s & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

TEST(status_escapes_control_characters_and_json_is_valid_utf8) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    /* A control path that is not UTF-8. */
    snprintf(s.ctl, sizeof(s.ctl), "%s", tmp_path("ctl-\xff\xfe"));
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    char path[128], out[8192];
    notify_socket_of(gen_pid(s.ctl, 1), path, sizeof(path));
    CHECK_INT(send_notify(path, "STATUS=\x1b[2J\x1b]0;owned\x07red\xc3(", -1), ==, 0);
    for (int i = 0; i < 100; i++) {
        CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
        if (strstr(out, "red"))
            break;
        sleep_ms(20);
    }
    CHECK(strstr(out, "red") != NULL);
    for (const char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\n')
            harness_fail(__FILE__, __LINE__, "a raw control character 0x%02x in:\n%s",
                         (unsigned char)*p, out);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    CHECK(strstr(out, "red") != NULL);
    if (!valid_utf8((const unsigned char *)out))
        harness_fail(__FILE__, __LINE__, "invalid UTF-8 in:\n%s", out);
    sv_stop(&s);
    check_no_children();
}

TEST(extend_timeout_usec_out_of_range_is_explained_and_bounded) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096], path[128], log2[128];
    snprintf(log2, sizeof(log2), "%s", tmp_path("restart-log"));
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "3");
    write_file(s.behaviour, "slow 1500\n");
    pid_t restart =
        start_tool(log2, -1, (const char *const[]){"afdt", "restart", "--control", s.ctl, NULL});
    CHECK(wait_log(s.log, "generation 2 started", WAIT_MS));
    notify_socket_of(gen_pid(s.ctl, 2), path, sizeof(path));
    /* Negative: before, the generation failed at once ("did not send READY=1 within 3s"). */
    CHECK_INT(send_notify(path, "EXTEND_TIMEOUT_USEC=-1000000", -1), ==, 0);
    CHECK(wait_log(s.log, "EXTEND_TIMEOUT_USEC", WAIT_MS));
    CHECK_INT(reap(restart, WAIT_MS), ==, 0);
    read_file(log2, out, sizeof(out));
    CHECK(strstr(out, "restart 1 succeeded: generation 2") != NULL);

    /* Huge: before, the generation stayed "starting" for ever and every restart was busy. */
    write_file(s.behaviour, "hang\n");
    restart =
        start_tool(log2, -1, (const char *const[]){"afdt", "restart", "--control", s.ctl, NULL});
    CHECK(wait_log(s.log, "generation 3 started", WAIT_MS));
    notify_socket_of(gen_pid(s.ctl, 3), path, sizeof(path));
    CHECK_INT(send_notify(path, "EXTEND_TIMEOUT_USEC=99999999999999999999999", -1), ==, 0);
    CHECK_INT(reap(restart, 3 * WAIT_MS), ==, 1);
    CHECK(wait_log(log2, "restart 2 failed: generation 3", 1));
    CHECK(wait_log(s.log, "EXTEND_TIMEOUT_USEC=99999999999999999999999", 1));
    sv_stop(&s);
    check_no_children();
}

TEST(malformed_specs_are_refused) {
    become_subreaper();
    char out[2048];
    const char *ctl = tmp_path("ctl");
    static const char *const malformed[] = {
        "web=tcp:127.0.0.1: 80", "web=tcp:[]:80", "web=tcp: 127.0.0.1:80",  "web=tcp:127.0.0.1:+80",
        "web=tcp:127.0.0.1:80 ", "web=udp:[]:0",  "web=tcp:127.0.0.1:0x50", "web=tcp:127.0.0.1:-0"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        int rc = RUN_TOOL(out, "serve", "--control", ctl, "--listen", malformed[i], "--",
                          AFDT_TEST_SERVER);
        if (rc != 2 || strstr(out, "malformed --listen") == NULL)
            harness_fail(__FILE__, __LINE__, "'%s' was not refused as malformed (exit %d): %s",
                         malformed[i], rc, out);
    }
    CHECK(!exists(ctl));
    check_no_children();
}
