/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1) keeps every process a generation starts (setsid helpers, daemons) and ends them all,
 * respawns a serving generation that crashes, and runs generations as another user, each under
 * a loopback load that must see no failed request. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "helpers.h"
#include "tool_fixture.h"

#define MAX_PROCS 64

/* /proc/@pid/@what, a list of NUL-terminated strings, in @text with a space before each (so
 * " NAME=" finds a variable at the start too). Returns its length, 0 when it is empty or gone. */
static size_t proc_strings(const char *pid, const char *what, char *text, size_t size) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%s/%s", pid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t len = fd < 0 ? 0 : read(fd, text + 1, size - 2);
    if (fd >= 0)
        close(fd);
    if (len <= 0)
        return 0;
    text[0] = ' ';
    for (ssize_t i = 1; i <= len; i++)
        text[i] = text[i] ? text[i] : ' ';
    text[len + 1] = '\0';
    return (size_t)len;
}

/* The processes of one supervisor's test server (its behaviour file is on their command line,
 * forks included), at most MAX_PROCS, each with its AFDT_GENERATION (0 when unknown).
 * Zombies (ended, only not reaped yet) have no command line and do not count. Returns how
 * many. */
static int server_processes(const struct sv *s, pid_t *pids, int *gens) {
    DIR *d = opendir("/proc");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < MAX_PROCS) {
        char text[8192];
        if (!isdigit((unsigned char)e->d_name[0]) ||
            proc_strings(e->d_name, "cmdline", text, sizeof(text)) == 0 ||
            strstr(text, s->behaviour) == NULL)
            continue;
        const char *g = proc_strings(e->d_name, "environ", text, sizeof(text)) > 0
                            ? strstr(text, " AFDT_GENERATION=")
                            : NULL;
        pids[n] = (pid_t)atoi(e->d_name);
        gens[n] = g ? atoi(g + 17) : 0;
        n++;
    }
    closedir(d);
    return n;
}

/* How many processes of generation @gen (0: of any) remain, once the count has come down to
 * @want or WAIT_MS has passed; the ones left are printed. */
static int remaining(const struct sv *s, int gen, int want) {
    pid_t pids[MAX_PROCS];
    int gens[MAX_PROCS], count;
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        int n = server_processes(s, pids, gens);
        count = 0;
        for (int i = 0; i < n; i++)
            count += gen == 0 || gens[i] == gen;
        if (count <= want || now_ms() > end)
            break;
        sleep_ms(50);
    }
    if (count > want) {
        int n = server_processes(s, pids, gens);
        for (int i = 0; i < n; i++)
            fprintf(stderr, "left behind: pid %d of generation %d\n", (int)pids[i], gens[i]);
    }
    return count;
}

/* The pids of generation @gen, in @pids. Returns how many. */
static int gen_processes(const struct sv *s, int gen, pid_t *pids) {
    pid_t all[MAX_PROCS];
    int gens[MAX_PROCS], k = 0;
    int n = server_processes(s, all, gens);
    for (int i = 0; i < n; i++)
        if (gens[i] == gen)
            pids[k++] = all[i];
    return k;
}

/* Whether "afdt status --json" lists @pid among the processes of a generation. */
static bool status_lists(const struct sv *s, pid_t pid) {
    char out[16384];
    CHECK_INT(RUN_TOOL(out, "status", "--control", s->ctl, "--json"), ==, 0);
    const char *p = strstr(out, "\"processes\":[");
    CHECK(p != NULL);
    for (; p; p = strstr(p + 1, "\"processes\":[")) {
        const char *end = strchr(p, ']');
        for (const char *q = p + 13; q && q < end; q = strchr(q, ',')) {
            q += *q == ',';
            if (atoi(q) == (int)pid)
                return true;
        }
    }
    fprintf(stderr, "status does not list pid %d:\n%s\n", (int)pid, out);
    return false;
}

/* The pid that answers on 127.0.0.1:@port. */
static pid_t serving_pid(int port) {
    struct sockaddr_in a = loopback(port);
    char buf[256];
    int gen = 0, pid = 0;
    CHECK_INT(ask_stream(AF_INET, (struct sockaddr *)&a, sizeof(a), buf, sizeof(buf)), ==, 0);
    CHECK_INT(sscanf(buf, "gen=%d pid=%d", &gen, &pid), ==, 2);
    return (pid_t)pid;
}

static void check_load(struct load *l) {
    unsigned long ok, failed;
    load_stop(l, &ok, &failed);
    CHECK_INT(failed, ==, 0);
    CHECK_INT(ok, >, 0);
}

/* Which way the supervisor follows processes: "auto" (a cgroup per generation, on a machine
 * that has cgroup v2) or "no" (through /proc only, as where no cgroup can be made). */
static void check_containment(const struct sv *s, const char *cgroup) {
    CHECK(wait_log(
        s->log, strcmp(cgroup, "no") == 0 ? "processes found through /proc" : "containment: ", 1));
}

static void setsid_helpers_are_ended(const char *cgroup) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    write_file(s.behaviour, "setsid-helper\n");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--drain-timeout", "5", "--cgroup", cgroup);
    check_containment(&s, cgroup);
    int port = sv_port(&s, "web");
    struct load l;
    load_start(&l, port);
    pid_t pids[MAX_PROCS];
    CHECK_INT(remaining(&s, 1, 2), ==, 2); /* the server and its helper */
    CHECK_INT(gen_processes(&s, 1, pids), ==, 2);
    CHECK(status_lists(&s, pids[0]) && status_lists(&s, pids[1]));
    for (int gen = 2; gen <= 3; gen++) {
        CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 0);
        CHECK_INT(remaining(&s, gen - 1, 0), ==, 0);
        CHECK_INT(tcp_gen(port), ==, gen);
        CHECK_INT(remaining(&s, gen, 2), ==, 2);
    }
    CHECK_INT(gen_processes(&s, 3, pids), ==, 2);
    CHECK(status_lists(&s, pids[0]) && status_lists(&s, pids[1]));
    check_load(&l);
    sv_stop(&s);
    CHECK_INT(remaining(&s, 0, 0), ==, 0);
    check_no_children();
}

TEST(setsid_helpers_of_restarted_and_stopped_generations_are_ended) {
    setsid_helpers_are_ended("auto");
}

TEST(setsid_helpers_are_ended_without_cgroups) {
    setsid_helpers_are_ended("no");
}

static void daemonizing_release_rolled_back(const char *cgroup) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--cgroup", cgroup);
    check_containment(&s, cgroup);
    int port = sv_port(&s, "web");
    struct load l;
    load_start(&l, port);
    /* Its process exits 0 at once; its daemon leaves a helper of its own and fails. */
    write_file(s.behaviour, "daemonize setsid-helper exit 3\n");
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 1);
    CHECK(strstr(out, "rolled back: generation 1") != NULL);
    CHECK_INT(remaining(&s, 2, 0), ==, 0);
    for (int i = 0; i < 20; i++)
        CHECK_INT(tcp_gen(port), ==, 1);
    check_load(&l);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    CHECK(strstr(out, "\"rollbacks\":1") != NULL);
    sv_stop(&s);
    CHECK_INT(remaining(&s, 0, 0), ==, 0);
    check_no_children();
}

TEST(a_release_that_daemonizes_is_rolled_back_with_its_daemon) {
    daemonizing_release_rolled_back("auto");
}

TEST(a_daemonizing_release_is_rolled_back_without_cgroups) {
    daemonizing_release_rolled_back("no");
}

static void daemonizing_first_generation(const char *cgroup) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096], want[64];
    write_file(s.behaviour, "daemonize\n");
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--cgroup", cgroup);
    check_containment(&s, cgroup);
    int port = sv_port(&s, "web");
    struct load l;
    load_start(&l, port);
    /* Its first process has exited; the daemon is the generation now. */
    CHECK_INT(remaining(&s, 1, 1), ==, 1);
    pid_t daemon = serving_pid(port);
    CHECK(status_lists(&s, daemon));
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    snprintf(want, sizeof(want), "{\"id\":1,\"pid\":%d,\"state\":\"serving\"", (int)daemon);
    CHECK(strstr(out, want) != NULL);
    sleep_ms(300);
    CHECK_INT(waitpid(s.pid, NULL, WNOHANG), ==, 0); /* the supervisor goes on */
    int rc = RUN_TOOL(out, "restart", "--control", s.ctl, "--wait");
    if (rc != 0)
        fprintf(stderr, "%s", out);
    CHECK_INT(rc, ==, 0);
    CHECK_INT(remaining(&s, 1, 0), ==, 0);
    CHECK_INT(tcp_gen(port), ==, 2);
    check_load(&l);
    sv_stop(&s);
    CHECK_INT(remaining(&s, 0, 0), ==, 0);
    check_no_children();
}

TEST(a_first_generation_that_daemonizes_is_supervised_as_its_daemon) {
    daemonizing_first_generation("auto");
}

TEST(a_first_generation_daemonizing_is_supervised_without_cgroups) {
    daemonizing_first_generation("no");
}

TEST(a_serving_generation_killed_twice_is_respawned_with_nothing_refused) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096], want[64];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&s, "web");
    struct load l;
    load_start(&l, port);
    for (int gen = 2; gen <= 3; gen++) {
        sleep_ms(200);
        CHECK_INT(kill(serving_pid(port), SIGKILL), ==, 0);
        snprintf(want, sizeof(want), "respawn %d: starting generation %d", gen - 1, gen);
        CHECK(wait_log(s.log, want, WAIT_MS));
        CHECK(wait_log(s.log, "is ready", WAIT_MS));
        CHECK_INT(tcp_gen(port), ==, gen);
    }
    unsigned long ok, failed;
    load_stop(&l, &ok, &failed);
    /* One request at a time: at most the one in flight in each killed generation is lost. */
    CHECK_INT(l.refused, ==, 0);
    CHECK_INT(failed, <=, 2);
    CHECK_INT(ok, >, 0);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl), ==, 0);
    CHECK(strstr(out, "respawns 2") != NULL);
    CHECK_INT(RUN_TOOL(out, "status", "--control", s.ctl, "--json"), ==, 0);
    CHECK(strstr(out, "\"respawns\":2") != NULL);
    sv_stop(&s);
    CHECK_INT(remaining(&s, 0, 0), ==, 0);
    check_no_children();
}

TEST(a_generation_that_keeps_crashing_is_given_up_with_its_last_status) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    int port = sv_port(&s, "web");
    write_file(s.behaviour, "exit 3\n"); /* every respawn fails */
    CHECK_INT(kill(serving_pid(port), SIGKILL), ==, 0);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 3);
    CHECK(wait_log(s.log, "respawn 1: starting generation 2", 1));
    CHECK(wait_log(s.log, "giving up", 1));
    CHECK(!exists(s.ctl));
    check_no_children();
}

TEST(restart_never_stops_with_the_status_of_a_serving_generation_that_crashed) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--restart", "never");
    CHECK_INT(kill(serving_pid(sv_port(&s, "web")), SIGKILL), ==, 0);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 128 + SIGKILL);
    CHECK(!wait_log(s.log, "respawn", 1));
    check_no_children();
}

TEST(restart_always_respawns_a_serving_generation_that_exited_0) {
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char buf[256];
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--restart", "always");
    int port = sv_port(&s, "web");
    struct sockaddr_in a = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    CHECK_INT(send(fd, "quit 0\n", 7, MSG_NOSIGNAL), ==, 7);
    CHECK(recv(fd, buf, sizeof(buf), 0) > 0);
    close(fd);
    CHECK(wait_log(s.log, "respawn 1: starting generation 2", WAIT_MS));
    CHECK_INT(tcp_gen(port), ==, 2);
    sv_stop(&s);
    check_no_children();
}

/* The line of /proc/@pid/status that starts with @key ("Uid:"), after it. */
static void proc_status(pid_t pid, const char *key, char *buf, size_t size) {
    char path[64], text[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    read_file(path, text, sizeof(text));
    const char *p = strstr(text, key);
    CHECK(p != NULL);
    p += strlen(key) + strspn(p + strlen(key), " \t");
    int len = (int)strcspn(p, "\n");
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    snprintf(buf, size, "%.*s", len, p);
}

/* Port 80 is one for the whole machine: another run of this test (a package build) may hold
 * it for a while; one that stays taken is not ours to test on. */
static void wait_for_port_80(void) {
    struct sockaddr_in a = loopback(80);
    for (int64_t end = now_ms() + 2 * WAIT_MS;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        int r = bind(fd, (struct sockaddr *)&a, sizeof(a));
        int e = errno;
        close(fd);
        if (r == 0)
            return;
        if (e != EADDRINUSE || now_ms() > end)
            harness_skip("127.0.0.1:80 is in use by another program");
        sleep_ms(200);
    }
}

TEST(a_generation_runs_as_an_unprivileged_user_on_port_80) {
    struct test_user u;
    test_user("afdt-test-web", &u); /* skips unless root */
    wait_for_port_80();
    become_subreaper();
    struct sv s;
    sv_init(&s);
    char out[4096], user[64], want[64], got[128];
    snprintf(user, sizeof(user), "%s", u.name);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:80", "--user", user);
    CHECK(wait_log(s.log, "is ready (it sent READY=1", 1));
    struct load l;
    load_start(&l, 80);
    for (int gen = 1; gen <= 2; gen++) {
        pid_t pid = serving_pid(80);
        snprintf(want, sizeof(want), "%u\t%u\t%u\t%u", u.uid, u.uid, u.uid, u.uid);
        proc_status(pid, "Uid:", got, sizeof(got));
        CHECK_STR(got, want);
        snprintf(want, sizeof(want), "%u\t%u\t%u\t%u", u.gid, u.gid, u.gid, u.gid);
        proc_status(pid, "Gid:", got, sizeof(got));
        CHECK_STR(got, want);
        proc_status(pid, "Groups:", got, sizeof(got));
        snprintf(want, sizeof(want), "%u", u.gid);
        CHECK_STR(got, want); /* the user's groups: root's are gone */
        if (gen == 1) {
            CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl), ==, 0);
            CHECK(strstr(out, "generation 2") && strstr(out, "(it sent READY=1"));
        }
    }
    check_load(&l);
    sv_stop(&s);
    CHECK_INT(remaining(&s, 0, 0), ==, 0);
    check_no_children();
}

TEST(an_unknown_user_is_refused_before_anything_starts) {
    become_subreaper();
    char out[2048];
    const char *ctl = tmp_path("ctl");
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0", "--user",
                       "no-such-user-afdt", "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "--user: no user named 'no-such-user-afdt'") != NULL);
    CHECK_INT(RUN_TOOL(out, "serve", "--control", ctl, "--listen", "web=tcp:127.0.0.1:0", "--user",
                       "root:no-such-group-afdt", "--", AFDT_TEST_SERVER),
              ==, 2);
    CHECK(strstr(out, "--user: no group named 'no-such-group-afdt'") != NULL);
    CHECK(!exists(ctl));
    check_no_children();
}

/* Reap what was orphaned to us (a killed supervisor's generations) as it ends. */
static void reap_orphans(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

TEST(a_killed_supervisors_setsid_helpers_are_ended_by_the_one_that_takes_over) {
    become_subreaper();
    struct sv a, b;
    sv_init(&a);
    sv_init(&b);
    snprintf(b.ctl, sizeof(b.ctl), "%s", a.ctl);
    snprintf(b.behaviour, sizeof(b.behaviour), "%s", a.behaviour);
    char out[4096];
    write_file(a.behaviour, "setsid-helper\n");
    SV_START(&a, "--listen", "web=tcp:127.0.0.1:0", "--drain-timeout", "2");
    if (!wait_log(a.log, "a cgroup per generation", 1))
        harness_skip("no cgroup v2 here: a dead supervisor's helpers cannot be found again");
    int port = sv_port(&a, "web");
    CHECK_INT(remaining(&a, 1, 2), ==, 2);
    struct load l;
    load_start(&l, port);
    CHECK_INT(kill(a.pid, SIGKILL), ==, 0);
    CHECK_INT(reap(a.pid, WAIT_MS), ==, 128 + SIGKILL);
    b.pid = sv_spawn(
        &b, (const char *const[]){"--listen", "web=tcp:127.0.0.1:0", "--drain-timeout", "2", NULL});
    CHECK(wait_log(b.log, "control channel at", WAIT_MS));
    CHECK(wait_log(b.log, "taken over", WAIT_MS));
    pid_t pids[MAX_PROCS];
    CHECK_INT(gen_processes(&b, 1, pids), ==, 2);
    CHECK(status_lists(&b, pids[0]) && status_lists(&b, pids[1]));
    CHECK_INT(RUN_TOOL(out, "restart", "--control", b.ctl), ==, 0);
    for (int64_t end = now_ms() + WAIT_MS; remaining(&b, 1, 0) > 0 && now_ms() < end;)
        reap_orphans();
    CHECK_INT(remaining(&b, 1, 0), ==, 0);
    check_load(&l);
    sv_stop(&b);
    reap_orphans();
    CHECK_INT(remaining(&b, 0, 0), ==, 0);
    check_no_children();
}
