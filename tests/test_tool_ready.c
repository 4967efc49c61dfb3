/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1) readiness: a generation is ready once it is seen accepting on every socket, with or
 * without READY=1; a release that never accepts is rolled back with the old one serving. */
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tool_fixture.h"

TEST(a_server_without_notify_is_ready_as_soon_as_it_accepts) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    write_file(s.behaviour, "no-notify\n");
    /* A ready timeout far beyond the harness's patience: only accepting can make it ready. */
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--listen", "dns=udp:127.0.0.1:0",
             "--ready-timeout", "600");
    CHECK(wait_log(s.log, "generation 1 (pid", 1));
    CHECK(wait_log(s.log, "is ready (it is accepting on every socket)", 1));
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(strstr(out, "generation 2") && strstr(out, "it is accepting on every socket"));
    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 2);
    /* afdt status says how each generation was found ready. */
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "ready: it is accepting on every socket") != NULL);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    CHECK(strstr(out, "\"ready\":\"it is accepting on every socket\"") != NULL);
    sv_stop(&s);
    check_no_children();
}

TEST(ready_1_before_accepting_waits_until_it_accepts) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    CHECK(wait_log(s.log, "is ready (it sent READY=1 and is accepting on every socket)", 1));
    /* As gunicorn's arbiter: READY=1 at once, its workers accept a while later. */
    write_file(s.behaviour, "early 300\n");
    int64_t t0 = now_ms();
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "it sent READY=1 and is accepting on every socket") != NULL);
    CHECK_INT(now_ms() - t0, >=, 300);
    sv_stop(&s);
    check_no_children();
}

TEST(ready_1_from_a_generation_that_never_accepts_is_rolled_back) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "0.5");
    write_file(s.behaviour, "early 600000\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 1);
    CHECK(strstr(out, "sent READY=1 but was not seen accepting on every socket within 0.5s"));
    CHECK(strstr(out, "rolled back: generation 1") != NULL);
    CHECK_INT(tcp_gen(sv_port(&s, "web")), ==, 1);
    sv_stop(&s);
    check_no_children();
}

TEST(a_first_generation_with_ready_1_requires_nothing_of_later_ones) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "5");
    CHECK(wait_log(s.log, "it sent READY=1", 1));
    write_file(s.behaviour, "no-notify\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "generation 2") && strstr(out, "it is accepting on every socket"));
    sv_stop(&s);
    check_no_children();
}

TEST(a_release_that_never_accepts_and_exits_later_is_rolled_back_under_load) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    /* It dies after 1.5 s, well after its 1 s to get ready: only not having been seen accepting
     * keeps it from being taken as ready and the old generation from being retired. */
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "1");
    int port = sv_port(&s, "web");
    struct load l;
    load_start(&l, port);
    write_file(s.behaviour, "die 1500\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 1);
    CHECK(strstr(out, "was not seen accepting on every socket, nor sent READY=1, within 1.0s"));
    CHECK(strstr(out, "rolled back: generation 1") != NULL);
    CHECK_INT(tcp_gen(port), ==, 1);
    sleep_ms(200);
    unsigned long ok, failed;
    load_stop(&l, &ok, &failed);
    CHECK_INT(failed, ==, 0);
    CHECK_INT(ok, >, 0);
    CHECK_INT(tcp_gen(port), ==, 1);
    sv_stop(&s);
    check_no_children();
}
