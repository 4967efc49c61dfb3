/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt serve --adopt PID: a server started by hand, never under afdt, is taken over with no
 * gap: its sockets (by address), then its place once the new generation is ready. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "afdt.h"
#include "helpers.h"
#include "tool_fixture.h"

/* The test server started by hand: a socket it alone holds at 3, no supervisor, no
 * NOTIFY_SOCKET; it answers "gen=100". */
static int run_by_hand(void *arg) {
    int fd = *(int *)arg;
    char pid[16];
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || (fd != 3 && dup2(fd, 3) < 0) ||
        fcntl(3, F_SETFD, 0) < 0)
        return 127;
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", pid, 1);
    setenv("AFDT_GENERATION", "100", 1);
    unsetenv("LISTEN_FDNAMES");
    unsetenv("NOTIFY_SOCKET");
    execl(AFDT_TEST_SERVER, AFDT_TEST_SERVER, (char *)NULL);
    return 127;
}

/* The test server started by hand (as @u, or ourselves when NULL), on a port of its own. */
static pid_t start_by_hand_as(const struct test_user *u, int *port) {
    int fd = afdt_open_spec("tcp:127.0.0.1:0", NULL);
    CHECK(fd >= 0);
    struct sockaddr_in in;
    socklen_t len = sizeof(in);
    CHECK_INT(getsockname(fd, (struct sockaddr *)&in, &len), ==, 0);
    *port = ntohs(in.sin_port);
    pid_t pid = u ? spawn_as_user(u, 0, run_by_hand, &fd) : spawn(run_by_hand, &fd);
    close(fd);
    int64_t end = now_ms() + WAIT_MS;
    while (tcp_gen(*port) != 100 && now_ms() < end)
        sleep_ms(20);
    CHECK_INT(tcp_gen(*port), ==, 100);
    return pid;
}

static pid_t start_by_hand(int *port) {
    return start_by_hand_as(NULL, port);
}

TEST(adopt_takes_over_a_server_started_by_hand_under_load) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    int port;
    pid_t hand = start_by_hand(&port);
    char spec[64], pid[16], out[4096], want[96];
    snprintf(spec, sizeof(spec), "web=tcp:127.0.0.1:%d", port);
    snprintf(pid, sizeof(pid), "%d", (int)hand);
    struct load l;
    load_start(&l, port);
    sleep_ms(300);

    SV_START(&s, "--listen", spec, "--adopt", pid);
    /* It drained (answered what it had accepted) and exited 0 on SIGTERM. */
    CHECK_INT(reap(hand, WAIT_MS), ==, 0);
    snprintf(want, sizeof(want), "the adopted process (pid %d) exited", (int)hand);
    CHECK(wait_log(s.log, want, WAIT_MS));
    CHECK_INT(tcp_gen(port), ==, 1);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, " serving ") != NULL);
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(strstr(out, "restart 1 succeeded: generation 2") != NULL);
    /* Generation 1 may still take a connection or two between its SIGTERM and its exit. */
    for (int64_t end = now_ms() + WAIT_MS; tcp_gen(port) != 2 && now_ms() < end;)
        sleep_ms(20);
    CHECK_INT(tcp_gen(port), ==, 2);
    sleep_ms(300);
    unsigned long ok = 0, failed = 1;
    load_stop(&l, &ok, &failed);
    CHECK_INT(failed, ==, 0);
    CHECK_INT(ok, >, 0);
    sv_stop(&s);
    check_no_children();
}

TEST(adopt_sends_the_adopt_signal) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    int port;
    pid_t hand = start_by_hand(&port);
    char spec[64], pid[16];
    snprintf(spec, sizeof(spec), "web=tcp:127.0.0.1:%d", port);
    snprintf(pid, sizeof(pid), "%d", (int)hand);
    SV_START(&s, "--listen", spec, "--adopt", pid, "--adopt-signal", "SIGINT");
    CHECK_INT(reap(hand, WAIT_MS), ==, 128 + SIGINT);
    CHECK_INT(tcp_gen(port), ==, 1);
    sv_stop(&s);
    check_no_children();
}

TEST(adopt_is_refused_when_the_process_lacks_a_socket_and_leaves_it_serving) {
    become_subreaper();
    char ctl[128], out[4096], pid[16], want[96];
    snprintf(ctl, sizeof(ctl), "%s", tmp_path("ctl"));
    int port;
    pid_t hand = start_by_hand(&port);
    snprintf(pid, sizeof(pid), "%d", (int)hand);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.2:0", "--adopt",
                       pid, "--", AFDT_TEST_SERVER),
              ==, 1);
    snprintf(want, sizeof(want), "cannot take the sockets of pid %d", (int)hand);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, "no socket that matches") != NULL);
    CHECK(!exists(ctl));
    CHECK_INT(tcp_gen(port), ==, 100);

    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0", "--adopt",
                       "none", "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "--adopt wants a process id") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0", "--adopt",
                       pid, "--adopt-signal", "SIGBOGUS", "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "--adopt-signal wants a signal") != NULL);
    CHECK_INT(tcp_gen(port), ==, 100);
    CHECK_INT(kill(hand, SIGTERM), ==, 0);
    CHECK_INT(reap(hand, WAIT_MS), ==, 0);
    check_no_children();
}

TEST(adopt_is_refused_for_a_process_of_another_user) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    become_subreaper();
    int port;
    pid_t hand = start_by_hand(&port); /* root's */
    char spec[64], pid[16], out[4096] = "";
    snprintf(spec, sizeof(spec), "web=tcp:127.0.0.1:%d", port);
    snprintf(pid, sizeof(pid), "%d", (int)hand);
    const char *ctl = user_tmp_path(&u, "ctl");
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    fflush(NULL);
    pid_t tool = fork();
    CHECK(tool >= 0);
    if (tool == 0) {
        drop_to_user(&u, 0);
        if (dup2(p[1], 1) < 0 || dup2(p[1], 2) < 0)
            _exit(127);
        unsetenv("XDG_RUNTIME_DIR");
        execl(AFDT_TOOL, AFDT_TOOL, "serve", "--control", ctl, "--listen", spec, "--adopt", pid,
              "--", AFDT_TEST_SERVER, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(out) - 1 && (n = read(p[0], out + got, sizeof(out) - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    close(p[0]);
    CHECK_INT(reap(tool, WAIT_MS), ==, 1);
    if (strstr(out, "cannot take the sockets of pid") == NULL ||
        strstr(out, "PTRACE_MODE_ATTACH") == NULL || strstr(out, strerror(EPERM)) == NULL)
        harness_fail(__FILE__, __LINE__, "not refused as it should be: %s", out);
    CHECK(!exists(ctl));
    CHECK_INT(tcp_gen(port), ==, 100);
    CHECK_INT(kill(hand, SIGTERM), ==, 0);
    CHECK_INT(reap(hand, WAIT_MS), ==, 0);
    check_no_children();
}

TEST(adopt_refuses_a_process_that_runs_as_an_untrusted_user) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    become_subreaper();
    int port;
    pid_t hand = start_by_hand_as(&u, &port); /* another user's: it could keep copies */
    char ctl[128], spec[64], pid[16], out[4096], want[128];
    snprintf(ctl, sizeof(ctl), "%s", tmp_path("ctl"));
    snprintf(spec, sizeof(spec), "web=tcp:127.0.0.1:%d", port);
    snprintf(pid, sizeof(pid), "%d", (int)hand);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", spec, "--adopt", pid, "--",
                       AFDT_TEST_SERVER),
              ==, 1);
    snprintf(want, sizeof(want), "--adopt: pid %d runs as uid %u, which is not trusted", (int)hand,
             (unsigned)u.uid);
    if (strstr(out, want) == NULL)
        harness_fail(__FILE__, __LINE__, "not refused as it should be: %s", out);
    CHECK(!exists(ctl));
    CHECK_INT(tcp_gen(port), ==, 100); /* untouched, still serving */
    CHECK_INT(kill(hand, SIGTERM), ==, 0);
    CHECK_INT(reap(hand, WAIT_MS), ==, 0);
    check_no_children();
}
