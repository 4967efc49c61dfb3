/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt serve under a service manager: the test plays systemd's side of sd_notify(3), a
 * NOTIFY_SOCKET datagram socket passing credentials, and reads what the supervisor says through
 * a first start, a restart, a failed restart, a stop, and a hand-over to a new supervisor. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tool_fixture.h"

/* One datagram as systemd receives it: its text and the sender's pid. */
struct note {
    char text[1024];
    pid_t from;
};

/* A NOTIFY_SOCKET of ours, put in the environment the supervisors under test inherit. */
static int manager_socket(void) {
    const char *path = tmp_path("notify");
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%.100s", path);
    CHECK_INT(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    int on = 1;
    CHECK_INT(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), ==, 0);
    CHECK_INT(setenv("NOTIFY_SOCKET", path, 1), ==, 0);
    return fd;
}

/* The next datagram, within @ms; false when none came. */
static bool next_note(int fd, struct note *n, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    CHECK_INT(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), ==, 0);
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(struct ucred))];
    } c;
    struct iovec iov = {n->text, sizeof(n->text) - 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &c, .msg_controllen = sizeof(c)};
    ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return false;
    CHECK(r > 0);
    n->text[r] = '\0';
    struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
    CHECK(h != NULL && h->cmsg_type == SCM_CREDENTIALS);
    struct ucred uc;
    memcpy(&uc, CMSG_DATA(h), sizeof(uc));
    n->from = uc.pid;
    return true;
}

/* The datagram's keys in order ("READY,MAINPID,STATUS"); every line must be KEY=VALUE. */
static const char *keys(const struct note *n) {
    static char out[256];
    out[0] = '\0';
    for (const char *line = n->text; *line;) {
        size_t len = strcspn(line, "\n");
        const char *eq = memchr(line, '=', len);
        if (eq == NULL || eq == line)
            harness_fail(__FILE__, __LINE__, "not KEY=VALUE: '%.*s'", (int)len, line);
        snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%.*s", out[0] ? "," : "",
                 (int)(eq - line), line);
        line += len + (line[len] == '\n');
    }
    return out;
}

/* The value of @key in @n (which has it). */
static const char *value(const struct note *n, const char *key) {
    static char out[512];
    size_t klen = strlen(key);
    for (const char *line = n->text; *line; line += strcspn(line, "\n") + 1) {
        size_t len = strcspn(line, "\n");
        if (len > klen && strncmp(line, key, klen) == 0 && line[klen] == '=') {
            snprintf(out, sizeof(out), "%.*s", (int)(len - klen - 1), line + klen + 1);
            return out;
        }
        if (line[len] == '\0')
            break;
    }
    harness_fail(__FILE__, __LINE__, "no %s= in '%s'", key, n->text);
}

static long long monotonic_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The next datagram, from @from, with exactly @want keys and a STATUS= line containing @status. */
static void expect(int fd, pid_t from, const char *want, const char *status, struct note *n) {
    if (!next_note(fd, n, WAIT_MS))
        harness_fail(__FILE__, __LINE__, "no datagram (waiting for %s)", want);
    CHECK_INT(n->from, ==, from);
    if (strcmp(keys(n), want) != 0)
        harness_fail(__FILE__, __LINE__, "wanted %s, got '%s'", want, n->text);
    if (strstr(value(n, "STATUS"), status) == NULL)
        harness_fail(__FILE__, __LINE__, "STATUS= without '%s': '%s'", status, n->text);
}

/* A restart by "afdt restart" (which exits @rc): RELOADING=1 with the time it began, then
 * READY=1 with a STATUS= line containing @status. */
static void expect_restart(int fd, struct sv *s, int rc, const char *status) {
    char out[1024];
    struct note n;
    long long before = monotonic_usec();
    CHECK_INT(RUN_TOOL(out, "restart", "--control", s->ctl), ==, rc);
    long long after = monotonic_usec();
    expect(fd, s->pid, "RELOADING,MONOTONIC_USEC,STATUS", "restart", &n);
    long long at = strtoll(value(&n, "MONOTONIC_USEC"), NULL, 10);
    CHECK(at >= before && at <= after);
    expect(fd, s->pid, "READY,STATUS", status, &n);
}

TEST(serve_tells_its_manager_start_restart_rollback_and_stop_as_sd_notify_says) {
    become_subreaper();
    int fd = manager_socket();
    struct sv s;
    sv_init(&s);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0");
    unsetenv("NOTIFY_SOCKET");
    struct note n;
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)s.pid);

    /* Ready once its first generation is: the main pid and what it runs, in one datagram. */
    expect(fd, s.pid, "READY,MAINPID,STATUS", "generation 1", &n);
    CHECK_STR(value(&n, "MAINPID"), pid);

    expect_restart(fd, &s, 0, "generation 2");
    /* A generation that exits before it is ready: rolled back, and ready again all the same. */
    write_file(s.behaviour, "exit 3\n");
    expect_restart(fd, &s, 1, "rolled back");

    char out[1024];
    CHECK_INT(RUN_TOOL(out, "stop", "--control", s.ctl), ==, 0);
    expect(fd, s.pid, "STOPPING,STATUS", "stopping", &n);
    CHECK_INT(reap(s.pid, WAIT_MS), ==, 0);
    /* Nothing more, and nothing at all from the generations, which have sockets of their own. */
    CHECK(!next_note(fd, &n, 200));
    close(fd);
    check_no_children();
}

TEST(a_retiring_supervisor_names_its_successor_as_main_pid_instead_of_stopping) {
    become_subreaper();
    int fd = manager_socket();
    struct sv old, new;
    sv_init(&old);
    SV_START(&old, "--listen", "web=tcp:127.0.0.1:0");
    struct note n;
    expect(fd, old.pid, "READY,MAINPID,STATUS", "generation 1", &n);

    /* The same command line again, as a new supervisor started by the same manager would. */
    char port[48];
    snprintf(port, sizeof(port), "web=tcp:127.0.0.1:%d", sv_port(&old, "web"));
    new = old;
    snprintf(new.log, sizeof(new.log), "%s", tmp_path("log2"));
    new.pid = sv_spawn(&new, (const char *const[]){"--listen", port, NULL});
    unsetenv("NOTIFY_SOCKET");
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)new.pid);

    /* The old one hands the service over: the new main pid, and no STOPPING=1, which would
     * make systemd stop the service the new supervisor now runs. */
    expect(fd, old.pid, "MAINPID,STATUS", pid, &n);
    CHECK_STR(value(&n, "MAINPID"), pid);
    expect(fd, new.pid, "READY,MAINPID,STATUS", "generation 2", &n);
    CHECK_STR(value(&n, "MAINPID"), pid);
    CHECK_INT(reap(old.pid, WAIT_MS), ==, 0);
    CHECK(!next_note(fd, &n, 200));

    sv_stop(&new);
    expect(fd, new.pid, "STOPPING,STATUS", "stopping", &n);
    close(fd);
    check_no_children();
}
