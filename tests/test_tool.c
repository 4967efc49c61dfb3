/* SPDX-License-Identifier: BSD-3-Clause */
/* The afdt(1) supervisor, run as a user would: serve, restart, rollback, status, stop, exec,
 * self-upgrade, socket activation, and bad input, with a socket-activated test server. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "tool_fixture.h"

TEST(serve_status_and_stop_with_tcp_unix_and_udp_sockets) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char unix_spec[160], path[128], lock[140], out[8192], buf[256];
    snprintf(path, sizeof(path), "%s", tmp_path("listen"));
    snprintf(lock, sizeof(lock), "%s.lock", path);
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec, "--listen",
             "dgram=udp:127.0.0.1:0");
    struct stat st;
    CHECK_INT(stat(s.ctl, &st), ==, 0);
    CHECK_INT(st.st_mode & 0777, ==, 0600);

    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, " serving ") != NULL);
    CHECK(strstr(out, "web") && strstr(out, "local") && strstr(out, "dgram"));
    CHECK(strstr(out, "restarts     0 (rollbacks 0)") != NULL);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    CHECK(strstr(out, "\"state\":\"running\"") != NULL);
    CHECK(strstr(out, "\"state\":\"serving\"") != NULL);

    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 1);
    CHECK_INT(unix_ask(path, buf, sizeof(buf)), ==, 0);
    CHECK(strncmp(buf, "gen=1 ", 6) == 0 && strstr(buf, "name=local") != NULL);
    CHECK_INT(udp_ask(sv_port(&s, "dgram"), buf, sizeof(buf)), ==, 0);
    CHECK(strstr(buf, "name=dgram") != NULL);

    sv_stop(&s);
    CHECK(wait_log(s.log, "stopped; exit status 0", WAIT_MS));
    CHECK(!exists(path));
    CHECK(!exists(lock));
    check_no_children();
}

TEST(restart_hands_the_sockets_to_a_new_generation) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[2048];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&s, "web");
    CHECK_INT(tcp_gen(port), ==, 1);
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(strstr(out, "restart 1 succeeded: generation 2") != NULL);
    CHECK_INT(tcp_gen(port), ==, 2);
    CHECK(wait_log(s.log, "generation 1 (pid", WAIT_MS));
    CHECK(wait_log(s.log, "exited with status 0", WAIT_MS));
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "restarts     1 (rollbacks 0)") != NULL);
    sv_stop(&s);
    check_no_children();
}

TEST(restart_rolls_back_when_the_new_generation_exits) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&s, "web");
    write_file(s.behaviour, "exit 3\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 1);
    CHECK(strstr(out, "restart 1 failed: generation 2") != NULL);
    CHECK(strstr(out, "exited with status 3 before it was ready") != NULL);
    CHECK(strstr(out, "rolled back: generation 1") != NULL);
    CHECK_INT(tcp_gen(port), ==, 1);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    CHECK(strstr(out, "\"rollbacks\":1") != NULL);
    unlink(s.behaviour); /* fixed: the next restart goes through */
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(strstr(out, "restart 2 succeeded: generation 3") != NULL);
    /* Generation 1 may still accept one connection on its way out. */
    CHECK(wait_log(s.log, "exited with status 0", WAIT_MS));
    CHECK_INT(tcp_gen(port), ==, 3);
    sv_stop(&s);
    check_no_children();
}

TEST(restart_rolls_back_when_the_new_generation_is_never_ready) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "0.5");
    int port = sv_port(&s, "web");
    write_file(s.behaviour, "hang\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 1);
    CHECK(strstr(out, "generation 2") &&
          strstr(out, "was not seen accepting on every socket, nor sent READY=1, within 0.5s"));
    CHECK(strstr(out, "rolled back: generation 1") != NULL);
    /* The one on trial is stopped; the old one still serves. */
    CHECK(wait_log(s.log, "generation 2 (pid", WAIT_MS));
    CHECK(wait_log(s.log, "exited with status 0", WAIT_MS));
    CHECK_INT(tcp_gen(port), ==, 1);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "restarts     0 (rollbacks 1)") != NULL);
    sv_stop(&s);
    check_no_children();
}

TEST(a_second_restart_during_one_is_refused) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[2048], log2[128];
    snprintf(log2, sizeof(log2), "%s", tmp_path("restart-log"));
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    write_file(s.behaviour, "slow 1500\n");
    pid_t first =
        start_tool(log2, -1, (const char *const[]){"afdt", "restart", "--control", s.ctl, NULL});
    CHECK(wait_log(s.log, "starting generation 2", WAIT_MS));
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 3);
    CHECK(strstr(out, "busy: a restart is in progress") != NULL);
    CHECK_INT(reap(first, WAIT_MS), ==, 0);
    CHECK(wait_log(log2, "restart 1 succeeded: generation 2", 1));
    sv_stop(&s);
    check_no_children();
}

TEST(sighup_restarts_and_sigterm_stops) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&s, "web");
    CHECK_INT(kill(s.pid, SIGHUP), ==, 0);
    CHECK(wait_log(s.log, "restart 1 succeeded: generation 2", WAIT_MS));
    CHECK_INT(tcp_gen(port), ==, 2);
    CHECK_INT(kill(s.pid, SIGTERM), ==, 0);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 0);
    CHECK(!exists(s.ctl));
    check_no_children();
}

TEST(a_generation_that_drops_its_privileges_can_still_report_ready) {
    if (getuid() != 0)
        harness_skip("needs root, to start a server that drops to uid 65534");
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[2048];
    write_file(s.behaviour, "as-nobody\n");
    /* Its notify socket is in a directory only the supervisor and a --trust-uid may enter. */
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "5", "--trust-uid", "65534");
    CHECK(wait_log(s.log, "is ready (it sent READY=1", 1));
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(strstr(out, "generation 2") && strstr(out, "(it sent READY=1"));
    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 2);
    sv_stop(&s);
    check_no_children();
}

TEST(serve_exits_with_the_status_of_a_generation_that_exits_on_its_own) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char buf[256];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--restart", "never");
    struct sockaddr_in a = loopback(sv_port(&s, "web"));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    CHECK_INT(send(fd, "quit 7\n", 7, MSG_NOSIGNAL), ==, 7);
    CHECK(recv(fd, buf, sizeof(buf), 0) > 0);
    close(fd);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 7);
    CHECK(wait_log(s.log, "exited with status 7", 1));
    CHECK(!exists(s.ctl));
    check_no_children();
}

TEST(the_drain_timeout_kills_a_generation_that_ignores_sigterm) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[1024];
    write_file(s.behaviour, "ignore-term\n");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--drain-timeout", "0.2");
    CHECK_INT(RUN_TOOL(out, "stop", "--control", s.ctl), ==, 0);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 0);
    CHECK(wait_log(s.log, "did not end within the drain timeout (0.2s): SIGKILL", 1));
    CHECK(wait_log(s.log, "was killed by signal 9", 1));
    check_no_children();
}

TEST(a_second_supervisor_takes_over_under_load) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    sv_init(&b);
    snprintf(b.ctl, sizeof(b.ctl), "%s", a.ctl);
    char path[128], unix_spec[160], out[8192], buf[256];
    snprintf(path, sizeof(path), "%s", tmp_path("listen"));
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec);
    int port = sv_port(&a, "web");

    struct load l;
    load_start(&l, port);
    sleep_ms(300);

    /* The same command line again: it finds the running supervisor and takes over. */
    SV_START(&b, "--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec);
    CHECK_INT(reap(a.pid, WAIT_MS), ==, 0);
    CHECK(wait_log(b.log, "taking over from the supervisor", 1));
    CHECK(wait_log(a.log, "handing over to the supervisor with pid", 1));
    sleep_ms(300);
    unsigned long ok, failed;
    load_stop(&l, &ok, &failed);
    CHECK_INT(failed, ==, 0);
    CHECK_INT(ok, >, 0);

    CHECK_INT(RUN_TOOL(out, "status", "--control", b.ctl), ==, 0);
    char me[64];
    snprintf(me, sizeof(me), "supervisor   pid %d, running", (int)b.pid);
    CHECK(strstr(out, me) != NULL);
    CHECK(strstr(out, "taken over") != NULL);
    CHECK_INT(tcp_gen(port), ==, 2);
    CHECK_INT(unix_ask(path, buf, sizeof(buf)), ==, 0);
    CHECK(strncmp(buf, "gen=2 ", 6) == 0);
    sv_stop(&b);
    CHECK(!exists(path)); /* the successor owns the socket file now */
    check_no_children();
}

TEST(a_takeover_with_a_listen_that_does_not_match_leaves_the_old_supervisor) {
    become_subreaper();
    struct sv a;
    sv_init(&a);
    char out[4096];
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0");
    CHECK_INT(RUN_TOOL(out, "serve", "--control", a.ctl, "--listen", "web=udp:127.0.0.1:0", "--",
                       AFDT_TEST_SERVER),
              ==, 1);
    CHECK(strstr(out, "does not match the running supervisor's socket 'web'") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", a.ctl, "--listen", "other=tcp:127.0.0.1:0", "--",
                       AFDT_TEST_SERVER),
              ==, 1);
    CHECK(strstr(out, "has no socket named 'other'") != NULL);
    CHECK_INT(tcp_gen(sv_port(&a, "web")), ==, 1);
    sv_stop(&a);
    check_no_children();
}

TEST(a_takeover_whose_generation_fails_leaves_the_old_supervisor) {
    become_subreaper();
    struct sv a;
    sv_init(&a);
    char out[4096], ident[64], path[128], unix_spec[160], buf[256];
    snprintf(path, sizeof(path), "%s", tmp_path("listen"));
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec);
    write_file(a.behaviour, "exit 4\n");
    CHECK_INT(RUN_TOOL(out, "serve", "--control", a.ctl, "--listen", "web=tcp:127.0.0.1:0",
                       "--listen", unix_spec, "--", AFDT_TEST_SERVER, "--behaviour-file",
                       a.behaviour),
              ==, 1);
    CHECK(strstr(out, "upgrade abandoned") != NULL);
    /* The old supervisor's socket file is still its own, and still answers. */
    CHECK_INT(unix_ask(path, buf, sizeof(buf)), ==, 0);
    CHECK(strncmp(buf, "gen=1 ", 6) == 0);
    CHECK_INT(RUN_TOOL(out, "status", "--control", a.ctl), ==, 0);
    snprintf(ident, sizeof(ident), "supervisor   pid %d, running", (int)a.pid);
    CHECK(strstr(out, ident) != NULL);
    CHECK_INT(tcp_gen(sv_port(&a, "web")), ==, 1);
    sv_stop(&a);
    check_no_children();
}

TEST(exec_from_passes_named_sockets_by_the_activation_convention) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char path[128], unix_spec[160], out[2048], want[256];
    snprintf(path, sizeof(path), "%s", tmp_path("listen"));
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec);
    int port = sv_port(&s, "web");

    CHECK_INT(RUN_TOOL(out, "exec", "--from", s.ctl, "--name", "local", "--", AFDT_TEST_SERVER,
                       "--describe"),
              ==, 0);
    snprintf(want, sizeof(want),
             "LISTEN_FDS=1 LISTEN_FDNAMES=local pid_ok=1 fd3=%s listening=1 "
             "cloexec=0\n",
             path);
    CHECK_STR(out, want);
    CHECK_INT(RUN_TOOL(out, "exec", "--from", s.ctl, "--", AFDT_TEST_SERVER, "--describe"), ==, 0);
    snprintf(want, sizeof(want),
             "LISTEN_FDS=2 LISTEN_FDNAMES=web:local pid_ok=1 fd3=127.0.0.1:%d listening=1 "
             "cloexec=0 fd4=%s listening=1 cloexec=0\n",
             port, path);
    CHECK_STR(out, want);

    CHECK_INT(RUN_TOOL(out, "exec", "--from", s.ctl, "--name", "nope", "--", AFDT_TEST_SERVER), ==,
              1);
    CHECK(strstr(out, "has no socket named 'nope' (it has: web, local)") != NULL);
    CHECK_INT(RUN_TOOL(out, "exec", "--from", s.ctl, "--", "/nonexistent/program"), ==, 127);
    CHECK(strstr(out, "cannot run /nonexistent/program") != NULL);
    CHECK_INT(RUN_TOOL(out, "exec", "--from", tmp_path("nobody"), "--", AFDT_TEST_SERVER), ==, 1);
    CHECK(strstr(out, "nothing answers at") != NULL);
    sv_stop(&s);
    check_no_children();
}

TEST(a_c_server_takes_a_supervisors_sockets_with_afdt_get_listeners) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&s, "web");
    const char *names[] = {"web"}, *specs[] = {"tcp:127.0.0.1:0"};
    struct afdt_named_fd *set = NULL;
    uint32_t sources = 0;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_get_listeners(names, specs, 1, s.ctl, &tv, &set, &sources, &err), ==, 1);
    CHECK_INT(sources, ==, AFDT_FROM_PREDECESSOR);
    struct sockaddr_in in;
    socklen_t len = sizeof(in);
    CHECK_INT(getsockname(set[0].fd, (struct sockaddr *)&in, &len), ==, 0);
    CHECK_INT(ntohs(in.sin_port), ==, port);
    afdt_named_fds_free(set, 1, 1);
    sv_stop(&s);
    check_no_children();
}

/* Run "afdt serve" as systemd would: the socket at descriptor 3, LISTEN_* and NOTIFY_SOCKET. */
struct activation {
    int fd;
    const char *names, *notify, *log;
    const char *const *argv;
};

static int run_activated(void *arg) {
    struct activation *a = arg;
    char pid[16];
    int log = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0 ||
        dup2(a->fd, 3) < 0)
        return 127;
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDNAMES", a->names, 1);
    setenv("NOTIFY_SOCKET", a->notify, 1);
    execv(AFDT_TOOL, (char *const *)a->argv);
    return 127;
}

static void serve_activated(const char *fdname) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char notify_path[128], spec[64], msg[256];
    snprintf(notify_path, sizeof(notify_path), "%s", tmp_path("notify"));
    int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%.100s", notify_path);
    CHECK_INT(bind(nfd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    struct timeval tv = {WAIT_MS / 1000, 0};
    setsockopt(nfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int lfd = afdt_open_spec("tcp:127.0.0.1:0", &err);
    CHECK(lfd >= 0);
    struct sockaddr_in in;
    socklen_t len = sizeof(in);
    CHECK_INT(getsockname(lfd, (struct sockaddr *)&in, &len), ==, 0);
    int port = ntohs(in.sin_port);
    snprintf(spec, sizeof(spec), "web=tcp:127.0.0.1:%d", port);
    const char *argv[] = {AFDT_TOOL, "serve", "--control",      s.ctl, "--listen",
                          spec,      "--",    AFDT_TEST_SERVER, NULL};
    struct activation a = {lfd, fdname, notify_path, s.log, argv};
    s.pid = spawn(run_activated, &a);
    close(lfd);

    /* Readiness goes on to our NOTIFY_SOCKET, once the first generation is ready. */
    ssize_t n = recv(nfd, msg, sizeof(msg) - 1, 0);
    CHECK(n > 0);
    msg[n] = '\0';
    CHECK(strncmp(msg, "READY=1\n", 8) == 0); /* the rest: tests/test_tool_notify.c */
    CHECK(wait_log(s.log, "(socket activation)", 1));
    CHECK_INT(tcp_gen(port), ==, 1);
    sv_stop(&s);
    close(nfd);
    check_no_children();
}

TEST(serve_takes_its_socket_from_socket_activation) {
    serve_activated("web");
}

TEST(serve_matches_an_activated_socket_by_its_address_when_the_name_differs) {
    serve_activated("web.socket");
}

TEST(bad_command_lines_are_refused_with_status_2) {
    become_subreaper();
    char out[2048];
    const char *ctl = tmp_path("ctl");
    CHECK_INT(RUN_TOOL(out, "frobnicate"), ==, 2);
    CHECK(strstr(out, "unknown command 'frobnicate'") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--bogus", "--listen", "web=tcp:127.0.0.1:0",
                       "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "unknown option '--bogus'") != NULL);
    CHECK_INT(RUN_TOOL(out, "status", "--control", ctl, "--verbose"), ==, 2);
    CHECK(strstr(out, "unknown option '--verbose'") != NULL);
    CHECK_INT(RUN_TOOL(out, "restart", "--json", "--control", ctl), ==, 2);
    static const char *const malformed[] = {"web",
                                            "web=tcp:127.0.0.1",
                                            "web=tcp:127.0.0.1:99999",
                                            "web=ftp:host:21",
                                            "=tcp:127.0.0.1:0",
                                            "a:b=tcp:127.0.0.1:0",
                                            "web=unix:"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", malformed[i], "--",
                           AFDT_TEST_SERVER),
                  ==, 2);
        if (strstr(out, "malformed --listen") == NULL)
            harness_fail(__FILE__, __LINE__, "'%s' was not called malformed: %s", malformed[i],
                         out);
    }
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0",
                       "--listen", "web=tcp:127.0.0.1:0", "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "two --listen options are named 'web'") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--", AFDT_TEST_SERVER), ==, 2);
    CHECK(strstr(out, "--listen NAME=SPEC is required") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0"), ==, 2);
    CHECK(strstr(out, "no COMMAND") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0",
                       "--ready-timeout", "soon", "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "--ready-timeout wants a number of seconds") != NULL);
    CHECK_INT(RUN_TOOL(out, "restart"), ==, 2);
    CHECK(strstr(out, "--control PATH is required") != NULL);
    CHECK(!exists(ctl));
    check_no_children();
}

TEST(a_port_in_use_fails_and_leaves_nothing_behind) {
    become_subreaper();
    char out[2048], unix_spec[160], tcp_spec[64], lock[160];
    const char *ctl = tmp_path("ctl"), *path = tmp_path("listen");
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int busy = afdt_open_spec("tcp:127.0.0.1:0", &err);
    CHECK(busy >= 0);
    struct sockaddr_in in;
    socklen_t len = sizeof(in);
    CHECK_INT(getsockname(busy, (struct sockaddr *)&in, &len), ==, 0);
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    snprintf(tcp_spec, sizeof(tcp_spec), "web=tcp:127.0.0.1:%d", ntohs(in.sin_port));
    snprintf(lock, sizeof(lock), "%s.lock", path);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", unix_spec, "--listen", tcp_spec,
                       "--", AFDT_TEST_SERVER),
              ==, 1);
    CHECK(strstr(out, "cannot listen on web=tcp:127.0.0.1:") != NULL);
    CHECK(strstr(out, "Address already in use") != NULL);
    close(busy);
    CHECK(!exists(ctl));
    CHECK(!exists(path));
    CHECK(!exists(lock));
    check_no_children();
}

/* A libafdt server that is not a supervisor: it answers one request with "nope". */
static int not_a_supervisor(void *arg) {
    int lfd = *(int *)arg;
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf);
    if (c < 0 || afdt_recv_plain_msg(c, buf, &len, NULL) < 0 ||
        afdt_send_plain_msg(c, (const uint8_t *)"nope", 4, NULL) < 0)
        return 1;
    close(c);
    return 0;
}

TEST(a_control_path_that_is_not_ours_is_left_alone) {
    become_subreaper();
    char out[2048], unix_spec[160], content[64];
    const char *ctl = tmp_path("ctl"), *path = tmp_path("listen");
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    write_file(ctl, "precious data\n");
    CHECK_INT(
        RUN_TOOL(out, "serve", "--control", ctl, "--listen", unix_spec, "--", AFDT_TEST_SERVER), ==,
        1);
    CHECK(strstr(out, "exists and is not a socket") != NULL);
    read_file(ctl, content, sizeof(content));
    CHECK_STR(content, "precious data\n");
    CHECK(!exists(path));

    const char *other = tmp_path("other");
    int lfd = afdt_listen(other, NULL);
    CHECK(lfd >= 0);
    pid_t server = spawn(not_a_supervisor, &lfd);
    CHECK_INT(
        RUN_TOOL(out, "serve", "--control", other, "--listen", unix_spec, "--", AFDT_TEST_SERVER),
        ==, 1);
    CHECK(strstr(out, "is served by something that is not an afdt supervisor") != NULL);
    CHECK_INT(reap(server, WAIT_MS), ==, 0);
    CHECK(exists(other));
    CHECK(!exists(path));
    close(lfd);
    unlink(other);
    check_no_children();
}

TEST(a_command_that_does_not_exist_fails_and_leaves_nothing_behind) {
    become_subreaper();
    char out[2048], unix_spec[160];
    const char *ctl = tmp_path("ctl"), *path = tmp_path("listen");
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", unix_spec, "--",
                       "/nonexistent/server"),
              ==, 1);
    CHECK(strstr(out, "cannot run /nonexistent/server: No such file or directory") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", unix_spec, "--",
                       "no-such-command-afdt-test"),
              ==, 1);
    CHECK(strstr(out, "cannot run no-such-command-afdt-test: command not found") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", unix_spec, "--", "/"), ==, 1);
    CHECK(strstr(out, "cannot run /: Is a directory") != NULL);
    CHECK(!exists(ctl));
    CHECK(!exists(path));
    check_no_children();
}

TEST(client_commands_without_a_supervisor_fail) {
    become_subreaper();
    char out[2048];
    const char *ctl = tmp_path("ctl");
    static const char *const cmds[] = {"restart", "status", "stop"};
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(RUN_TOOL(out, cmds[i], "--control", ctl), ==, 4);
        CHECK(strstr(out, "nothing answers at") != NULL);
    }
    check_no_children();
}

TEST(a_stale_control_socket_left_by_a_killed_supervisor_is_replaced) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char lock[160];
    snprintf(lock, sizeof(lock), "%s.lock", s.ctl);
    int stale = afdt_listen(s.ctl, NULL);
    CHECK(stale >= 0);
    close(stale); /* the file stays, and nobody listens on it */
    CHECK(exists(s.ctl));
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 1);
    sv_stop(&s);
    CHECK(!exists(lock));
    check_no_children();
}

/* Whether the "SigIgn:" or "SigBlk:" line of @status is all zeros. */
static bool no_signals_in(const char *status, const char *field) {
    const char *p = strstr(status, field);
    if (p == NULL)
        return false;
    p += strlen(field);
    while (*p == ' ' || *p == '\t')
        p++;
    return strspn(p, "0") == 16;
}

TEST(a_generation_starts_with_default_signal_dispositions_and_an_empty_mask) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char log[8192];
    /* What an operator's shell may leave behind: an ignored and a blocked signal. */
    signal(SIGUSR1, SIG_IGN);
    sigset_t usr2, old;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, &old);
    /* The generation is grep itself, printing its dispositions and mask as exec left them into
     * the supervisor's log, then exiting 0 (so the supervisor stops with 0). */
    s.pid = start_tool(s.log, -1,
                       (const char *const[]){"afdt", "serve", "--control", s.ctl, "--listen",
                                             "web=tcp:127.0.0.1:0", "--", "grep", "^Sig",
                                             "/proc/self/status", NULL});
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 0);
    read_file(s.log, log, sizeof(log));
    if (!no_signals_in(log, "SigIgn:") || !no_signals_in(log, "SigBlk:"))
        fprintf(stderr, "the generation's log:\n%s\n", log);
    CHECK(no_signals_in(log, "SigIgn:"));
    CHECK(no_signals_in(log, "SigBlk:"));
    check_no_children();
}

TEST(a_generation_repeating_stopping_and_errno_grows_the_log_by_a_line_per_interval) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    write_file(s.behaviour, "chatty\n");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    CHECK(wait_log(s.log, "is stopping", WAIT_MS));
    sleep_ms(500); /* the rest of its 500 datagrams */
    CHECK_INT(count_in_log(s.log, "is stopping"), ==, 1);
    CHECK_INT(count_in_log(s.log, "reports an error"), <=, 1);
    sv_stop(&s);
    check_no_children();
}
