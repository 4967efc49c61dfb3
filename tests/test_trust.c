/* SPDX-License-Identifier: BSD-3-Clause */
/* Whom a client trusts: the multi-user helpers, then who answers before a descriptor is taken. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

/* ---------------------------------------------------------------------------
 * The helpers every multi-user test stands on
 * ------------------------------------------------------------------------- */

struct dropped {
    const struct test_user *u;
    const char *path;
};

/* As the user: we are it and nothing more, with the limit we were given, and we can bind in
 * our own directory. */
static int check_dropped(void *arg) {
    const struct dropped *d = arg;
    CHECK_INT(getuid(), ==, d->u->uid);
    CHECK_INT(geteuid(), ==, d->u->uid);
    CHECK_INT(getegid(), ==, d->u->gid);
    CHECK_INT(setuid(0), ==, -1);
    CHECK_INT(errno, ==, EPERM);
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    CHECK_INT(rl.rlim_cur, ==, 2048);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int s = afdt_listen(d->path, &err);
    CHECK(s >= 0);
    close(s);
    CHECK_INT(unlink(d->path), ==, 0);
    return 0;
}

static int cannot_bind(void *arg) {
    const struct dropped *d = arg;
    CHECK_INT(geteuid(), ==, d->u->uid);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen(d->path, &err), <, 0);
    CHECK_INT(errno, ==, EACCES);
    return 0;
}

TEST(test_user_is_created_once_and_cannot_regain_root) {
    struct test_user a, again, b;
    test_user("afdt-test-a", &a);
    test_user("afdt-test-a", &again);
    test_user("afdt-test-b", &b);
    CHECK(a.uid != 0 && a.gid != 0);
    CHECK_INT(again.uid, ==, a.uid);
    CHECK(b.uid != a.uid);
    struct dropped d = {&a, user_tmp_path(&a, "own")};
    CHECK_INT(wait_exit(spawn_as_user(&a, 2048, check_dropped, &d)), ==, 0);
    /* The directory is the user's: another user cannot bind there. */
    struct dropped other = {&b, d.path};
    CHECK_INT(wait_exit(spawn_as_user(&b, 0, cannot_bind, &other)), ==, 0);
}

/* ---------------------------------------------------------------------------
 * A squatter: another user listening where a predecessor would, handing out a
 * listening socket to whoever asks, and telling us what it was asked
 * ------------------------------------------------------------------------- */

struct squatter {
    const char *name; /* a path or an @abstract name */
    int report[2];    /* what it saw, written by it, read by us */
    pid_t pid;
};

static int squat(void *arg) {
    struct squatter *s = arg;
    close(s->report[0]);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int l = afdt_listen(s->name, &err);
    CHECK(l >= 0);
    struct afdt_named_fd bait = {afdt_open_spec("tcp:127.0.0.1:0", &err), "web"};
    CHECK(bait.fd >= 0);
    CHECK_INT(write(s->report[1], "L", 1), ==, 1);
    int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    CHECK(c >= 0);
    struct timeval tv = {10, 0};
    CHECK_INT(setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), ==, 0);
    uint8_t req[AFDT_MSGLEN];
    uint32_t len = sizeof(req);
    if (afdt_recv_plain_msg(c, req, &len, &err) < 0) {
        dprintf(s->report[1], "nothing (%s, errno %d)", afdt_operation_str(err.operation), errno);
        return 0;
    }
    dprintf(s->report[1], "asked \"%.*s\"", (int)len, (const char *)req);
    afdt_send_named_fds(c, NULL, 0, &bait, 1, &err);
    return 0;
}

/* Start a squatter at @name, as @u (NULL: as ourselves), and wait until it listens. */
static void start_squatter(struct squatter *s, const struct test_user *u, const char *name) {
    s->name = name;
    CHECK_INT(pipe2(s->report, O_CLOEXEC), ==, 0);
    s->pid = u ? spawn_as_user(u, 0, squat, s) : spawn(squat, s);
    close(s->report[1]);
    char ready;
    CHECK_INT(read(s->report[0], &ready, 1), ==, 1);
}

/* What the squatter saw on its first connection, once it is gone.  A client refused before it
 * connected leaves the squatter waiting: our own connection, closed at once, ends the wait. */
static const char *squatter_saw(struct squatter *s) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int poke = afdt_connect(s->name, &err); /* fails once it has closed its socket: fine */
    if (poke >= 0)
        close(poke);
    static char saw[128];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof(saw) - 1 && (r = read(s->report[0], saw + n, sizeof(saw) - 1 - n)) > 0)
        n += (size_t)r;
    saw[n] = '\0';
    close(s->report[0]);
    CHECK_INT(wait_exit(s->pid), ==, 0);
    return saw;
}

static const char *abstract_name(const char *tag) {
    static char names[8][64];
    static int n;
    char *name = names[n++ % 8];
    snprintf(name, sizeof(names[0]), "@afdt-test-trust-%d-%s", (int)getpid(), tag);
    return name;
}

/* afdt_get_listeners_ex for one TCP listener "web", with @opts (NULL: afdt_get_listeners). */
static int get_web(const char *predecessor, const struct afdt_client_options *opts,
                   uint32_t *ret_sources, struct afdt_error_t *err) {
    const char *names[] = {"web"}, *specs[] = {"tcp:127.0.0.1:0"};
    struct timeval tv = {5, 0};
    struct afdt_named_fd *set = NULL;
    int r = opts ? afdt_get_listeners_ex(names, specs, 1, predecessor, &tv, opts, &set, ret_sources,
                                         err)
                 : afdt_get_listeners(names, specs, 1, predecessor, &tv, &set, ret_sources, err);
    if (r >= 0) {
        CHECK_INT(r, ==, 1);
        CHECK(set[0].fd >= 0);
        afdt_named_fds_free(set, 1, 1);
    }
    return r;
}

/* The refusal: AFDT_PEER, EPERM, a message naming @uid. */
static void check_refused(const struct afdt_error_t *err, int saved_errno, uint32_t uid) {
    CHECK_STR(afdt_operation_str(err->operation), "AFDT_PEER");
    CHECK_INT(saved_errno, ==, EPERM);
    char want[32];
    snprintf(want, sizeof(want), "uid %u,", (unsigned)uid);
    if (strstr(err->message, want) == NULL)
        harness_fail(__FILE__, __LINE__, "message does not name %s: \"%s\"", want, err->message);
}

static void get_listeners_refuses_squatter_at(const char *name, const struct test_user *u) {
    struct squatter s;
    start_squatter(&s, u, name);
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(get_web(name, NULL, &sources, &err), <, 0);
    check_refused(&err, errno, u->uid);
    CHECK_STR(squatter_saw(&s), "nothing (AFDT_RECVMSG, errno 0)");
}

TEST(get_listeners_refuses_another_users_socket_at_a_path) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    get_listeners_refuses_squatter_at(user_tmp_path(&u, "pred"), &u);
}

TEST(get_listeners_refuses_another_user_at_an_abstract_name) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    get_listeners_refuses_squatter_at(abstract_name("pred"), &u);
}

/* What the same call does when the squatter is one we trust: asks, and takes its socket. */
static void get_listeners_takes_from(const char *name, const struct test_user *u,
                                     const struct afdt_client_options *opts) {
    struct squatter s;
    start_squatter(&s, u, name);
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(get_web(name, opts, &sources, &err), ==, 1);
    CHECK_INT(sources, ==, AFDT_FROM_PREDECESSOR);
    CHECK_STR(squatter_saw(&s), "asked \"" AFDT_LISTENERS_REQUEST "\"");
}

TEST(get_listeners_trusts_its_own_user) {
    get_listeners_takes_from(tmp_path("pred"), NULL, NULL);
    get_listeners_takes_from(abstract_name("pred"), NULL, NULL);
}

TEST(get_listeners_ex_trusts_the_uids_it_is_given) {
    struct test_user u, other;
    test_user("afdt-test-a", &u);
    test_user("afdt-test-b", &other);
    uint32_t uids[] = {other.uid, u.uid};
    struct afdt_client_options o = {sizeof(o), 0, 2, uids};
    get_listeners_takes_from(user_tmp_path(&u, "pred"), &u, &o);
    get_listeners_takes_from(abstract_name("pred"), &u, &o);
    struct afdt_client_options any = {sizeof(any), AFDT_CLIENT_TRUST_ANY, 0, NULL};
    get_listeners_takes_from(abstract_name("any"), &u, &any);
    /* A list without the user refuses it, our own uid included. */
    uint32_t not_u[] = {other.uid, 0};
    struct afdt_client_options o2 = {sizeof(o2), 0, 2, not_u};
    struct squatter s;
    start_squatter(&s, &u, abstract_name("listed"));
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(get_web(s.name, &o2, &sources, &err), <, 0);
    check_refused(&err, errno, u.uid);
    CHECK_STR(squatter_saw(&s), "nothing (AFDT_RECVMSG, errno 0)");
}

/* ---------------------------------------------------------------------------
 * The clients with options, and the calls that keep 1.0's behaviour
 * ------------------------------------------------------------------------- */

/* One afdt_sync_client_opts exchange asking for a named set. */
static int sync_opts(const char *name, const struct afdt_client_options *opts,
                     struct afdt_error_t *err) {
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = 0, nnamed = 0;
    struct afdt_named_fd *named = NULL;
    struct timeval tv = {5, 0};
    int r = afdt_sync_client_opts(name, (const uint8_t *)"give", 4, resp, &len, NULL, &nfds, &named,
                                  &nnamed, &tv, opts, err);
    if (r >= 0) {
        CHECK_INT(nnamed, ==, 1);
        afdt_named_fds_free(named, nnamed, 1);
    }
    return r;
}

TEST(sync_client_opts_refuses_another_user_before_sending) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    const char *names[] = {user_tmp_path(&u, "sq"), abstract_name("sq")};
    for (int i = 0; i < 2; i++) {
        struct squatter s;
        start_squatter(&s, &u, names[i]);
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(sync_opts(names[i], NULL, &err), <, 0);
        check_refused(&err, errno, u.uid);
        CHECK_STR(squatter_saw(&s), "nothing (AFDT_RECVMSG, errno 0)");
    }
}

struct async_result {
    struct event_base *eb;
    int responses, errors, err_errno;
    struct afdt_error_t err;
};

static void async_response(struct afdt_response *r, void *ud) {
    struct async_result *a = ud;
    a->responses++;
    for (uint32_t i = 0; i < r->nfds; i++)
        close(r->fds[i]);
    afdt_named_fds_free(r->named, r->nnamed, 1);
}

static void async_error(const struct afdt_error_t *e, void *ud) {
    struct async_result *a = ud;
    a->err_errno = errno;
    a->errors++;
    a->err = *e;
}

TEST(create_client_opts_refuses_another_user_before_sending) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    const char *names[] = {user_tmp_path(&u, "sq"), abstract_name("sq")};
    for (int i = 0; i < 2; i++) {
        struct squatter s;
        start_squatter(&s, &u, names[i]);
        struct async_result a = {event_base_new(), 0, 0, 0, AFDT_ERROR_T_INIT};
        struct timeval tv = {5, 0};
        CHECK_INT(afdt_create_client_opts(names[i], a.eb, (const uint8_t *)"give", 4,
                                          async_response, async_error, &tv, NULL, &a),
                  <, 0);
        CHECK_INT(a.errors, ==, 1);
        CHECK_INT(a.responses, ==, 0);
        CHECK_STR(afdt_phase_str(a.err.phase), "AFDT_CREATE_CLIENT");
        check_refused(&a.err, a.err_errno, u.uid);
        event_base_free(a.eb);
        CHECK_STR(squatter_saw(&s), "nothing (AFDT_RECVMSG, errno 0)");
    }
}

TEST(create_client_opts_takes_a_set_from_a_trusted_server) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    uint32_t uids[] = {u.uid};
    struct afdt_client_options o = {sizeof(o), 0, 1, uids};
    struct squatter s;
    start_squatter(&s, &u, user_tmp_path(&u, "ok"));
    struct async_result a = {event_base_new(), 0, 0, 0, AFDT_ERROR_T_INIT};
    struct timeval tv = {5, 0};
    CHECK_INT(afdt_create_client_opts(s.name, a.eb, (const uint8_t *)"give", 4, async_response,
                                      async_error, &tv, &o, &a),
              ==, 0);
    o.trusted_uids = NULL; /* the list was copied */
    o.n_trusted_uids = 0;
    uids[0] = 0;
    while (a.responses + a.errors == 0)
        CHECK_INT(event_base_loop(a.eb, EVLOOP_ONCE), >=, 0);
    CHECK_INT(a.responses, ==, 1);
    event_base_free(a.eb);
    CHECK_STR(squatter_saw(&s), "asked \"give\"");
}

TEST(the_1_0_clients_still_ask_whoever_answers) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct squatter s;
    start_squatter(&s, &u, abstract_name("old"));
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp), nfds = 0, nnamed = 0;
    struct afdt_named_fd *named = NULL;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client_ex(s.name, (const uint8_t *)"give", 4, resp, &len, NULL, &nfds,
                                  &named, &nnamed, &tv, &err),
              ==, 0);
    CHECK_INT(nnamed, ==, 1);
    afdt_named_fds_free(named, nnamed, 1);
    CHECK_STR(squatter_saw(&s), "asked \"give\"");
}

TEST(an_unprivileged_client_trusts_its_own_user_and_root) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct squatter own, root;
    start_squatter(&own, &u, abstract_name("own"));
    start_squatter(&root, NULL, abstract_name("root"));
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        drop_to_user(&u, 0);
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        CHECK_INT(sync_opts(own.name, NULL, &err), ==, 0);
        if (sync_opts(root.name, NULL, &err) < 0)
            harness_fail(__FILE__, __LINE__, "%s %s %d", afdt_operation_str(err.operation),
                         err.message, errno);
        _exit(0);
    }
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK_STR(squatter_saw(&own), "asked \"give\"");
    CHECK_STR(squatter_saw(&root), "asked \"give\"");
}

/* A server we trust, behind a name we do not: a socket file another user owns, a link. */
TEST(a_path_must_be_a_socket_file_a_trusted_user_owns) {
    struct test_user u;
    test_user("afdt-test-a", &u);
    struct squatter s;
    start_squatter(&s, NULL, tmp_path("chowned"));
    CHECK_INT(lchown(s.name, u.uid, u.gid), ==, 0);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(sync_opts(s.name, NULL, &err), <, 0);
    check_refused(&err, errno, u.uid);
    CHECK(strstr(err.message, "socket file") != NULL);

    const char *link = tmp_path("link");
    CHECK_INT(lchown(s.name, 0, 0), ==, 0);
    CHECK_INT(symlink(s.name, link), ==, 0);
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(sync_opts(link, NULL, &err), <, 0);
    CHECK_STR(afdt_operation_str(err.operation), "AFDT_PEER");
    CHECK_INT(errno, ==, EPERM);
    CHECK(strstr(err.message, "symbolic link") != NULL);
    CHECK_STR(squatter_saw(&s), "nothing (AFDT_RECVMSG, errno 0)");
}

TEST(client_options_are_checked) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct afdt_client_options zero = {0, 0, 0, NULL};
    struct afdt_client_options flags = {sizeof(flags), 0x80, 0, NULL};
    struct afdt_client_options no_list = {sizeof(no_list), 0, 3, NULL};
    const struct afdt_client_options *bad[] = {&zero, &flags, &no_list};
    for (int i = 0; i < 3; i++) {
        err = AFDT_ERROR_T_INIT;
        CHECK_INT(sync_opts("@afdt-test-nobody", bad[i], &err), <, 0);
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, EINVAL, errno);
        uint32_t sources = 0;
        err = AFDT_ERROR_T_INIT;
        CHECK_INT(get_web("@afdt-test-nobody", bad[i], &sources, &err), <, 0);
        CHECK_ERR(err, AFDT_NO_PHASE, AFDT_NO_OPERATION, EINVAL, errno);
        struct async_result a = {event_base_new(), 0, 0, 0, AFDT_ERROR_T_INIT};
        CHECK_INT(afdt_create_client_opts("@afdt-test-nobody", a.eb, NULL, 0, async_response,
                                          async_error, NULL, bad[i], &a),
                  <, 0);
        CHECK_INT(a.errors, ==, 1);
        CHECK_ERR(a.err, AFDT_CREATE_CLIENT, AFDT_NO_OPERATION, EINVAL, a.err_errno);
        event_base_free(a.eb);
    }
    /* An options struct from an older, shorter version: only size and flags. */
    struct afdt_client_options old = {offsetof(struct afdt_client_options, n_trusted_uids),
                                      AFDT_CLIENT_TRUST_ANY, 99, NULL};
    err = AFDT_ERROR_T_INIT;
    CHECK_INT(sync_opts("@afdt-test-nobody", &old, &err), <, 0);
    CHECK_ERR(err, AFDT_NO_PHASE, AFDT_CONNECT, ECONNREFUSED, errno);
}
