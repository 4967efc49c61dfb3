/* SPDX-License-Identifier: BSD-3-Clause */
/* Listening sockets by name: specs, socket activation, a predecessor, or binding. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
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

TEST(open_spec_tcp_listens_and_checks_against_its_spec) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int fd = afdt_open_spec("tcp:127.0.0.1:0", &err);
    CHECK_INT(fd, >=, 0);
    CHECK(is_cloexec(fd));
    char spec[64];
    snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", local_port(fd));
    CHECK_INT(afdt_check_spec(fd, spec, &err), ==, 0);
    CHECK_INT(afdt_check_spec(fd, "tcp:127.0.0.1:0", &err), ==, 0);
    /* Port 0 still checks the address. */
    CHECK_INT(afdt_check_spec(fd, "tcp:127.0.0.2:0", &err), <, 0);
    CHECK_INT(errno, ==, EADDRNOTAVAIL);
    snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", (unsigned)(local_port(fd) ^ 1));
    CHECK_INT(afdt_check_spec(fd, spec, &err), <, 0);
    CHECK_INT(errno, ==, EADDRNOTAVAIL);
    CHECK_INT(afdt_check_spec(fd, "udp:127.0.0.1:0", &err), <, 0);
    CHECK_INT(errno, ==, EPROTOTYPE);
    close(fd);
}

TEST(open_spec_udp_ipv6_and_unix) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int u = afdt_open_spec("udp:127.0.0.1:0", &err);
    CHECK_INT(u, >=, 0);
    CHECK_INT(afdt_check_spec(u, "udp:127.0.0.1:0", &err), ==, 0);
    close(u);
    int v6 = afdt_open_spec("tcp:[::1]:0", &err);
    if (v6 >= 0) { /* a machine without IPv6 loopback cannot bind ::1 */
        CHECK_INT(afdt_check_spec(v6, "tcp:[::1]:0", &err), ==, 0);
        CHECK_INT(afdt_check_spec(v6, "tcp:127.0.0.1:0", &err), <, 0);
        CHECK_INT(errno, ==, EAFNOSUPPORT);
        close(v6);
    }
    char spec[128];
    const char *p = tmp_path("spec");
    snprintf(spec, sizeof(spec), "unix:%s", p);
    int s = afdt_open_spec(spec, &err);
    CHECK_INT(s, >=, 0);
    CHECK_INT(afdt_check_spec(s, spec, &err), ==, 0);
    CHECK_INT(afdt_check_spec(s, "unix:/elsewhere", &err), <, 0);
    CHECK_INT(errno, ==, EADDRNOTAVAIL);
    close(s);
    /* The file is stale now: opening the spec again replaces it. */
    s = afdt_open_spec(spec, &err);
    CHECK_INT(s, >=, 0);
    close(s);
    unlink(p);
}

TEST(malformed_specs_fail_with_pathname_einval) {
    const char *bad[] = {"", "tcp", "tcp:", "tcp:127.0.0.1", "tcp:1.2.3.4:x", "tcp:1.2.3.4:70000",
                         "tcp:[::1:80", "sctp:1.2.3.4:80", "unix:", "udp:1.2.3.4:-1",
                         /* Each of these bound a port once (0.0.0.0 for the empty brackets). */
                         "tcp:127.0.0.1: 0", "tcp: 127.0.0.1:0", "tcp:127.0.0.1 x:0",
                         "tcp:127.0.0.1:+0", "tcp:127.0.0.1:0 ", "tcp:[]:0", "udp:[]:0",
                         "tcp:127.0.0.1:000000"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(afdt_open_spec(bad[i], &err), <, 0);
        int e = errno;
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EINVAL, e);
    }
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_open_spec("tcp:no-such-host.invalid:80", &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_PATHNAME, EADDRNOTAVAIL, e);
}

TEST(open_spec_on_a_port_in_use_fails_with_bind_eaddrinuse) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int fd = afdt_open_spec("tcp:127.0.0.1:0", &err);
    CHECK_INT(fd, >=, 0);
    char spec[64];
    snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", local_port(fd));
    CHECK_INT(afdt_open_spec(spec, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_BIND, EADDRINUSE, e);
    close(fd);
}

/* In a child: put two sockets at 3 and 4 as a socket activator would. */
static int activated(void *arg) {
    (void)arg;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int a = afdt_open_spec("tcp:127.0.0.1:0", &err), b = afdt_open_spec("udp:127.0.0.1:0", &err);
    CHECK(a >= 0 && b >= 0);
    /* Move them out of the way first: either may be 3 or 4 already. */
    int ha = fcntl(a, F_DUPFD_CLOEXEC, 100), hb = fcntl(b, F_DUPFD_CLOEXEC, 100);
    close(a);
    close(b);
    CHECK_INT(dup2(ha, 3), ==, 3); /* dup2 leaves the copies inheritable */
    CHECK_INT(dup2(hb, 4), ==, 4);
    close(ha);
    close(hb);
    CHECK(!is_cloexec(3));
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "2", 1);
    setenv("LISTEN_FDNAMES", "web:dns", 1);
    struct afdt_named_fd *set = NULL;
    CHECK_INT(afdt_listen_fds(0, &set, &err), ==, 2);
    CHECK_STR(set[0].name, "web");
    CHECK_STR(set[1].name, "dns");
    CHECK_INT(set[0].fd, ==, 3);
    CHECK(is_cloexec(3) && is_cloexec(4));
    CHECK_INT(afdt_named_fds_find(set, 2, "dns"), ==, 4);
    afdt_named_fds_free(set, 2, 0);

    /* afdt_get_listeners takes them by name, checks them, and unsets the
     * variables. */
    char web[64];
    snprintf(web, sizeof(web), "tcp:127.0.0.1:%u", local_port(3));
    const char *names[] = {"dns", "web"};
    const char *specs[] = {"udp:127.0.0.1:0", web};
    uint32_t sources = 0;
    CHECK_INT(afdt_get_listeners(names, specs, 2, NULL, NULL, &set, &sources, &err), ==, 2);
    CHECK_INT(sources, ==, AFDT_FROM_LISTEN_FDS);
    CHECK_INT(set[0].fd, ==, 4);
    CHECK_INT(set[1].fd, ==, 3);
    CHECK(getenv("LISTEN_FDS") == NULL && getenv("LISTEN_PID") == NULL);
    afdt_named_fds_free(set, 2, 1);
    return 0;
}

TEST(listen_fds_and_get_listeners_take_socket_activated_descriptors_by_name) {
    CHECK_INT(wait_exit(spawn(activated, NULL)), ==, 0);
}

static int activated_for_someone_else(void *arg) {
    (void)arg;
    setenv("LISTEN_PID", "1", 1);
    setenv("LISTEN_FDS", "2", 1);
    struct afdt_named_fd *set = (void *)1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen_fds(1, &set, &err), ==, 0);
    CHECK(set == NULL);
    CHECK(getenv("LISTEN_FDS") == NULL);
    setenv("LISTEN_PID", "nonsense", 1);
    setenv("LISTEN_FDS", "2", 1);
    CHECK_INT(afdt_listen_fds(1, &set, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_FORMAT, EINVAL, e);
    CHECK(getenv("LISTEN_FDS") == NULL);
    return 0;
}

TEST(listen_fds_ignores_variables_meant_for_another_process_and_rejects_garbage) {
    CHECK_INT(wait_exit(spawn(activated_for_someone_else, NULL)), ==, 0);
}

TEST(get_listeners_binds_when_nothing_is_passed_and_nobody_answers) {
    const char *names[] = {"a", "b"};
    const char *specs[] = {"tcp:127.0.0.1:0", "udp:127.0.0.1:0"};
    struct afdt_named_fd *set = NULL;
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {1, 0};
    CHECK_INT(afdt_get_listeners(names, specs, 2, tmp_path("nobody"), &tv, &set, &sources, &err),
              ==, 2);
    CHECK_INT(sources, ==, AFDT_FROM_BIND);
    CHECK_INT(afdt_check_spec(set[0].fd, specs[0], &err), ==, 0);
    CHECK_INT(afdt_check_spec(set[1].fd, specs[1], &err), ==, 0);
    CHECK_STR(set[1].name, "b");
    afdt_named_fds_free(set, 2, 1);
}

/* A predecessor: serves its listeners as a named set at a path. */
static struct afdt_named_fd pred_set[2];
static int pred_request(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                        struct afdt_reply *reply, void *ud) {
    (void)peer, (void)ud;
    if (len != sizeof(AFDT_LISTENERS_REQUEST) - 1 || memcmp(req, AFDT_LISTENERS_REQUEST, len))
        return -1;
    reply->named = pred_set;
    reply->nnamed = 2;
    return 0;
}
static void pred_post(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                      const struct afdt_reply *reply, int error, void *ud) {
    (void)peer, (void)req, (void)len, (void)reply;
    if (error == 0)
        event_base_loopbreak(ud);
}
static void pred_error(const struct afdt_error_t *e, void *ud) {
    (void)e, (void)ud;
}

struct pred_arg {
    const char *path;
    int ready[2];
};

static int predecessor(void *arg) {
    struct pred_arg *pa = arg;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    pred_set[0].fd = afdt_open_spec("tcp:127.0.0.1:0", &err);
    pred_set[1].fd = afdt_open_spec("tcp:127.0.0.1:0", &err);
    strcpy(pred_set[0].name, "one");
    strcpy(pred_set[1].name, "two");
    struct event_base *eb = event_base_new();
    struct afdt_server_options o = {0};
    o.size = sizeof(o);
    o.request_handler = pred_request;
    o.post_handler = pred_post;
    o.error_handler = pred_error;
    o.userdata = eb;
    void *h;
    if (afdt_create_server_ex(pa->path, eb, &o, &h) < 0)
        return 2;
    uint16_t ports[2] = {local_port(pred_set[0].fd), local_port(pred_set[1].fd)};
    if (write(pa->ready[1], ports, sizeof(ports)) != sizeof(ports))
        return 3;
    event_base_dispatch(eb);
    afdt_close_server(h);
    event_base_dispatch(eb);
    event_base_free(eb);
    return 0;
}

TEST(get_listeners_takes_over_from_a_predecessor_and_binds_the_rest) {
    struct pred_arg pa = {tmp_path("pred"), {-1, -1}};
    CHECK_INT(pipe2(pa.ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(predecessor, &pa);
    uint16_t ports[2];
    CHECK_INT(read(pa.ready[0], ports, sizeof(ports)), ==, sizeof(ports));
    char one[64], two[64];
    snprintf(one, sizeof(one), "tcp:127.0.0.1:%u", ports[0]);
    snprintf(two, sizeof(two), "tcp:127.0.0.1:%u", ports[1]);
    const char *names[] = {"two", "three", "one"};
    const char *specs[] = {two, "tcp:127.0.0.1:0", one};
    struct afdt_named_fd *set = NULL;
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {5, 0};
    CHECK_INT(afdt_get_listeners(names, specs, 3, pa.path, &tv, &set, &sources, &err), ==, 3);
    CHECK_INT(sources, ==, AFDT_FROM_PREDECESSOR | AFDT_FROM_BIND);
    CHECK_INT(local_port(set[0].fd), ==, ports[1]);
    CHECK_INT(local_port(set[2].fd), ==, ports[0]);
    CHECK_INT(afdt_check_spec(set[1].fd, "tcp:127.0.0.1:0", &err), ==, 0);
    afdt_named_fds_free(set, 3, 1);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(pa.ready[0]);
    close(pa.ready[1]);
}

TEST(get_listeners_refuses_a_predecessor_socket_that_does_not_match_its_spec) {
    struct pred_arg pa = {tmp_path("pred"), {-1, -1}};
    CHECK_INT(pipe2(pa.ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(predecessor, &pa);
    uint16_t ports[2];
    CHECK_INT(read(pa.ready[0], ports, sizeof(ports)), ==, sizeof(ports));
    const char *names[] = {"one"};
    const char *specs[] = {"udp:127.0.0.1:0"};
    struct afdt_named_fd *set = NULL;
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {5, 0};
    int before = fd_count();
    CHECK_INT(afdt_get_listeners(names, specs, 1, pa.path, &tv, &set, &sources, &err), <, 0);
    int e = errno;
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, EPROTOTYPE, e);
    CHECK_FD_COUNT(before);
    CHECK(set == NULL);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(pa.ready[0]);
    close(pa.ready[1]);
}

/* Holds an exclusive flock on @arg's path for as long as it lives, as another user would. */
static int hold_lock(void *arg) {
    int fd = open(arg, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) < 0)
        return 1;
    pause();
    return 0;
}

TEST(a_lock_file_of_another_user_fails_a_replacing_bind_at_once_and_is_left_alone) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    char path[128], lock[140], spec[140];
    snprintf(path, sizeof(path), "%s", user_tmp_path(&u, "sock"));
    snprintf(lock, sizeof(lock), "%s.lock", path);
    snprintf(spec, sizeof(spec), "unix:%s", path);
    int stale = afdt_listen(path, NULL); /* ours, and nobody listens: to be replaced */
    CHECK(stale >= 0);
    close(stale);
    pid_t holder = spawn_as_user(&u, 0, hold_lock, lock);
    struct stat st;
    for (int i = 0; i < 500 && stat(lock, &st) < 0; i++)
        sleep_ms(10);
    sleep_ms(50);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int64_t t0 = now_ms();
    int fd = afdt_open_spec(spec, &err); /* before: waited for ever */
    int e = errno;
    int64_t took = now_ms() - t0;
    kill(holder, SIGKILL);
    wait_exit(holder);
    CHECK_INT(fd, <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_BIND, EPERM, e);
    CHECK_INT(took, <, 2000);
    CHECK_INT(lstat(lock, &st), ==, 0); /* not ours to remove */
    CHECK_INT(st.st_uid, ==, u.uid);
    unlink(path);
}
