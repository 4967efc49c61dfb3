/* SPDX-License-Identifier: BSD-3-Clause */
/* Whom a client trusts: the multi-user helpers, then who answers before a descriptor is taken. */
#include <errno.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
