/* SPDX-License-Identifier: BSD-3-Clause */
/* Descriptors from a peer that the library drops: closed without changing them (their options are
 * the sender's too) and without making the caller wait. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

/* A loopback TCP socket set to linger {1, 4}: the sender's setting, which no
 * receiver may change. */
static int tcp_lingering_4s(void) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    struct linger lg = {1, 4};
    CHECK_INT(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), ==, 0);
    return s;
}

static void check_still_lingers_4s(int s) {
    struct linger lg = {0, 0};
    socklen_t len = sizeof(lg);
    CHECK_INT(getsockopt(s, SOL_SOCKET, SO_LINGER, &lg, &len), ==, 0);
    CHECK_INT(lg.l_onoff, !=, 0);
    CHECK_INT(lg.l_linger, ==, 4);
}

/* A pipe whose read end travels with the socket: once the receiver has
 * dropped everything it got, the write end sees no reader left. */
struct probe {
    int r, w;
};

static struct probe make_probe(void) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    return (struct probe){p[0], p[1]};
}

/* Wait (at most 10 s) until the receiver has let go of the probe's read end. */
static void wait_dropped(struct probe *pr) {
    struct pollfd p = {pr->w, POLLOUT, 0};
    for (int64_t give_up = now_ms() + 10000; now_ms() < give_up; sleep_ms(10)) {
        CHECK_INT(poll(&p, 1, 0), >=, 0);
        if (p.revents & POLLERR)
            break;
    }
    CHECK(p.revents & POLLERR);
    close(pr->w);
}

/* What each receiver does with a frame of {socket, probe} (or more): it drops
 * what it has no room for, or everything when the frame fails. */
enum receiver {
    COMPAT_FD_MSG,     /* afdt_recv_fd_msg: keeps the first, drops the rest */
    COMPAT_PLAIN_MSG,  /* afdt_recv_plain_msg: drops all */
    COMPAT_TOO_LONG,   /* afdt_recv_fd_msg with too small a buffer: fails, drops all */
    EXT_OVER_CAPACITY, /* afdt_recv_fds_msg with room for one: fails EMSGSIZE, drops all */
    EXT_CUT_SHORT,     /* afdt_recv_fds_msg of a frame cut short by end of file */
};

static void receive_and_drop(enum receiver how, int sock) {
    uint8_t buf[64];
    uint32_t len = how == COMPAT_TOO_LONG ? 2 : sizeof(buf);
    int fd = -1, fds[1] = {-1};
    uint32_t cap = 1;
    switch (how) {
    case COMPAT_FD_MSG:
        CHECK_INT(afdt_recv_fd_msg(sock, buf, &len, &fd, NULL), ==, 0);
        CHECK(fd >= 0);
        close(fd); /* the first one, ours: a file */
        break;
    case COMPAT_PLAIN_MSG: CHECK_INT(afdt_recv_plain_msg(sock, buf, &len, NULL), ==, 0); break;
    case COMPAT_TOO_LONG:
        CHECK_INT(afdt_recv_fd_msg(sock, buf, &len, &fd, NULL), <, 0);
        CHECK_INT(fd, <, 0);
        break;
    case EXT_OVER_CAPACITY:
        CHECK_INT(afdt_recv_fds_msg(sock, buf, &len, fds, &cap, NULL), <, 0);
        CHECK_INT(errno, ==, EMSGSIZE);
        break;
    case EXT_CUT_SHORT: CHECK_INT(afdt_recv_fds_msg(sock, buf, &len, fds, &cap, NULL), <, 0); break;
    }
}

TEST(receivers_leave_the_senders_linger_setting_alone) {
    for (enum receiver how = COMPAT_FD_MSG; how <= EXT_CUT_SHORT; how++) {
        int sv[2];
        make_pair(sv);
        int s = tcp_lingering_4s();
        struct probe pr = make_probe();
        int file = make_file("first");
        /* The socket second: a 2009 receiver keeps only the first. */
        int fds[3] = {file, s, pr.r};
        if (how == EXT_CUT_SHORT) {
            /* A frame announcing 20 bytes, carrying 4 and the descriptors,
             * then end of file. */
            uint8_t frame[8] = {20, 0, 0, 0, 'c', 'u', 't', '!'};
            CHECK_INT(raw_sendmsg(sv[0], frame, sizeof(frame), fds, 3), ==, (ssize_t)sizeof(frame));
            shutdown(sv[0], SHUT_WR);
        } else {
            CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"socket", 6, fds, 3, NULL), ==, 0);
        }
        close(file);
        close(pr.r);
        receive_and_drop(how, sv[1]);
        wait_dropped(&pr);
        check_still_lingers_4s(s);
        close(s);
        close(sv[0]);
        close(sv[1]);
    }
}

/* The server child: answers every request with "ok" and no descriptor. */
static int answer_ok(const uint8_t *req, uint32_t req_len, uint8_t *resp, uint32_t *resp_len,
                     void *ud) {
    (void)req, (void)req_len, (void)ud;
    memcpy(resp, "ok", 2);
    *resp_len = 2;
    return -1;
}

static void ignore_error(const struct afdt_error_t *err, void *ud) {
    (void)err, (void)ud;
}

struct server_cfg {
    const char *path;
    int ready; /* written once the server listens */
};

static int serve(void *arg) {
    struct server_cfg *cfg = arg;
    struct event_base *eb = event_base_new();
    CHECK(eb != NULL);
    CHECK_INT(afdt_create_server(cfg->path, eb, answer_ok, NULL, ignore_error, NULL, NULL), >=, 0);
    CHECK_INT(write(cfg->ready, "r", 1), ==, 1);
    event_base_dispatch(eb);
    return 0;
}

static pid_t start_server(const char *path) {
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    struct server_cfg cfg = {path, p[1]};
    pid_t pid = spawn(serve, &cfg);
    close(p[1]);
    char c;
    CHECK_INT(read(p[0], &c, 1), ==, 1);
    close(p[0]);
    return pid;
}

static void stop_server(pid_t pid) {
    kill(pid, SIGKILL);
    wait_exit(pid);
}

TEST(server_leaves_the_linger_setting_of_descriptors_sent_with_a_request_alone) {
    const char *path = tmp_path("srv");
    pid_t pid = start_server(path);
    int s = tcp_lingering_4s();
    struct probe pr = make_probe();
    int conn = afdt_connect(path, NULL);
    CHECK(conn >= 0);
    int fds[2] = {s, pr.r};
    CHECK_INT(afdt_send_fds_msg(conn, (const uint8_t *)"req", 3, fds, 2, NULL), ==, 0);
    close(pr.r);
    uint8_t buf[16];
    uint32_t len = sizeof(buf);
    int got = -1;
    CHECK_INT(afdt_recv_fd_msg(conn, buf, &len, &got, NULL), ==, 0);
    CHECK_INT(len, ==, 2);
    CHECK_INT(got, <, 0);
    wait_dropped(&pr);
    check_still_lingers_4s(s);
    close(s);
    close(conn);
    stop_server(pid);
}

TEST(dropping_a_unix_socket_holding_a_lingering_socket_returns_at_once) {
    /* The lingering socket, with unsent data, sits in flight in a Unix
     * socket's queue; that Unix socket is then sent and dropped.  Its close
     * is the last reference to both, which would wait out the linger (5 s)
     * in the closing thread. */
    int peer, l;
    int lingering = lingering_socket(&peer, &l);
    int carrier[2];
    make_pair(carrier);
    CHECK_INT(raw_sendmsg(carrier[0], "L", 1, &lingering, 1), ==, 1);
    close(lingering);
    close(carrier[0]);
    int sv[2];
    make_pair(sv);
    int file = make_file("kept");
    int fds[2] = {file, carrier[1]};
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"nested", 6, fds, 2, NULL), ==, 0);
    close(file);
    close(carrier[1]);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = -1;
    int64_t t0 = now_ms();
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    CHECK_INT(now_ms() - t0, <, 2500); /* 5,000 if the close lingered here */
    check_file_contents(fd, "kept");
    close(fd);
    close(peer); /* the lingering close, wherever it is, ends now */
    close(l);
    close(sv[0]);
    close(sv[1]);
}

TEST(a_child_of_fork_drops_descriptors_without_waiting_too) {
    /* The closer thread does not survive fork(): the child starts its own. */
    int sv[2];
    make_pair(sv);
    int warm = make_file("x");
    int carrier[2];
    make_pair(carrier);
    int fds[2] = {warm, carrier[0]}; /* the Unix socket goes to the closer thread */
    CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"a", 1, fds, 2, NULL), ==, 0);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    int fd = -1;
    CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
    close(fd);
    close(carrier[0]);
    struct pollfd p = {carrier[1], POLLIN, 0};
    CHECK_INT(poll(&p, 1, 5000), ==, 1); /* dropped: end of file */
    close(carrier[1]);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int c[2];
        make_pair(c);
        int more[2] = {warm, c[0]};
        CHECK_INT(afdt_send_fds_msg(sv[0], (const uint8_t *)"b", 1, more, 2, NULL), ==, 0);
        close(c[0]);
        len = sizeof(buf);
        CHECK_INT(afdt_recv_fd_msg(sv[1], buf, &len, &fd, NULL), ==, 0);
        close(fd);
        struct pollfd q = {c[1], POLLIN, 0};
        _exit(poll(&q, 1, 5000) == 1 ? 0 : 1);
    }
    CHECK_INT(wait_exit(pid), ==, 0);
    close(warm);
    close(sv[0]);
    close(sv[1]);
}

/* ---------------------------------------------------------------------------
 * A file on a FUSE file system whose server stops answering: every close of
 * it sends FLUSH and waits for the answer.  The server here is a few lines
 * over /dev/fuse, enough to look up and open one file.
 * ------------------------------------------------------------------------- */

struct fuse_srv {
    int dev;             /* /dev/fuse, the connection */
    pid_t pid;           /* the server child */
    char dir[128];       /* the mount point */
    volatile int *stall; /* shared: answer no FLUSH from now on */
};

static void fuse_reply(int dev, uint64_t unique, int error, const void *body, size_t len) {
    struct fuse_out_header h = {(uint32_t)(sizeof(h) + len), error, unique};
    struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)body, len}};
    (void)!writev(dev, iov, body ? 2 : 1);
}

static void fuse_attr_of(uint64_t node, struct fuse_attr *a) {
    memset(a, 0, sizeof(*a));
    a->ino = node;
    a->mode = node == FUSE_ROOT_ID ? S_IFDIR | 0755 : S_IFREG | 0644;
    a->nlink = 1;
}

static int fuse_serve(void *arg) {
    struct fuse_srv *fs = arg;
    static uint8_t buf[1 << 17];
    for (;;) {
        ssize_t n = read(fs->dev, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < (ssize_t)sizeof(struct fuse_in_header))
            return 0;
        struct fuse_in_header *in = (void *)buf;
        const void *body = buf + sizeof(*in);
        switch (in->opcode) {
        case FUSE_INIT: {
            const struct fuse_init_in *ii = body;
            struct fuse_init_out o = {0};
            o.major = FUSE_KERNEL_VERSION;
            o.minor = ii->minor < FUSE_KERNEL_MINOR_VERSION ? ii->minor : FUSE_KERNEL_MINOR_VERSION;
            o.max_write = 4096;
            fuse_reply(fs->dev, in->unique, 0, &o, sizeof(o));
            break;
        }
        case FUSE_LOOKUP: {
            if (strcmp(body, "f") != 0) {
                fuse_reply(fs->dev, in->unique, -ENOENT, NULL, 0);
                break;
            }
            struct fuse_entry_out o = {0};
            o.nodeid = 2;
            o.entry_valid = o.attr_valid = 3600;
            fuse_attr_of(2, &o.attr);
            fuse_reply(fs->dev, in->unique, 0, &o, sizeof(o));
            break;
        }
        case FUSE_GETATTR: {
            struct fuse_attr_out o = {0};
            o.attr_valid = 3600;
            fuse_attr_of(in->nodeid, &o.attr);
            fuse_reply(fs->dev, in->unique, 0, &o, sizeof(o));
            break;
        }
        case FUSE_OPEN: {
            struct fuse_open_out o = {0};
            o.fh = 1;
            fuse_reply(fs->dev, in->unique, 0, &o, sizeof(o));
            break;
        }
        case FUSE_FLUSH:
            if (!*fs->stall)
                fuse_reply(fs->dev, in->unique, 0, NULL, 0);
            break;
        case FUSE_RELEASE: fuse_reply(fs->dev, in->unique, 0, NULL, 0); break;
        case FUSE_INTERRUPT:
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET: break;
        default: fuse_reply(fs->dev, in->unique, -ENOSYS, NULL, 0); break;
        }
    }
}

/* Mount the server, or skip the test when this machine cannot. */
static void fuse_start(struct fuse_srv *fs) {
    if (access("/dev/fuse", F_OK) != 0)
        harness_skip("no /dev/fuse on this machine: the FUSE case cannot run here");
    fs->dev = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fs->dev < 0)
        harness_skip("/dev/fuse cannot be opened here: the FUSE case cannot run");
    snprintf(fs->dir, sizeof(fs->dir), "%s", tmp_path("fuse"));
    CHECK_INT(mkdir(fs->dir, 0755), ==, 0);
    char opts[128];
    snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=%u,group_id=%u", fs->dev,
             (unsigned)getuid(), (unsigned)getgid());
    if (mount("afdt-test", fs->dir, "fuse", MS_NOSUID | MS_NODEV, opts) != 0) {
        int e = errno;
        close(fs->dev);
        rmdir(fs->dir);
        if (e == EPERM || e == ENODEV || e == EACCES)
            harness_skip("cannot mount a FUSE file system here (not privileged, or no FUSE "
                         "support): the FUSE case cannot run");
        harness_fail(__FILE__, __LINE__, "mount fuse: %s", strerror(e));
    }
    fs->stall = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(fs->stall != MAP_FAILED);
    *fs->stall = 0;
    fs->pid = spawn(fuse_serve, fs);
}

/* Stop the server: the connection is aborted, so a FLUSH still waiting fails. */
static void fuse_stop(struct fuse_srv *fs) {
    kill(fs->pid, SIGKILL);
    wait_exit(fs->pid);
    close(fs->dev);
    CHECK_INT(umount2(fs->dir, MNT_DETACH), ==, 0);
    rmdir(fs->dir);
    munmap((void *)fs->stall, sizeof(int));
}

struct dropper {
    int sock;
    int done;     /* written to once the receive returned */
    int fuse_dev; /* not ours: the connection must end when the server's ends */
};

static int drop_what_arrives(void *arg) {
    struct dropper *d = arg;
    close(d->fuse_dev);
    uint8_t buf[8];
    uint32_t len = sizeof(buf);
    if (afdt_recv_plain_msg(d->sock, buf, &len, NULL) != 0)
        return 1;
    return write(d->done, "d", 1) == 1 ? 0 : 1;
}

TEST(dropping_a_file_whose_fuse_server_stalls_returns_at_once) {
    struct fuse_srv fs;
    fuse_start(&fs);
    char path[160];
    snprintf(path, sizeof(path), "%s/f", fs.dir);
    int file = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(file >= 0);
    int sv[2];
    make_pair(sv);
    CHECK_INT(afdt_send_fd_msg(sv[0], (const uint8_t *)"fuse", 4, file, NULL), ==, 0);
    close(file); /* answered: the server still flushes */
    *fs.stall = 1;
    /* The receiver's copy is now the last: its close would wait for a FLUSH
     * that never comes (and, forced, cannot even be killed).  A child
     * receives, so a stuck close cannot hang us; it says when it returned. */
    int p[2];
    CHECK_INT(pipe2(p, O_CLOEXEC), ==, 0);
    struct dropper d = {sv[1], p[1], fs.dev};
    pid_t pid = spawn(drop_what_arrives, &d);
    close(p[1]);
    struct pollfd pf = {p[0], POLLIN, 0};
    int ready = poll(&pf, 1, 5000);
    char c = 0;
    bool returned = ready == 1 && read(p[0], &c, 1) == 1;
    close(p[0]);
    /* Stopping the server aborts the connection: the FLUSH fails and the
     * child, wherever its close waited, can exit. */
    fuse_stop(&fs);
    CHECK_INT(wait_exit(pid), ==, 0);
    CHECK(returned); /* false: still in its close after 5 s */
    close(sv[0]);
    close(sv[1]);
}
