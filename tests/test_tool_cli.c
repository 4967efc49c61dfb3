/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1) for scripts: exit statuses, afdt restart's outcome as soon as it is known (without
 * asking again) and --wait for the old generation to be gone. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tool_fixture.h"

TEST(a_restart_during_the_first_generations_start_is_busy_and_says_why) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    write_file(s.behaviour, "slow 3000\n");
    s.pid = sv_spawn(&s, (const char *const[]){"--listen", "web=tcp:127.0.0.1:0", NULL});
    CHECK(wait_log(s.log, "control channel at", WAIT_MS));
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 3);
    CHECK(strstr(out, "generation 1, the first, is still starting") != NULL);
    CHECK(strstr(out, "ask again once it serves") != NULL);
    unlink(s.behaviour);
    CHECK(wait_log(s.log, "is ready", WAIT_MS));
    sv_stop(&s);
    check_no_children();
}

TEST(restart_learns_its_outcome_without_asking_the_control_channel_again) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char log2[128], moved[160];
    snprintf(log2, sizeof(log2), "%s", tmp_path("restart-log"));
    snprintf(moved, sizeof(moved), "%s.moved", s.ctl);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    write_file(s.behaviour, "slow 1000\n");
    pid_t client =
        start_tool(log2, -1, (const char *const[]){"afdt", "restart", "--control", s.ctl, NULL});
    CHECK(wait_log(s.log, "starting generation 2", WAIT_MS));
    /* From now on nothing answers at the control path: a client that asks for the outcome
     * finds nobody; the outcome comes through the pipe that came with "started". */
    CHECK_INT(rename(s.ctl, moved), ==, 0);
    CHECK_INT(reap(client, WAIT_MS), ==, 0);
    CHECK(wait_log(log2, "restart 1 succeeded: generation 2", 1));
    CHECK_INT(rename(moved, s.ctl), ==, 0);
    sv_stop(&s);
    check_no_children();
}

TEST(restart_wait_returns_once_the_old_generation_is_gone) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    /* Generation 1 ignores SIGTERM: it is gone only when the drain timeout kills it. */
    write_file(s.behaviour, "ignore-term\n");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--drain-timeout", "1");
    unlink(s.behaviour);
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    CHECK(strstr(out, "restart 1 succeeded: generation 2") != NULL);
    CHECK(strstr(out, "restart 1: the old generation is gone") != NULL);
    CHECK(wait_log(s.log, "SIGKILL", 1));
    CHECK(wait_log(s.log, "was killed by signal 9", 1));
    sv_stop(&s);
    check_no_children();
}

TEST(a_rolled_back_restart_exits_1) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    write_file(s.behaviour, "exit 3\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 1);
    CHECK(strstr(out, "restart 1 failed: generation 2") != NULL);
    CHECK(strstr(out, "rolled back") != NULL);
    sv_stop(&s);
    check_no_children();
}
