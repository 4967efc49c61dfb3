/* SPDX-License-Identifier: BSD-3-Clause */
/* Closing descriptors that came from a peer: untouched, and never waiting in the caller's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* A descriptor from a peer shares its open file description with the
 * sender's copy, so nothing here may change it (not even SO_LINGER: that
 * would rewrite the sender's socket).  close() itself can wait when ours is
 * the last reference: a socket set to linger waits out its unsent data, a
 * Unix socket releases what is queued in it (perhaps such a socket) in the
 * closing thread, a file on FUSE or a network file system waits for its
 * server to answer the flush, a terminal drains its output.  Those closes go
 * to one closer thread per process; what cannot wait is closed at once. */

/* File systems whose close() answers from the kernel alone. */
static const char *const local_fs[] = {"tmpfs", "ramfs", "ext2", "ext3",  "ext4",   "xfs",
                                       "btrfs", "f2fs",  "proc", "sysfs", "overlay"};

/* The type of the file system mount @mnt_id is on, from /proc/self/mountinfo
 * ("ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE OPTIONS"). */
static bool mount_is_local(uint64_t mnt_id) {
    FILE *m = fopen("/proc/self/mountinfo", "re");
    if (m == NULL)
        return false;
    bool local = false;
    char line[4096];
    while (fgets(line, sizeof(line), m)) {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(line, &end, 10);
        if (end == line || errno || id != mnt_id)
            continue;
        char *sep = strstr(line, " - ");
        if (sep) {
            char *type = sep + 3;
            type[strcspn(type, " \n")] = '\0';
            for (size_t i = 0; i < sizeof(local_fs) / sizeof(local_fs[0]); i++)
                local = local || strcmp(type, local_fs[i]) == 0;
        }
        break;
    }
    fclose(m);
    return local;
}

/* Whether closing @fd could wait for anything.  Only calls that never reach
 * a file system's server are made (statx with AT_STATX_DONT_SYNC answers
 * from the kernel's cache); when in doubt, the answer is yes. */
static bool close_may_wait(int fd) {
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_MNT_ID, &sx) < 0)
        return true;
    switch (sx.stx_mode & S_IFMT) {
    case 0: /* an anonymous inode: eventfd, epoll, timerfd, pidfd... */
    case S_IFIFO: /* a pipe's close only wakes its other end */ return false;
    case S_IFSOCK: {
        int domain = 0;
        struct linger l = {0, 0};
        socklen_t dlen = sizeof(domain), llen = sizeof(l);
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) < 0 ||
            getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &llen) < 0)
            return true;
        /* A Unix socket may hold sockets in flight that ours would release. */
        return domain == AF_UNIX || l.l_onoff;
    }
    case S_IFREG:
    case S_IFDIR:
        /* A file system on a block device is local; FUSE, network ones and
         * tmpfs have an anonymous device (major 0) and need a closer look. */
        if (sx.stx_dev_major != 0)
            return false;
        return !(sx.stx_mask & STATX_MNT_ID) || !mount_is_local(sx.stx_mnt_id);
    default: /* devices (a terminal drains on close), and whatever else */ return true;
    }
}

/* Past this many waiting descriptors (each one open, so RLIMIT_NOFILE bounds
 * them anyway), a close is made in the caller's thread. */
#define QUEUE_MAX 65536

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool running; /* the thread was started in this process */
    int *fds;     /* waiting to be closed, the closer's alone */
    uint32_t n, cap;
} closer = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, NULL, 0, 0};

/* fork() brings only the calling thread into the child: the lock is taken
 * around it so the queue is whole there, and the child, without a closer
 * thread, starts its own on its next close (what is queued is its copies). */
static void before_fork(void) {
    pthread_mutex_lock(&closer.lock);
}
static void after_fork_in_parent(void) {
    pthread_mutex_unlock(&closer.lock);
}
static void after_fork_in_child(void) {
    closer.running = false;
    pthread_cond_init(&closer.wake, NULL); /* forget the parent's waiter */
    pthread_mutex_unlock(&closer.lock);
}
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static bool fork_handlers_installed;
static void install_fork_handlers(void) {
    fork_handlers_installed =
        pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;
}

static void *closer_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&closer.lock);
    for (;;) {
        while (closer.n == 0)
            pthread_cond_wait(&closer.wake, &closer.lock);
        int fd = closer.fds[--closer.n];
        pthread_mutex_unlock(&closer.lock);
        afdt__close(fd);
        pthread_mutex_lock(&closer.lock);
    }
    return NULL;
}

/* Start the closer thread, detached, with every signal blocked (they are the
 * program's).  Called with the lock held. */
static bool start_closer(void) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return false;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    bool ok = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
              pthread_attr_setstacksize(&attr, 64 * 1024) == 0 &&
              pthread_create(&t, &attr, closer_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return ok;
}

/* Queue @fd for the closer thread; false when it cannot take it. */
static bool hand_to_closer(int fd) {
    if (pthread_once(&fork_handlers_once, install_fork_handlers) != 0 || !fork_handlers_installed)
        return false;
    bool queued = false;
    pthread_mutex_lock(&closer.lock);
    if (closer.n == closer.cap && closer.cap < QUEUE_MAX) {
        uint32_t cap = closer.cap ? closer.cap * 2 : 64;
        int *fds = realloc(closer.fds, cap * sizeof(int));
        if (fds) {
            closer.fds = fds;
            closer.cap = cap;
        }
    }
    if (closer.n < closer.cap && (closer.running || (closer.running = start_closer()))) {
        closer.fds[closer.n++] = fd;
        pthread_cond_signal(&closer.wake);
        queued = true;
    }
    pthread_mutex_unlock(&closer.lock);
    return queued;
}

void afdt__discard(int fd) {
    if (fd < 0)
        return;
    int saved = errno;
    if (!close_may_wait(fd) || !hand_to_closer(fd))
        afdt__close(fd);
    errno = saved;
}

void afdt__discard_all(int *fds, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        afdt__discard(fds[i]);
        fds[i] = -1;
    }
}
