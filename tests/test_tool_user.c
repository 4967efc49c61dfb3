/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt serve --user, as the user it runs generations as would attack it: that user owns the
 * directory of its generations' NOTIFY_SOCKET, so nothing root does there may follow a link. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "helpers.h"
#include "tool_fixture.h"

struct race {
    char dir[256];    /* the notify directory, the user's */
    char victim[256]; /* a file of root's, mode 0600 */
};

/* As the user: the moment root's socket for the next generation appears at DIR/notify-N (just
 * bound), rename a link to the victim over it, so that anything root then does to that path by
 * name lands on the victim. */
static int race_links(void *arg) {
    const struct race *r = arg;
    char link[300], name[300];
    snprintf(link, sizeof(link), "%s/.link", r->dir);
    int64_t end = now_ms() + 60000;
    for (int next = 2; next < 100 && now_ms() < end && getppid() != 1;) {
        struct stat st;
        (void)symlink(r->victim, link);
        snprintf(name, sizeof(name), "%s/notify-%d", r->dir, next);
        if (lstat(name, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == 0) {
            (void)rename(link, name);
            next++;
        }
    }
    return 0;
}

/* The directory of @pid's NOTIFY_SOCKET. */
static void notify_dir_of(pid_t pid, char *buf, size_t size) {
    notify_socket_of(pid, buf, size);
    char *slash = strrchr(buf, '/');
    CHECK(slash != NULL);
    *slash = '\0';
}

TEST(the_user_of_a_generation_cannot_make_root_change_a_file_through_its_notify_directory) {
    struct test_user u;
    test_user("afdt-test-web", &u); /* skips unless root */
    become_subreaper();
    struct sv s;
    sv_init(&s);
    struct race r;
    char out[4096], user[64], pidline[64];
    snprintf(user, sizeof(user), "%s", u.name);
    snprintf(r.victim, sizeof(r.victim), "%s", tmp_path("victim"));
    write_file(r.victim, "root's\n");
    CHECK_INT(chmod(r.victim, 0600), ==, 0);
    SV_START(&s, "--listen", "web=tcp:127.0.0.1:0", "--user", user);
    int port = sv_port(&s, "web");
    CHECK(wait_log(s.log, "generation 1 started: pid ", 1));
    read_file(s.log, out, sizeof(out));
    const char *p = strstr(out, "generation 1 started: pid ");
    CHECK(p != NULL);
    snprintf(pidline, sizeof(pidline), "%s", p + strlen("generation 1 started: pid "));
    notify_dir_of((pid_t)atoi(pidline), r.dir, sizeof(r.dir));
    struct stat st;
    CHECK_INT(stat(r.dir, &st), ==, 0);
    CHECK_INT(st.st_uid, ==, u.uid); /* the user's own: the attack is possible at all */
    pid_t racer = spawn_as_user(&u, 0, race_links, &r);
    /* Each restart binds a new notify socket there, while the user swaps links in. */
    for (int i = 0; i < 30; i++)
        CHECK_INT(RUN_TOOL(out, "restart", "--control", s.ctl, "--wait"), ==, 0);
    kill(racer, SIGKILL);
    reap(racer, WAIT_MS);
    CHECK_INT(stat(r.victim, &st), ==, 0);
    CHECK_INT(st.st_mode & 0777, ==, 0600);
    CHECK_INT(st.st_uid, ==, 0);
    CHECK(tcp_gen(port) > 0);
    sv_stop(&s);
    check_no_children();
}
