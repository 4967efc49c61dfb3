/* SPDX-License-Identifier: BSD-3-Clause */
/* The test runner: fork per test, timeout, descriptor count before and after. */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 256

static struct {
    const char *name;
    test_fn fn;
} tests[MAX_TESTS];
static int ntests;
static char tmpdir[64];

void harness_register(const char *name, test_fn fn) {
    if (ntests < MAX_TESTS) {
        tests[ntests].name = name;
        tests[ntests].fn = fn;
        ntests++;
    }
}

void harness_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

void harness_skip(const char *why) {
    fprintf(stderr, "skipped: %s\n", why);
    fflush(stderr);
    _exit(SKIP_EXIT);
}

/* Descriptors open in this process, or -1 with errno when it cannot look. */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

int fd_count(void) {
    int n = count_fds();
    if (n < 0)
        harness_fail(__FILE__, __LINE__, "opendir(/proc/self/fd): %s", strerror(errno));
    return n;
}

int settled_fd_count(int want) {
    /* At the descriptor limit, the look itself may wait for the closer. */
    int64_t give_up = now_ms() + 5000;
    int n;
    while (((n = count_fds()) != want || n < 0) && now_ms() < give_up) {
        if (n < 0 && errno != EMFILE)
            break;
        sleep_ms(10);
    }
    return n < 0 ? fd_count() : n;
}

const char *tmp_dir(void) {
    if (tmpdir[0] == '\0') {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/afdt-test-XXXXXX");
        if (mkdtemp(tmpdir) == NULL)
            harness_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    }
    return tmpdir;
}

const char *tmp_path(const char *tag) {
    static char paths[64][96];
    static int n;
    char *p = paths[n++ % 64];
    snprintf(p, sizeof(paths[0]), "%s/%s-%d.sock", tmp_dir(), tag, n);
    return p;
}

/* Remove what @dir holds, one level of subdirectories included, then @dir. */
static void remove_dir(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            if (unlink(p) < 0 && errno == EISDIR && depth > 0)
                remove_dir(p, depth - 1);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void remove_tmpdir(void) {
    if (tmpdir[0] != '\0')
        remove_dir(tmpdir, 1);
}

bool same_file(int a, int b) {
    struct stat sa, sb;
    if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool is_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFD);
    return fl >= 0 && (fl & FD_CLOEXEC);
}

int count_inheritable(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != dirfd(d) && !is_cloexec(fd))
            n++;
    }
    closedir(d);
    return n;
}

pid_t spawn(int (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        harness_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

int wait_exit(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            harness_fail(__FILE__, __LINE__, "waitpid: %s", strerror(errno));
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void make_pair(int sv[2]) {
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
}

int make_file(const char *contents) {
    int fd = memfd_create("afdt-test", MFD_CLOEXEC);
    CHECK(fd >= 0);
    size_t n = strlen(contents);
    CHECK_INT(write(fd, contents, n), ==, n);
    return fd;
}

void check_file_contents(int fd, const char *want) {
    char buf[128] = {0};
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    CHECK_INT(n, ==, strlen(want));
    CHECK_STR(buf, want);
}

void read_exactly(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r > 0);
        got += (size_t)r;
    }
}

/* Run one test in this process, with the descriptor check. */
static int run_here(int i) {
    signal(SIGPIPE, SIG_DFL); /* the library must never raise it */
    int before = fd_count();
    tests[i].fn();
    int after = settled_fd_count(before);
    remove_tmpdir();
    if (before != after) {
        fprintf(stderr, "%s: descriptor leak: %d open before, %d after\n", tests[i].name, before,
                after);
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int)getpid());
        if (system(cmd) < 0)
            fprintf(stderr, "(could not list descriptors)\n");
        return 1;
    }
    return 0;
}

/* End what a test left running in process groups of its own (a killed supervisor's
 * generations outlive it, as they should): its orphans come to us, their subreaper. */
static void end_orphans(void) {
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
    for (int round = 0; round < 100; round++) {
        bool any = false;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
        if (fd >= 0)
            close(fd);
        buf[n > 0 ? n : 0] = '\0';
        for (char *p = buf, *end; *p; p = end) {
            long child = strtol(p, &end, 10);
            if (end == p)
                break;
            any = kill((pid_t)child, SIGKILL) == 0 || any;
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            any = true;
        if (!any)
            return;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int run_forked(int i, int timeout_s) {
    fflush(NULL);
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        setpgid(0, 0); /* so a timeout kills the test's own children too */
        alarm((unsigned)timeout_s);
        _exit(run_here(i));
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    kill(-pid, SIGKILL);
    end_orphans();
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    fprintf(stderr, "%s: killed by signal %d%s\n", tests[i].name, WTERMSIG(st),
            WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
    return 1;
}

static int find(const char *name) {
    for (int i = 0; i < ntests; i++)
        if (strcmp(tests[i].name, name) == 0)
            return i;
    fprintf(stderr, "no test named %s\n", name);
    return -1;
}

int main(int argc, char **argv) {
    const char *t = getenv("AFDT_TEST_TIMEOUT");
    int timeout_s = t ? atoi(t) : 60;
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < ntests; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--no-fork") == 0) {
        int i = find(argv[2]);
        return i < 0 ? 2 : run_here(i);
    }
    if (argc == 2) {
        int i = find(argv[1]);
        return i < 0 ? 2 : run_forked(i, timeout_s);
    }
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < ntests; i++) {
        int r = run_forked(i, timeout_s);
        printf("%-60s %s\n", tests[i].name, r == 0 ? "ok" : r == SKIP_EXIT ? "SKIPPED" : "FAILED");
        if (r == 0)
            passed++;
        else if (r == SKIP_EXIT)
            skipped++;
        else
            failed++;
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

ssize_t raw_sendmsg(int s, const void *buf, size_t n, const int *fds, unsigned nfds) {
    enum { MAX_FDS = 253 }; /* the kernel's SCM_MAX_FD */
    CHECK(nfds <= MAX_FDS);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } cm;
    struct iovec iov = {(void *)(uintptr_t)buf, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&cm, 0, sizeof(cm));
        msg.msg_control = cm.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(s, &msg, MSG_NOSIGNAL);
}

int lingering_socket(int *peer, int *listener) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    CHECK_INT(bind(l, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    CHECK_INT(listen(l, 1), ==, 0);
    CHECK_INT(getsockname(l, (struct sockaddr *)&a, &alen), ==, 0);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    CHECK_INT(connect(s, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    *peer = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    CHECK(*peer >= 0);
    *listener = l;
    /* Fill the peer's receive buffer and our send buffer. */
    CHECK_INT(fcntl(s, F_SETFL, O_NONBLOCK), ==, 0);
    static char chunk[65536];
    while (send(s, chunk, sizeof(chunk), MSG_NOSIGNAL) > 0)
        continue;
    CHECK_INT(errno, ==, EAGAIN);
    struct linger lg = {1, 5};
    CHECK_INT(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), ==, 0);
    return s;
}
