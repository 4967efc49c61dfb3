/* SPDX-License-Identifier: BSD-3-Clause */
/* The patterns of libafdt's one public 2009 user (HHVM), end to end. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

/* --- The takeover agent --------------------------------------------------- */

struct agent {
    struct event_base *eb;
    void *handle;
    int listen_fd;
    const char *path;
};

/* Two-byte commands, as HHVM's agent speaks: "fd" hands over the listening
 * socket, "tm" closes the agent's server from inside this handler and must
 * still be answered. */
static int agent_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                         void *ud) {
    struct agent *a = ud;
    memcpy(resp, "ok", 2);
    *resp_len = 2;
    if (len == 2 && memcmp(req, "fd", 2) == 0)
        return a->listen_fd;
    if (len == 2 && memcmp(req, "tm", 2) == 0) {
        afdt_close_server(a->handle);
        return -1;
    }
    memcpy(resp, "??", 2);
    return -1;
}

static void agent_error(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    fprintf(stderr, "agent: %s %s %s\n", afdt_phase_str(e->phase), afdt_operation_str(e->operation),
            e->message);
}

struct old_server {
    const char *path;
    int ready[2];
};

/* The running server: a TCP listener, offered through its agent.  It exits 0
 * once the agent was told to terminate and the loop ran dry by itself. */
static int old_server(void *arg) {
    struct old_server *o = arg;
    struct agent a = {event_base_new(), NULL, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0),
                      o->path};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (a.listen_fd < 0 || bind(a.listen_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(a.listen_fd, 16) < 0)
        return 2;
    /* As HHVM does: remove whatever is at the path, then serve there. */
    unlink(o->path);
    if (afdt_create_server(o->path, a.eb, agent_request, afdt_no_post, agent_error, &a.handle, &a) <
        0)
        return 3;
    if (write(o->ready[1], "r", 1) != 1)
        return 4;
    event_base_dispatch(a.eb); /* returns once "tm" closed the server */
    event_base_free(a.eb);
    close(a.listen_fd);
    return 0;
}

TEST(takeover_agent_hands_over_its_listener_and_terminates_answering) {
    struct old_server o = {tmp_path("agent"), {-1, -1}};
    CHECK_INT(pipe2(o.ready, O_CLOEXEC), ==, 0);
    pid_t pid = spawn(old_server, &o);
    char c;
    CHECK_INT(read(o.ready[0], &c, 1), ==, 1);

    /* The new server asks with two-byte requests and a three-byte buffer. */
    uint8_t resp[3];
    uint32_t len = sizeof(resp);
    int fd = -1;
    struct timeval tv = {5, 0};
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_sync_client(o.path, (const uint8_t *)"fd", 2, resp, &len, &fd, &tv, &err), ==,
              0);
    CHECK_INT(len, ==, 2);
    CHECK_MEM(resp, "ok", 2);
    CHECK(fd >= 0);
    CHECK(is_cloexec(fd));
    int listening = 0;
    socklen_t optlen = sizeof(listening);
    CHECK_INT(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen), ==, 0);
    CHECK_INT(listening, ==, 1);

    /* Then tells the old one to terminate: it closes its server inside the
     * request handler, and the answer still arrives. */
    len = sizeof(resp);
    int none = -5;
    CHECK_INT(afdt_sync_client(o.path, (const uint8_t *)"tm", 2, resp, &len, &none, &tv, &err), ==,
              0);
    CHECK_INT(len, ==, 2);
    CHECK_MEM(resp, "ok", 2);
    CHECK_INT(none, ==, -1);
    /* Its loop runs dry by itself: the closed server holds no event. */
    CHECK_INT(wait_exit(pid), ==, 0);

    /* The new server takes the agent's name the way HHVM does (unlink, which
     * may find nothing, then create) and hands the same listener on. */
    struct event_base *eb = event_base_new();
    struct agent mine = {eb, NULL, fd, o.path};
    (void)unlink(o.path);
    CHECK_INT(afdt_create_server(o.path, eb, agent_request, afdt_no_post, agent_error, &mine.handle,
                                 &mine),
              >=, 0);
    /* A later generation asks the new agent, from another process. */
    pid_t asker = fork();
    if (asker == 0) {
        int got = -1;
        uint32_t l = sizeof(resp);
        int r = afdt_sync_client(o.path, (const uint8_t *)"fd", 2, resp, &l, &got, &tv, NULL);
        _exit(r == 0 && got >= 0 && same_file(got, fd) ? 0 : 1);
    }
    int st = -1;
    pid_t w;
    while ((w = waitpid(asker, &st, WNOHANG)) == 0)
        CHECK_INT(event_base_loop(eb, EVLOOP_ONCE | EVLOOP_NONBLOCK), >=, 0);
    CHECK_INT(w, ==, asker);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_INT(afdt_close_server(mine.handle), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
    close(fd);
    close(o.ready[0]);
    close(o.ready[1]);
}

/* --- Light processes -------------------------------------------------------- */

/* HHVM's own raw message: one recvmsg that must return exactly @n bytes. */
static void raw_recv_exactly(int s, void *buf, size_t n) {
    struct iovec iov = {buf, n};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    CHECK_INT(recvmsg(s, &msg, 0), ==, n);
}

static void raw_send(int s, const void *buf, size_t n) {
    struct iovec iov = {(void *)buf, n};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    CHECK_INT(sendmsg(s, &msg, 0), ==, n);
}

/* The light process: raw command, empty descriptor frame, raw arguments,
 * several times over one stream; it answers each with its own raw status. */
static int light_process(void *arg) {
    int s = *(int *)arg;
    for (int round = 0; round < 20; round++) {
        char cmd[4];
        raw_recv_exactly(s, cmd, sizeof(cmd));
        CHECK_MEM(cmd, "popn", 4);
        int fd = -1;
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        if (round % 2) {
            /* Newer HHVM: no buffer at all. */
            uint32_t len = 0;
            CHECK_INT(afdt_recv_fd_msg(s, NULL, &len, &fd, &err), ==, 0);
            CHECK_INT(len, ==, 0);
        } else {
            /* Older HHVM: a full buffer and a length it never set. */
            uint8_t buf[AFDT_MSGLEN];
            uint32_t len = 0xdeadbeef;
            CHECK_INT(afdt_recv_fd_msg(s, buf, &len, &fd, &err), ==, 0);
            CHECK_INT(len, ==, 0);
        }
        CHECK(fd >= 0);
        char args[6];
        raw_recv_exactly(s, args, sizeof(args));
        CHECK_MEM(args, "ls -l\n", 6);
        /* Prove the descriptor is the parent's file: write the round into it. */
        char b = (char)('a' + round);
        CHECK_INT(pwrite(fd, &b, 1, round), ==, 1);
        close(fd);
        raw_send(s, "done", 4);
    }
    return 0;
}

TEST(light_process_interleaves_empty_descriptor_frames_with_raw_messages) {
    int sv[2];
    make_pair(sv);
    int file = make_file("");
    pid_t pid = spawn(light_process, &sv[1]);
    for (int round = 0; round < 20; round++) {
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        raw_send(sv[0], "popn", 4);
        CHECK_INT(afdt_send_fd_msg(sv[0], NULL, 0, file, &err), ==, 0);
        raw_send(sv[0], "ls -l\n", 6);
        char status[4];
        raw_recv_exactly(sv[0], status, sizeof(status));
        CHECK_MEM(status, "done", 4);
    }
    CHECK_INT(wait_exit(pid), ==, 0);
    char seen[21] = {0};
    CHECK_INT(pread(file, seen, 20, 0), ==, 20);
    CHECK_STR(seen, "abcdefghijklmnopqrst");
    close(file);
    close(sv[0]);
    close(sv[1]);
}
