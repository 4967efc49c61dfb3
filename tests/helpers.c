/* SPDX-License-Identifier: BSD-3-Clause */
/* Test helpers that know libafdt: a recorder of client callbacks, a full descriptor table,
 * callbacks queued in order, unprivileged users to test as. */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

void reply_init(struct reply *r, struct event_base *eb) {
    memset(r, 0, sizeof(*r));
    r->eb = eb;
    r->break_loop = true;
    r->fd = -100;
    r->err_errno = -1;
}

void reply_on_response(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    struct reply *r = ud;
    r->calls++;
    r->responses++;
    memcpy(r->buf, resp, len);
    r->len = len;
    r->fd = fd;
    r->fd_open_in_handler = fd >= 0 && fcntl(fd, F_GETFD) >= 0;
    if (r->break_loop)
        event_base_loopbreak(r->eb);
}

void reply_on_error(const struct afdt_error_t *e, void *ud) {
    int saved = errno;
    struct reply *r = ud;
    r->calls++;
    r->errors++;
    r->err = *e;
    r->err_errno = saved;
    if (r->break_loop)
        event_base_loopbreak(r->eb);
}

void wait_reply(struct reply *r) {
    while (r->calls == 0)
        CHECK_INT(event_base_loop(r->eb, EVLOOP_ONCE), >=, 0);
}

void fill_descriptors(struct fill *f, unsigned limit) {
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    f->old_limit = rl.rlim_cur;
    rl.rlim_cur = limit;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    f->n = 0;
    for (;;) {
        int d = fcntl(0, F_DUPFD_CLOEXEC, 0);
        if (d < 0) {
            CHECK_INT(errno, ==, EMFILE);
            return;
        }
        CHECK(f->n < (int)(sizeof(f->fds) / sizeof(f->fds[0])));
        f->fds[f->n++] = d;
    }
}

void release_descriptors(struct fill *f) {
    for (int i = 0; i < f->n; i++)
        close(f->fds[i]);
    f->n = 0;
    struct rlimit rl;
    CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    rl.rlim_cur = (rlim_t)f->old_limit;
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
}

void queue_pair(struct queued_pair *q, struct event_base *eb, event_callback_fn first,
                event_callback_fn then, void *arg) {
    event_assign(&q->first, eb, -1, 0, first, arg);
    event_assign(&q->then, eb, -1, 0, then, arg);
    event_active(&q->first, EV_TIMEOUT, 0); /* the active queue keeps this order */
    event_active(&q->then, EV_TIMEOUT, 0);
}

/* Look @name up; 1 when found (filling *@ret), 0 when there is no such user. */
static int lookup_user(const char *name, struct test_user *ret) {
    struct passwd pw, *found = NULL;
    char buf[4096];
    errno = 0;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &found) != 0 || found == NULL)
        return 0;
    snprintf(ret->name, sizeof(ret->name), "%s", name);
    ret->uid = pw.pw_uid;
    ret->gid = pw.pw_gid;
    return 1;
}

/* Run useradd for @name; its exit code, or -1 when it could not be run. */
static int run_useradd(const char *name) {
    const char *const paths[] = {"/usr/sbin/useradd", "/sbin/useradd"};
    const char *useradd = NULL;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (access(paths[i], X_OK) == 0)
            useradd = paths[i];
    if (useradd == NULL)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0)
            dup2(null, 1); /* keep stderr: its reason is worth reading when it fails */
        execl(useradd, "useradd", "--system", "--user-group", "--no-create-home", "--shell",
              "/usr/sbin/nologin", name, (char *)NULL);
        _exit(127);
    }
    return wait_exit(pid);
}

int test_user_try(const char *name, struct test_user *ret) {
    if (strlen(name) >= sizeof(ret->name)) {
        fprintf(stderr, "test user name too long: %s\n", name);
        return -1;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "not root: cannot create or become the test user %s\n", name);
        return -1;
    }
    if (lookup_user(name, ret))
        return 0;
    /* Tests running at the same time may create the same user, or hold the passwd lock
     * (useradd then fails at once): look again after each try. */
    for (int attempt = 0; attempt < 50; attempt++) {
        int rc = run_useradd(name);
        if (lookup_user(name, ret))
            return 0;
        if (rc < 0) {
            fprintf(stderr, "no useradd on this machine: cannot create the test user %s\n", name);
            return -1;
        }
        sleep_ms(100);
    }
    fprintf(stderr, "useradd could not create the test user %s\n", name);
    return -1;
}

void test_user(const char *name, struct test_user *ret) {
    if (test_user_try(name, ret) < 0)
        harness_skip("this multi-user test needs root (to create and become an unprivileged "
                     "user); run it as root");
}

void test_user_or_self(const char *name, struct test_user *ret) {
    if (geteuid() == 0) {
        test_user(name, ret);
        return;
    }
    snprintf(ret->name, sizeof(ret->name), "uid-%u", (unsigned)geteuid());
    ret->uid = geteuid();
    ret->gid = getegid();
}

void drop_to_user(const struct test_user *u, unsigned nofile) {
    CHECK(u->uid != 0 && u->gid != 0);
    if (nofile > 0) {
        struct rlimit rl = {nofile, nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            /* valgrind keeps the hard limit to itself: lower the soft one only. */
            CHECK_INT(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
            rl.rlim_cur = nofile;
            CHECK_INT(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        }
    }
    if (geteuid() != 0 && u->uid == geteuid())
        return; /* from test_user_or_self: already the user, and nothing more */
    CHECK_INT(setgroups(0, NULL), ==, 0);
    CHECK_INT(setresgid(u->gid, u->gid, u->gid), ==, 0);
    CHECK_INT(setresuid(u->uid, u->uid, u->uid), ==, 0);
    /* No way back: real, effective and saved ids are all the user's, and no group is root's. */
    uid_t r, e, sv;
    CHECK_INT(getresuid(&r, &e, &sv), ==, 0);
    CHECK(r == u->uid && e == u->uid && sv == u->uid);
    CHECK_INT(getgroups(0, NULL), ==, 0);
    CHECK(setuid(0) < 0 && seteuid(0) < 0 && setgid(0) < 0);
}

pid_t spawn_as_user(const struct test_user *u, unsigned nofile, int (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        harness_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (pid == 0) {
        drop_to_user(u, nofile);
        _exit(fn(arg));
    }
    return pid;
}

const char *user_tmp_path(const struct test_user *u, const char *tag) {
    static char paths[64][128];
    static int n;
    char dir[96];
    /* Others may pass through the private directory (not list it) to reach their own. */
    CHECK_INT(chmod(tmp_dir(), 0711), ==, 0);
    snprintf(dir, sizeof(dir), "%s/%s", tmp_dir(), u->name);
    if (mkdir(dir, 0700) == 0)
        CHECK_INT(chown(dir, u->uid, u->gid), ==, 0);
    else
        CHECK_INT(errno, ==, EEXIST);
    char *p = paths[n++ % 64];
    snprintf(p, sizeof(paths[0]), "%s/%s-%d.sock", dir, tag, n);
    return p;
}
