/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1): each generation's output in the supervisor's log, prefixed with its number, through a
 * relay that outlives the supervisor. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tool_fixture.h"

/* Serve through a shell that runs @before, then execs the test server. */
static void serve_after(struct sv *s, const char *before) {
    char script[1024];
    snprintf(script, sizeof(script), "%s\nexec %s --behaviour-file %s", before, AFDT_TEST_SERVER,
             s->behaviour);
    s->pid = start_tool(s->log, -1,
                        (const char *const[]){"afdt", "serve", "--control", s->ctl, "--listen",
                                              "web=tcp:127.0.0.1:0", "--", "/bin/sh", "-c", script,
                                              NULL});
    CHECK(wait_log(s->log, "is ready", WAIT_MS));
}

TEST(each_generations_output_is_prefixed_with_its_number) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    serve_after(&s, "echo out $AFDT_GENERATION; echo err $AFDT_GENERATION >&2");
    CHECK(wait_log(s.log, "gen 1: out 1\n", WAIT_MS));
    CHECK(wait_log(s.log, "gen 1: err 1\n", WAIT_MS));
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 0);
    CHECK(wait_log(s.log, "gen 2: out 2\n", WAIT_MS));
    CHECK(wait_log(s.log, "gen 2: err 2\n", WAIT_MS));
    sv_stop(&s);
    check_no_children();
}

TEST(a_flood_of_short_lines_is_relayed_whole) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    /* Reads full of newlines: each byte read may take a prefix.  (After the start, for the log's
     * beginning to say it is ready.) */
    char flag[128], before[512];
    snprintf(flag, sizeof(flag), "%s", tmp_path("flag"));
    snprintf(before, sizeof(before),
             "(while [ ! -e %s ]; do sleep 0.02; done; yes | head -n 20000) &", flag);
    serve_after(&s, before);
    write_file(flag, "go\n");
    int64_t end = now_ms() + WAIT_MS;
    while (count_in_log(s.log, "gen 1: y\n") < 20000 && now_ms() < end)
        sleep_ms(50);
    CHECK_INT(count_in_log(s.log, "gen 1: y\n"), ==, 20000);
    CHECK_INT(count_in_log(s.log, "\ny\n"), ==, 0); /* none unprefixed */
    unlink(flag);
    sv_stop(&s);
    check_no_children();
}

TEST(a_generation_keeps_writing_after_the_supervisor_is_killed) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    serve_after(&s, "(while :; do echo tick; sleep 0.05; done) &");
    int port = sv_port(&s, "web");
    CHECK(wait_log(s.log, "gen 1: tick", WAIT_MS));
    int gen_pid = 0;
    char log[8192];
    read_file(s.log, log, sizeof(log));
    const char *p = strstr(log, "generation 1 started: pid ");
    CHECK(p != NULL);
    gen_pid = atoi(p + strlen("generation 1 started: pid "));
    CHECK_INT(gen_pid, >, 0);

    /* With the supervisor gone, what the generation writes still goes somewhere: no SIGPIPE, no
     * full pipe; it goes on writing and serving. */
    CHECK_INT(kill(s.pid, SIGKILL), ==, 0);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 128 + SIGKILL);
    int before = count_in_log(s.log, "gen 1: tick");
    int64_t end = now_ms() + WAIT_MS;
    while (count_in_log(s.log, "gen 1: tick") < before + 3 && now_ms() < end)
        sleep_ms(50);
    CHECK_INT(count_in_log(s.log, "gen 1: tick"), >=, before + 3);
    CHECK_INT(tcp_gen(port), ==, 1);

    /* Its whole process group, then everything that comes to us (the relay last). */
    CHECK_INT(kill(-gen_pid, SIGKILL), ==, 0);
    end = now_ms() + WAIT_MS;
    for (;;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0 && errno == ECHILD)
            break;
        CHECK(now_ms() < end);
        if (r == 0)
            sleep_ms(10);
    }
    unlink(s.ctl);
    check_no_children();
}
