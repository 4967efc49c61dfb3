/* SPDX-License-Identifier: BSD-3-Clause */
/* The afdt(1) test fixture: see tool_fixture.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tool_fixture.h"

#ifndef AFDT_TOOL
#error "AFDT_TOOL must name the built afdt program"
#endif
#ifndef AFDT_TEST_SERVER
#error "AFDT_TEST_SERVER must name the built activated_server program"
#endif

/* Orphans come to the test process, so "no process left behind" can be checked. */
void become_subreaper(void) {
    CHECK_INT(prctl(PR_SET_CHILD_SUBREAPER, 1), ==, 0);
}

/* Wait for @pid at most @ms; past that it is killed and -1 returned. */
int reap(pid_t pid, int ms) {
    int64_t end = now_ms() + ms;
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now_ms() < end)
        sleep_ms(10);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    CHECK_INT(r, ==, pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Whether @pid is a generation's output relay ("afdt relay", named afdt-relay). */
static bool is_relay(pid_t pid) {
    char path[64], comm[32];
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    read_file(path, comm, sizeof(comm));
    return strcmp(comm, "afdt-relay\n") == 0;
}

/* A relay outlives a supervisor killed outright, by design (the generation must never write into
 * a pipe nobody reads), and comes to us: it ends with its generation's output, by now gone. */
static void reap_orphaned_relays(void) {
    char path[64], list[4096];
    snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
    read_file(path, list, sizeof(list));
    for (char *p = list, *end; *p; p = end) {
        pid_t pid = (pid_t)strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 0 && is_relay(pid) && reap(pid, WAIT_MS) != 0)
            harness_fail(__FILE__, __LINE__, "relay %d did not end with its generation", (int)pid);
    }
}

/* Every process started here has ended and been reaped, and none was orphaned to us. */
void check_no_children(void) {
    reap_orphaned_relays();
    int st;
    pid_t r = waitpid(-1, &st, WNOHANG);
    int e = errno;
    if (r != -1 || e != ECHILD)
        harness_fail(__FILE__, __LINE__, "a process was left behind (waitpid: %d)", (int)r);
}

bool exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK_INT(write(fd, text, strlen(text)), ==, (ssize_t)strlen(text));
    close(fd);
}

void read_file(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, size - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* Start the tool with @argv (argv[0] is ignored); its output goes to @log, or to @out_fd. */
pid_t start_tool(const char *log, int out_fd, const char *const *argv) {
    const char *args[40];
    int n = 0;
    args[n++] = AFDT_TOOL;
    for (int i = 1; argv[i] && n < 39; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* A failing test exits at once: what it started must not outlive it.  SIGTERM, for a
         * supervisor to stop its generations (they outlive a SIGKILLed one, on purpose). */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
            _exit(127);
        int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600) : out_fd;
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execv(AFDT_TOOL, (char *const *)args);
        _exit(127);
    }
    return pid;
}

/* Run the tool to the end; its output (stdout and stderr) in @out. Returns its status. */
int run_tool_v(char *out, size_t size, const char *const *argv) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    pid_t pid = start_tool(NULL, p[1], argv);
    close(p[1]);
    size_t got = 0;
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        struct pollfd pfd = {p[0], POLLIN, 0};
        int left = (int)(end - now_ms());
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            break;
        ssize_t n = read(p[0], out + got, size - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == size - 1)
            break;
    }
    out[got] = '\0';
    close(p[0]);
    return reap(pid, WAIT_MS);
}

/* Whether @log contains @text within @ms. */
bool wait_log(const char *log, const char *text, int ms) {
    static char buf[65536];
    int64_t end = now_ms() + ms;
    do {
        read_file(log, buf, sizeof(buf));
        if (strstr(buf, text))
            return true;
        sleep_ms(20);
    } while (now_ms() < end);
    fprintf(stderr, "log %s lacks \"%s\":\n%s\n", log, text, buf);
    return false;
}

void sv_init(struct sv *s) {
    memset(s, 0, sizeof(*s));
    snprintf(s->ctl, sizeof(s->ctl), "%s", tmp_path("ctl"));
    snprintf(s->log, sizeof(s->log), "%s", tmp_path("log"));
    snprintf(s->behaviour, sizeof(s->behaviour), "%s", tmp_path("behaviour"));
}

/* "afdt serve --control CTL OPTS... -- activated_server --behaviour-file B", logged. */
pid_t sv_spawn(struct sv *s, const char *const *opts) {
    const char *argv[40] = {"afdt", "serve", "--control", s->ctl};
    int n = 4;
    while (*opts && n < 34)
        argv[n++] = *opts++;
    argv[n++] = "--";
    argv[n++] = AFDT_TEST_SERVER;
    argv[n++] = "--behaviour-file";
    argv[n++] = s->behaviour;
    argv[n] = NULL;
    return start_tool(s->log, -1, argv);
}

/* "afdt stop", and the supervisor must exit 0 with its control path gone. */
void sv_stop(struct sv *s) {
    char out[1024];
    CHECK_INT(RUN_TOOL(out, "stop", "--control", s->ctl), ==, 0);
    CHECK(strstr(out, "stopped") != NULL);
    CHECK_INT(reap(s->pid, WAIT_MS), ==, 0);
    CHECK(!exists(s->ctl));
}

/* The port of the socket named @name, from "afdt status --json". */
int sv_port(struct sv *s, const char *name) {
    char out[8192], key[80];
    CHECK_INT(RUN_TOOL(out, "status", "--control", s->ctl, "--json"), ==, 0);
    snprintf(key, sizeof(key), "\"name\":\"%s\"", name);
    const char *p = strstr(out, key);
    CHECK(p != NULL);
    p = strstr(p, "\"port\":");
    CHECK(p != NULL);
    return atoi(p + 7);
}

/* One line exchange with the test server over a new connection; @sa is its address. */
int ask_stream(int family, const struct sockaddr *sa, socklen_t len, char *buf, size_t size) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t got = 0;
    int r = -1;
    if (connect(fd, sa, len) < 0) {
        r = errno == ECONNREFUSED ? -2 : -1;
    } else if (send(fd, "hello\n", 6, MSG_NOSIGNAL) == 6) {
        ssize_t n;
        while (got < size - 1 && (n = recv(fd, buf + got, size - 1 - got, 0)) > 0)
            got += (size_t)n;
        r = got > 0 ? 0 : -1;
    }
    buf[got] = '\0';
    close(fd);
    return r;
}

struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* The generation that answers on 127.0.0.1:@port, or -1. */
int tcp_gen(int port) {
    struct sockaddr_in a = loopback(port);
    char buf[256];
    int gen = -1;
    if (ask_stream(AF_INET, (struct sockaddr *)&a, sizeof(a), buf, sizeof(buf)) == 0 &&
        sscanf(buf, "gen=%d", &gen) != 1)
        gen = -1;
    return gen;
}

int unix_ask(const char *path, char *buf, size_t size) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%.100s", path);
    return ask_stream(AF_UNIX, (struct sockaddr *)&a, sizeof(a), buf, size);
}

int udp_ask(int port, char *buf, size_t size) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = loopback(port);
    ssize_t n = -1;
    if (sendto(fd, "hi", 2, 0, (struct sockaddr *)&a, sizeof(a)) == 2)
        n = recv(fd, buf, size - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    return n > 0 ? 0 : -1;
}

struct load_args {
    int port, stop_fd, result_fd;
    int parent_ends[2]; /* the parent's ends of both pipes, closed in the child */
};

static int run_load(void *arg) {
    struct load_args *l = arg;
    unsigned long ok = 0, failed = 0, refused = 0;
    close(l->parent_ends[0]);
    close(l->parent_ends[1]);
    struct pollfd pfd = {l->stop_fd, POLLIN, 0};
    struct sockaddr_in a = loopback(l->port);
    while (poll(&pfd, 1, 1) == 0) {
        char buf[256];
        int r = ask_stream(AF_INET, (struct sockaddr *)&a, sizeof(a), buf, sizeof(buf));
        if (r == 0 && strncmp(buf, "gen=", 4) == 0) {
            ok++;
        } else {
            failed++;
            refused += r == -2;
        }
    }
    char line[96];
    int n = snprintf(line, sizeof(line), "ok %lu failed %lu refused %lu", ok, failed, refused);
    return write(l->result_fd, line, (size_t)n) == n ? 0 : 1;
}

void load_start(struct load *l, int port) {
    int stop[2], result[2];
    CHECK_INT(pipe2(stop, O_CLOEXEC), ==, 0);
    CHECK_INT(pipe2(result, O_CLOEXEC), ==, 0);
    struct load_args a = {port, stop[0], result[1], {stop[1], result[0]}};
    l->pid = spawn(run_load, &a);
    close(stop[0]);
    close(result[1]);
    l->stop_fd = stop[1];
    l->result_fd = result[0];
}

void load_stop(struct load *l, unsigned long *ok, unsigned long *failed) {
    char buf[128];
    close(l->stop_fd);
    CHECK_INT(reap(l->pid, WAIT_MS), ==, 0);
    ssize_t n = read(l->result_fd, buf, sizeof(buf) - 1);
    close(l->result_fd);
    buf[n > 0 ? n : 0] = '\0';
    *ok = 0;
    *failed = 1;
    CHECK_INT(sscanf(buf, "ok %lu failed %lu refused %lu", ok, failed, &l->refused), ==, 3);
}

int count_in_log(const char *log, const char *text) {
    static char buf[1 << 20];
    int n = 0;
    read_file(log, buf, sizeof(buf));
    for (const char *p = buf; (p = strstr(p, text)) != NULL; p += strlen(text))
        n++;
    return n;
}

void notify_socket_of(pid_t pid, char *buf, size_t size) {
    char path[64], env[16384];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    ssize_t n = read(fd, env, sizeof(env) - 1);
    close(fd);
    CHECK(n > 0);
    env[n] = '\0';
    buf[0] = '\0';
    for (char *p = env; p < env + n; p += strlen(p) + 1)
        if (strncmp(p, "NOTIFY_SOCKET=", 14) == 0)
            snprintf(buf, size, "%s", p + 14);
    CHECK(buf[0] != '\0');
}
