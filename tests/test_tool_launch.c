/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1): how a generation is told where its sockets are (--convention) and asked to finish
 * (--stop-signal). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tool_fixture.h"

TEST(the_stop_signal_retires_a_generation_and_afdt_stop_uses_it) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    /* A server that ignores SIGTERM: with it, each would wait out the long drain timeout. */
    write_file(s.behaviour, "ignore-term\n");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--stop-signal", "USR1", "--drain-timeout",
             "600");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(wait_log(s.log, "generation 1 (pid", WAIT_MS));
    CHECK(wait_log(s.log, "was killed by signal 10", WAIT_MS));
    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 2);
    sv_stop(&s);
    CHECK(wait_log(s.log, "generation 2 (pid", 1));
    check_no_children();
}

TEST(stop_signals_by_name_or_number_and_bad_ones_refused) {
    char out[2048];
    static const char *const bad[] = {"NOPE", "0", "65", "-1", "", "SIG"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(RUN_TOOL(out, "serve", "--control", tmp_path("ctl"), "--listen",
                           "web=tcp:127.0.0.1:0", "--stop-signal", bad[i], "--", "true"),
                  ==, 2);
        CHECK(strstr(out, "--stop-signal wants a signal name") != NULL);
    }
    CHECK_INT(RUN_TOOL(out, "serve", "--control", tmp_path("ctl"), "--listen",
                       "web=tcp:127.0.0.1:0", "--convention", "inetd", "--", "true"),
              ==, 2);
    CHECK(strstr(out, "--convention wants systemd, nginx or einhorn") != NULL);
    /* Accepted spellings: the first generation's exit ends serve with its status. */
    static const char *const good[] = {"QUIT", "SIGINT", "usr2", "15"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK_INT(RUN_TOOL(out, "serve", "--control", tmp_path("ctl"), "--listen",
                           "web=tcp:127.0.0.1:0", "--stop-signal", good[i], "--", "sh", "-c",
                           "exit 7"),
                  ==, 7);
}

/* Serve with --convention @conv and two sockets through a shell that writes what it was told
 * to @seen, then starts the test server by the systemd convention. */
static void serve_by_convention(const char *conv, char *seen, size_t size) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char file[128], script[1024];
    snprintf(file, sizeof(file), "%s", tmp_path("seen"));
    snprintf(script, sizeof(script),
             "printf '%%s|%%s|%%s|%%s|%%s' \"${NGINX-unset}\" \"${LISTEN_FDS-unset}\" "
             "\"${EINHORN_FD_COUNT-unset}\" \"${EINHORN_FD_0-unset}\" \"${EINHORN_FD_1-unset}\" "
             ">%s; export LISTEN_FDS=2 LISTEN_PID=$$ LISTEN_FDNAMES=a:b; exec %s "
             "--behaviour-file %s",
             file, AFDT_TEST_SERVER, s.behaviour);
    s.pid = start_tool(s.log, -1,
                       (const char *const[]){"afdt", "serve", "--control", s.ctl, "--listen",
                                             "a=tcp:127.0.0.1:0", "--listen", "b=tcp:127.0.0.1:0",
                                             "--convention", conv, "--", "/bin/sh", "-c", script,
                                             NULL});
    CHECK(wait_log(s.log, "is ready", WAIT_MS));
    read_file(file, seen, size);
    CHECK_INT(tcp_gen(sv_port(&s, "b")), ==, 1);
    sv_stop(&s);
    check_no_children();
}

TEST(the_nginx_convention_announces_the_sockets_in_the_nginx_variable) {
    char seen[256];
    serve_by_convention("nginx", seen, sizeof(seen));
    CHECK_STR(seen, "3;4;|unset|unset|unset|unset");
}

TEST(the_einhorn_convention_announces_the_sockets_in_einhorn_fd_variables) {
    char seen[256];
    serve_by_convention("einhorn", seen, sizeof(seen));
    CHECK_STR(seen, "unset|unset|2|3|4");
}

TEST(the_systemd_convention_is_the_default) {
    char seen[256];
    serve_by_convention("systemd", seen, sizeof(seen));
    CHECK_STR(seen, "unset|2|unset|unset|unset");
}
