/* SPDX-License-Identifier: BSD-3-Clause */
/* Taking a running process's listening sockets (afdt_take_listeners), and being refused. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

static uint16_t local_port(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &len), ==, 0);
    return ntohs(a.sin_port);
}

/* A process that opened its own sockets, as a server started by hand does. */
struct owner {
    pid_t pid;
    uint16_t web_port, dns_port;
    char path[108];
    int stop; /* closing it ends the owner */
};

struct owner_arg {
    int report, stop;
    int parent_ends[2]; /* closed in the owner */
    const char *path;
};

/* The owner's side: a TCP and a Unix listener, a UDP socket, a connected pair and a second
 * copy of the TCP listener as noise; it reports its ports, then waits to be told to stop. */
static int own_sockets(void *arg) {
    struct owner_arg *a = arg;
    char spec[160];
    close(a->parent_ends[0]);
    close(a->parent_ends[1]);
    /* As a server started by hand as this user would be: an exec makes it dumpable again
     * after the change of user that made it not. */
    if (prctl(PR_SET_DUMPABLE, 1) < 0)
        return 1;
    snprintf(spec, sizeof(spec), "unix:%s", a->path);
    int web = afdt_open_spec("tcp:127.0.0.1:0", NULL),
        dns = afdt_open_spec("udp:127.0.0.1:0", NULL);
    int local = afdt_open_spec(spec, NULL), pair[2];
    if (web < 0 || dns < 0 || local < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0 ||
        dup(web) < 0)
        return 1;
    uint16_t ports[2] = {local_port(web), local_port(dns)};
    if (write(a->report, ports, sizeof(ports)) != (ssize_t)sizeof(ports))
        return 1;
    char c;
    while (read(a->stop, &c, 1) < 0 && errno == EINTR) {
    }
    unlink(spec + 5);
    return 0;
}

/* Start an owner, as @u when not NULL. */
static void start_owner_as(struct owner *o, const struct test_user *u) {
    int report[2], stop[2];
    CHECK_INT(pipe2(report, O_CLOEXEC), ==, 0);
    CHECK_INT(pipe2(stop, O_CLOEXEC), ==, 0);
    snprintf(o->path, sizeof(o->path), "%s", u ? user_tmp_path(u, "owned") : tmp_path("owned"));
    struct owner_arg arg = {report[1], stop[0], {report[0], stop[1]}, o->path};
    o->pid = u ? spawn_as_user(u, 0, own_sockets, &arg) : spawn(own_sockets, &arg);
    close(report[1]);
    close(stop[0]);
    uint16_t ports[2];
    read_exactly(report[0], ports, sizeof(ports));
    close(report[0]);
    o->web_port = ports[0];
    o->dns_port = ports[1];
    o->stop = stop[1];
}

static void start_owner(struct owner *o) {
    start_owner_as(o, NULL);
}

static void stop_owner(struct owner *o) {
    close(o->stop);
    CHECK_INT(wait_exit(o->pid), ==, 0);
}

TEST(take_listeners_copies_a_running_process_sockets_by_pidfd) {
    struct owner o;
    start_owner(&o);
    char web[64], dns[64], local[160];
    snprintf(web, sizeof(web), "tcp:127.0.0.1:%u", o.web_port);
    snprintf(dns, sizeof(dns), "udp:127.0.0.1:%u", o.dns_port);
    snprintf(local, sizeof(local), "unix:%s", o.path);
    const char *names[] = {"local", "web", "dns", "any"};
    const char *specs[] = {local, web, dns, "tcp:127.0.0.1:0"};
    struct afdt_named_fd *set = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    /* "any" matches only the TCP listener, which "web" took: one socket is never two. */
    CHECK_INT(afdt_take_listeners(o.pid, names, specs, 4, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, EADDRNOTAVAIL, errno);
    CHECK(set == NULL);

    CHECK_INT(afdt_take_listeners(o.pid, names, specs, 3, &set, &err), ==, 3);
    CHECK_STR(set[0].name, "local");
    CHECK_STR(set[1].name, "web");
    CHECK_STR(set[2].name, "dns");
    for (int i = 0; i < 3; i++) {
        CHECK(is_cloexec(set[i].fd));
        CHECK_INT(afdt_check_spec(set[i].fd, specs[i], &err), ==, 0);
    }
    /* Ours is the very socket: a connection to the owner's port can be accepted here. */
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(o.web_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(connect(c, (struct sockaddr *)&a, sizeof(a)), ==, 0);
    int s = accept4(set[1].fd, NULL, NULL, SOCK_CLOEXEC);
    CHECK_INT(s, >=, 0);
    close(s);
    close(c);
    stop_owner(&o);
    /* The owner is gone and its copies with it; ours still listen. */
    CHECK_INT(afdt_check_spec(set[1].fd, web, &err), ==, 0);
    afdt_named_fds_free(set, 3, 1);
}

TEST(take_listeners_by_pidfd_refuses_a_spec_that_no_socket_matches) {
    struct owner o;
    start_owner(&o);
    const char *names[] = {"web", "other"};
    const char *specs[] = {"tcp:127.0.0.1:0", "tcp:127.0.0.2:0"};
    struct afdt_named_fd *set = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_take_listeners(o.pid, names, specs, 2, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, EADDRNOTAVAIL, errno);
    CHECK(set == NULL);
    /* A UDP spec does not take a TCP listener on the same port. */
    char udp[64];
    snprintf(udp, sizeof(udp), "udp:127.0.0.1:%u", o.web_port);
    specs[0] = udp;
    CHECK_INT(afdt_take_listeners(o.pid, names, specs, 1, &set, &err), <, 0);
    CHECK_INT(errno, ==, EADDRNOTAVAIL);
    stop_owner(&o);
}

static int exit_at_once(void *arg) {
    (void)arg;
    return 0;
}

TEST(take_listeners_by_pidfd_refuses_a_process_that_has_exited) {
    const char *names[] = {"web"}, *specs[] = {"tcp:127.0.0.1:0"};
    struct afdt_named_fd *set = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    /* A zombie: its pid is still its own, but it has no socket to give. */
    pid_t pid = spawn(exit_at_once, NULL);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    CHECK_INT(pidfd, >=, 0);
    siginfo_t si;
    CHECK_INT(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), ==, 0);
    CHECK_INT(afdt_take_listeners(pid, names, specs, 1, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, ESRCH, errno);
    CHECK_INT(wait_exit(pid), ==, 0);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_take_listeners_pidfd(pidfd, names, specs, 1, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, ESRCH, errno);
    close(pidfd);
    CHECK_INT(afdt_take_listeners(-1, names, specs, 1, &set, &err), <, 0);
    CHECK_INT(errno, ==, ESRCH);
    CHECK(set == NULL);
}

/* Checked before any pidfd call (so valgrind, which does not know them, runs this one). */
TEST(take_listeners_refuses_bad_arguments_and_a_descriptor_that_is_not_a_pidfd) {
    const char *names[] = {"web"}, *specs[] = {"tcp:127.0.0.1:0"}, *bad[] = {"tcp:nowhere"};
    const char *unnamed[] = {""};
    struct afdt_named_fd *set = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    CHECK_INT(afdt_take_listeners_pidfd(p[0], names, specs, 1, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, EBADF, errno);
    CHECK_INT(afdt_take_listeners_pidfd(p[0], names, specs, 0, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EINVAL, errno);
    CHECK_INT(afdt_take_listeners_pidfd(p[0], names, specs, 1, NULL, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EINVAL, errno);
    CHECK_INT(afdt_take_listeners_pidfd(p[0], NULL, specs, 1, &set, &err), <, 0);
    CHECK_INT(errno, ==, EINVAL);
    CHECK_INT(afdt_take_listeners_pidfd(p[0], unnamed, specs, 1, &set, &err), <, 0);
    CHECK_INT(errno, ==, EINVAL);
    CHECK_INT(afdt_take_listeners_pidfd(p[0], names, bad, 1, &set, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EINVAL, errno);
    close(p[0]);
    close(p[1]);
    CHECK(set == NULL);
}

/* A taker running as another user: it must be refused with EPERM and a message. */
struct taker {
    pid_t owner;
    uint16_t port;
    int expect_errno; /* 0: must succeed */
};

static int take_as_user(void *arg) {
    struct taker *t = arg;
    char spec[64];
    snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", t->port);
    const char *names[] = {"web"}, *specs[] = {spec};
    struct afdt_named_fd *set = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int r = afdt_take_listeners(t->owner, names, specs, 1, &set, &err);
    int e = errno;
    if (t->expect_errno == 0) {
        if (r != 1 || afdt_check_spec(set[0].fd, spec, NULL) < 0) {
            fprintf(stderr, "take as the same user: r=%d errno=%d %s\n", r, e, err.message);
            return 1;
        }
        afdt_named_fds_free(set, 1, 1);
        return 0;
    }
    if (r >= 0 || e != t->expect_errno || strstr(err.message, "PTRACE_MODE_ATTACH") == NULL) {
        fprintf(stderr, "take as another user: r=%d errno=%d (%s) %s\n", r, e, strerror(e),
                err.message);
        return 1;
    }
    return set == NULL ? 0 : 1;
}

TEST(take_listeners_by_pidfd_refuses_a_process_of_another_user) {
    struct test_user a, b;
    test_user("afdt-test-a", &a);
    test_user("afdt-test-b", &b);
    struct owner o;
    start_owner_as(&o, &b);
    struct taker t = {o.pid, o.web_port, EPERM};
    CHECK_INT(wait_exit(spawn_as_user(&a, 0, take_as_user, &t)), ==, 0);
    /* The same user, unprivileged, may. */
    t.expect_errno = 0;
    CHECK_INT(wait_exit(spawn_as_user(&b, 0, take_as_user, &t)), ==, 0);
    stop_owner(&o);
}
