/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1) survives its own SIGKILL: the generation keeps serving, and the next supervisor on
 * the same control path takes it over (its sockets and its process), restarts and stops it;
 * runtime directories of dead supervisors are cleaned up. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool_fixture.h"

/* The number after @key in @log (e.g. the pid in "generation 1 started: pid 123"), or -1. */
static int log_number(const char *log, const char *key) {
    static char buf[65536];
    read_file(log, buf, sizeof(buf));
    const char *p = strstr(buf, key);
    return p ? atoi(p + strlen(key)) : -1;
}

/* The runtime directory @log names. */
static void log_rundir(const char *log, char *dir, size_t size) {
    static char buf[65536];
    CHECK(wait_log(log, "runtime directory ", WAIT_MS));
    read_file(log, buf, sizeof(buf));
    const char *p = strstr(buf, "runtime directory ") + strlen("runtime directory ");
    size_t n = strcspn(p, " \n");
    CHECK(n > 0 && n < size);
    memcpy(dir, p, n);
    dir[n] = '\0';
}

/* @b, a supervisor for @a's control path and behaviour file, with a log of its own. */
static void sv_successor(struct sv *b, const struct sv *a) {
    sv_init(b);
    snprintf(b->ctl, sizeof(b->ctl), "%s", a->ctl);
    snprintf(b->behaviour, sizeof(b->behaviour), "%s", a->behaviour);
}

/* SIGKILL @s and see it die. */
static void sv_kill(struct sv *s) {
    CHECK_INT(kill(s->pid, SIGKILL), ==, 0);
    CHECK_INT(reap(s->pid, WAIT_MS), ==, 128 + SIGKILL);
}

/* Start @b with @opts and wait until it serves, having taken over a dead one's generation. */
static void sv_take_over(struct sv *b, const char *const *opts) {
    b->pid = sv_spawn(b, opts);
    CHECK(wait_log(b->log, "control channel at", WAIT_MS));
    CHECK(wait_log(b->log, "is serving: taken over", WAIT_MS));
}

/* Serve with a TCP and a Unix socket under load, SIGKILL the supervisor, start a new one on
 * the same control path, restart and stop.  @behaviour: how generation 1 behaves (NULL: well);
 * it ends with @gen1_status. */
static void survive_sigkill(const char *behaviour, int gen1_status) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    sv_successor(&b, &a);
    char path[128], unix_spec[160], out[8192], dir[256], buf[256];
    snprintf(path, sizeof(path), "%s", tmp_path("listen"));
    snprintf(unix_spec, sizeof(unix_spec), "local=unix:%s", path);
    if (behaviour)
        write_file(a.behaviour, behaviour);
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec, "--drain-timeout", "1");
    unlink(a.behaviour); /* for the generations to come */
    int port = sv_port(&a, "web");
    int gen1 = log_number(a.log, "generation 1 started: pid ");
    CHECK(gen1 > 0);
    log_rundir(a.log, dir, sizeof(dir));
    CHECK(exists(dir));

    struct load l;
    load_start(&l, port);
    sleep_ms(300);
    sv_kill(&a);
    sleep_ms(300); /* generation 1 serves on alone */
    CHECK_INT(tcp_gen(port), ==, 1);

    /* A new supervisor with the same command line takes generation 1 over, sockets and all. */
    sv_take_over(&b, (const char *const[]){"--listen", "web=tcp:127.0.0.1:0", "--listen", unix_spec,
                                           "--drain-timeout", "1", NULL});
    sleep_ms(300);
    CHECK_INT(RUN_TOOL(out, "status", "--control", b.ctl, "--json"), ==, 0);
    char me[64], gen[80];
    snprintf(me, sizeof(me), "{\"supervisor\":{\"pid\":%d,\"state\":\"running\"", (int)b.pid);
    snprintf(gen, sizeof(gen), "{\"id\":1,\"pid\":%d,\"state\":\"serving\"", gen1);
    CHECK(strstr(out, me) != NULL);
    CHECK(strstr(out, gen) != NULL);
    CHECK_INT(sv_port(&b, "web"), ==, port);
    CHECK_INT(unix_ask(path, buf, sizeof(buf)), ==, 0);
    CHECK(strncmp(buf, "gen=1 ", 6) == 0);

    unsigned long ok = 0, failed = 1;
    if (behaviour) {
        /* A generation that ignores SIGTERM is SIGKILLed at the drain timeout, in the middle of
         * whatever request it has: that loss is its own, so the load stops first. */
        load_stop(&l, &ok, &failed);
        CHECK_INT(failed, ==, 0);
        CHECK_INT(ok, >, 0);
    }
    CHECK_INT(RUN_TOOL(out, "restart", "--control", b.ctl), ==, 0);
    CHECK(strstr(out, "restart 1 succeeded: generation 2") != NULL);
    /* Generation 1 was orphaned to us when its supervisor died: we see how it ended.  (One
     * that ignores SIGTERM accepts connections until then.) */
    CHECK_INT(reap(gen1, WAIT_MS), ==, gen1_status);
    CHECK_INT(tcp_gen(port), ==, 2);
    CHECK(wait_log(b.log, "generation 1 (pid", WAIT_MS));
    if (!behaviour) {
        sleep_ms(300);
        load_stop(&l, &ok, &failed);
        CHECK_INT(failed, ==, 0);
        CHECK_INT(ok, >, 0);
    }
    sv_stop(&b);
    CHECK(!exists(path));
    CHECK(!exists(dir));
    check_no_children();
}

TEST(a_killed_supervisors_generation_keeps_serving_and_is_taken_over_under_load) {
    survive_sigkill(NULL, 0);
}

TEST(a_killed_supervisors_generation_that_ignores_sigterm_is_taken_over_and_killed) {
    survive_sigkill("ignore-term\n", 128 + SIGKILL);
}

TEST(the_runtime_directory_of_a_dead_supervisor_is_removed) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    sv_init(&b);
    char dir[256];
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0");
    int gen1 = log_number(a.log, "generation 1 started: pid ");
    CHECK(gen1 > 0);
    log_rundir(a.log, dir, sizeof(dir));
    sv_kill(&a);
    CHECK_INT(kill(gen1, SIGKILL), ==, 0);
    CHECK_INT(reap(gen1, WAIT_MS), ==, 128 + SIGKILL);
    /* Any supervisor of ours that starts, on any control path, clears it away (one of a test
     * running beside this one may be first). */
    SV_START(&b, "--listen", "web=tcp:127.0.0.1:0");
    CHECK(!exists(dir));
    sv_stop(&b);
    check_no_children();
}

TEST(a_successor_with_other_sockets_is_refused_and_leaves_the_orphan_serving) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    sv_successor(&b, &a);
    char out[4096];
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&a, "web");
    int gen1 = log_number(a.log, "generation 1 started: pid ");
    CHECK(gen1 > 0);
    sv_kill(&a);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", a.ctl, "--listen", "web=tcp:127.0.0.2:0", "--",
                       AFDT_TEST_SERVER),
              ==, 1);
    CHECK(strstr(out, "is not one of the sockets of generation 1") != NULL);
    CHECK_INT(tcp_gen(port), ==, 1);
    /* With the same --listen, it is taken over. */
    sv_take_over(&b, (const char *const[]){"--listen", "web=tcp:127.0.0.1:0", NULL});
    CHECK_INT(tcp_gen(port), ==, 1);
    sv_stop(&b);
    CHECK_INT(reap(gen1, WAIT_MS), ==, 0);
    check_no_children();
}

TEST(a_generation_on_trial_when_its_supervisor_was_killed_is_stopped_by_the_successor) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    sv_successor(&b, &a);
    char log2[128];
    snprintf(log2, sizeof(log2), "%s", tmp_path("restart-log"));
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0", "--ready-timeout", "60");
    int port = sv_port(&a, "web");
    int gen1 = log_number(a.log, "generation 1 started: pid ");
    write_file(a.behaviour, "hang\n");
    pid_t restart =
        start_tool(log2, -1, (const char *const[]){"afdt", "restart", "--control", a.ctl, NULL});
    CHECK(wait_log(a.log, "generation 2 started: pid ", WAIT_MS));
    int gen2 = log_number(a.log, "generation 2 started: pid ");
    CHECK(gen1 > 0 && gen2 > 0);
    sv_kill(&a);
    CHECK(reap(restart, WAIT_MS) > 0); /* it lost its supervisor: a failure, said */
    unlink(a.behaviour);

    sv_take_over(&b, (const char *const[]){"--listen", "web=tcp:127.0.0.1:0", NULL});
    CHECK(wait_log(b.log, "left starting by the supervisor that died, is stopped", WAIT_MS));
    CHECK_INT(reap(gen2, WAIT_MS), ==, 0); /* it drained on SIGTERM */
    CHECK_INT(tcp_gen(port), ==, 1);
    sv_stop(&b);
    CHECK_INT(reap(gen1, WAIT_MS), ==, 0);
    check_no_children();
}
