/* SPDX-License-Identifier: BSD-3-Clause */
/* What the calls leave behind on failure, and replies at the edges of what the header allows. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

TEST(sync_client_ex_leaves_nfds_0_on_failure) {
    int fds[4] = {-1, -1, -1, -1};
    uint8_t resp[16];
    /* Nobody there: the connect fails. */
    uint32_t len = sizeof(resp), nfds = 4;
    CHECK_INT(afdt_sync_client_ex(tmp_path("nobody"), (const uint8_t *)"q", 1, resp, &len, fds,
                                  &nfds, NULL, NULL, NULL, NULL),
              <, 0);
    CHECK_INT(nfds, ==, 0);
    /* A listener that never answers: the exchange times out. */
    const char *path = tmp_path("silent");
    int l = afdt_listen(path, NULL);
    CHECK(l >= 0);
    struct timeval tv = {0, 100 * 1000};
    len = sizeof(resp);
    nfds = 4;
    CHECK_INT(afdt_sync_client_ex(path, (const uint8_t *)"q", 1, resp, &len, fds, &nfds, NULL, NULL,
                                  &tv, NULL),
              <, 0);
    CHECK_INT(errno, ==, ETIMEDOUT);
    CHECK_INT(nfds, ==, 0);
    close(l);
}

/* The server child: answers with a named set of one descriptor and no
 * content at all (content NULL, which the header allows when empty). */
static int answer_named_without_content(const struct afdt_peer *peer, const uint8_t *req,
                                        uint32_t req_len, struct afdt_reply *reply, void *ud) {
    (void)peer, (void)req, (void)req_len;
    static struct afdt_named_fd set[1];
    snprintf(set[0].name, sizeof(set[0].name), "one");
    set[0].fd = *(int *)ud;
    reply->content = NULL;
    reply->content_length = 0;
    reply->named = set;
    reply->nnamed = 1;
    return 0;
}

static void ignore_error(const struct afdt_error_t *err, void *ud) {
    (void)err, (void)ud;
}

struct serve_cfg {
    const char *path;
    int ready;
};

static int serve_named(void *arg) {
    struct serve_cfg *cfg = arg;
    struct event_base *eb = event_base_new();
    CHECK(eb != NULL);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    struct afdt_server_options o = {0};
    o.size = sizeof(o);
    o.request_handler = answer_named_without_content;
    o.error_handler = ignore_error;
    o.userdata = &fd;
    CHECK_INT(afdt_create_server_ex(cfg->path, eb, &o, NULL), >=, 0);
    CHECK_INT(write(cfg->ready, "r", 1), ==, 1);
    event_base_dispatch(eb);
    return 0;
}

TEST(server_sends_a_named_set_whose_content_is_null_and_empty) {
    const char *path = tmp_path("named");
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    struct serve_cfg cfg = {path, p[1]};
    pid_t pid = spawn(serve_named, &cfg);
    close(p[1]);
    char c;
    CHECK_INT(read(p[0], &c, 1), ==, 1);
    close(p[0]);
    uint8_t resp[16];
    uint32_t len = sizeof(resp), nfds = 0, nnamed = 0;
    struct afdt_named_fd *named = NULL;
    struct timeval tv = {10, 0};
    CHECK_INT(afdt_sync_client_ex(path, (const uint8_t *)"q", 1, resp, &len, NULL, &nfds, &named,
                                  &nnamed, &tv, NULL),
              ==, 0);
    CHECK_INT(len, ==, 0);
    CHECK_INT(nnamed, ==, 1);
    CHECK_STR(named[0].name, "one");
    afdt_named_fds_free(named, nnamed, 1);
    /* Still serving: under UBSan the memcpy from NULL killed it. */
    len = sizeof(resp);
    CHECK_INT(afdt_sync_client_ex(path, (const uint8_t *)"q", 1, resp, &len, NULL, &nfds, &named,
                                  &nnamed, &tv, NULL),
              ==, 0);
    afdt_named_fds_free(named, nnamed, 1);
    kill(pid, SIGKILL);
    wait_exit(pid);
}

/* In a child holding only descriptors 0-2 and two files at 3 and 4: whatever
 * the activation variables say, a failing afdt_listen_fds() closes neither. */
static int listen_fds_with(void *arg) {
    const char *const *vars = arg;
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    int a = open("/dev/null", O_RDONLY), b = open("/dev/null", O_RDONLY);
    CHECK_INT(a, ==, 3);
    CHECK_INT(b, ==, 4);
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", vars[0], 1);
    if (vars[1])
        setenv("LISTEN_FDNAMES", vars[1], 1);
    struct afdt_named_fd *set = NULL;
    CHECK_INT(afdt_listen_fds(1, &set, NULL), <, 0);
    CHECK(set == NULL);
    CHECK_INT(fcntl(3, F_GETFD), >=, 0);
    CHECK_INT(fcntl(4, F_GETFD), >=, 0);
    return 0;
}

TEST(listen_fds_closes_nothing_when_the_variables_lie_or_are_malformed) {
    static const char *const lying[] = {"3", NULL};           /* 5 is not open */
    static const char *const malformed[] = {"2", "only-one"}; /* two fds, one name */
    static const char *const overlong[] = {"2", "a:b:c"};     /* three names */
    const char *const *cases[] = {lying, malformed, overlong};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_INT(wait_exit(spawn(listen_fds_with, (void *)cases[i])), ==, 0);
}
