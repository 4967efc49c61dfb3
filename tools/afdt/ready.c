/* SPDX-License-Identifier: BSD-3-Clause */
/* Sees from /proc whether a process waits to accept on given listening sockets. */
#include "ready.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Enough for any real server's polled set; a longer one is looked at in part. */
#define MAX_POLLED 1024

/* A descriptor of the process that is one of the sockets asked about. */
struct held {
    int fd;
    size_t idx;
};

struct proc_view {
    pid_t pid;
    const unsigned long *inos;
    size_t n;
    bool *seen;
    struct held *held;
    size_t nheld, cap;
    bool unsure;
};

unsigned long ready_socket_inode(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    return (unsigned long)st.st_ino;
}

static int find_ino(const struct proc_view *v, unsigned long ino) {
    for (size_t i = 0; i < v->n; i++)
        if (v->inos[i] == ino)
            return (int)i;
    return -1;
}

static void mark_fd(struct proc_view *v, long fd) {
    for (size_t i = 0; i < v->nheld; i++)
        if (v->held[i].fd == fd)
            v->seen[v->held[i].idx] = true;
}

static int add_held(struct proc_view *v, int fd, size_t idx) {
    if (v->nheld == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        struct held *h = realloc(v->held, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        v->held = h;
        v->cap = cap;
    }
    v->held[v->nheld++] = (struct held){fd, idx};
    return 0;
}

/* An epoll set's fdinfo lists each watched file as "tfd: N events: MASK data: D pos:P ino:I". */
static void scan_epoll(struct proc_view *v, const char *fdname) {
    char path[320], *line = NULL;
    size_t size = 0;
    snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)v->pid, fdname);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    while (getline(&line, &size, f) > 0) {
        unsigned int events;
        unsigned long ino;
        const char *p = strstr(line, " ino:");
        if (strncmp(line, "tfd:", 4) != 0 || p == NULL ||
            sscanf(line, "tfd: %*d events: %x", &events) != 1 || sscanf(p, " ino:%lx", &ino) != 1)
            continue;
        int idx = find_ino(v, ino);
        if (idx >= 0 && (events & POLLIN))
            v->seen[idx] = true;
    }
    free(line);
    fclose(f);
}

static int scan_fds(struct proc_view *v) {
    char path[64], link[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)v->pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? -ESRCH : -errno;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        ssize_t len = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
        if (len <= 0)
            continue;
        link[len] = '\0';
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) == 1) {
            int idx = find_ino(v, ino);
            if (idx >= 0 && (rc = add_held(v, atoi(de->d_name), (size_t)idx)) < 0)
                break;
        } else if (strcmp(link, "anon_inode:[eventpoll]") == 0) {
            scan_epoll(v, de->d_name);
        }
    }
    closedir(d);
    return rc;
}

static bool read_remote(pid_t pid, unsigned long addr, void *buf, size_t len) {
    struct iovec local = {buf, len}, remote = {(void *)addr, len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len;
}

static void scan_poll(struct proc_view *v, pid_t tid, unsigned long addr, unsigned long nfds) {
    struct pollfd pfds[64];
    for (unsigned long done = 0; done < nfds && done < MAX_POLLED;) {
        size_t k = nfds - done < 64 ? nfds - done : 64;
        if (!read_remote(tid, addr + done * sizeof(pfds[0]), pfds, k * sizeof(pfds[0])))
            return;
        for (size_t i = 0; i < k; i++)
            if (pfds[i].events & POLLIN)
                mark_fd(v, pfds[i].fd);
        done += k;
    }
}

static void scan_select(struct proc_view *v, pid_t tid, unsigned long nfds, unsigned long addr) {
    enum { BITS = 8 * sizeof(unsigned long) };
    unsigned long set[MAX_POLLED / BITS];
    if (addr == 0 || nfds == 0)
        return;
    if (nfds > MAX_POLLED)
        nfds = MAX_POLLED;
    size_t words = (nfds + BITS - 1) / BITS;
    if (!read_remote(tid, addr, set, words * sizeof(set[0])))
        return;
    for (size_t i = 0; i < v->nheld; i++) {
        unsigned long fd = (unsigned long)v->held[i].fd;
        if (fd < nfds && (set[fd / BITS] >> (fd % BITS)) & 1UL)
            v->seen[v->held[i].idx] = true;
    }
}

/* A thread's /proc/PID/task/TID/syscall: "NR ARG0 ... ARG5 SP PC" while it is blocked in a system
 * call, "running" or "-1 SP PC" otherwise. */
static int scan_thread(struct proc_view *v, pid_t tid) {
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)v->pid, (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    int err = errno;
    close(fd);
    if (len < 0)
        return -err;
    buf[len] = '\0';
    long nr;
    unsigned long a[6];
    if (sscanf(buf, "%ld %lx %lx %lx %lx %lx %lx", &nr, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]) !=
        7)
        return 0;
    if (nr == SYS_accept || nr == SYS_accept4 || nr == SYS_recvfrom || nr == SYS_recvmsg ||
        nr == SYS_recvmmsg || nr == SYS_read)
        mark_fd(v, (long)a[0]);
    else if (nr == SYS_ppoll)
        scan_poll(v, tid, a[0], a[1]);
    else if (nr == SYS_pselect6)
        scan_select(v, tid, a[0], a[1]);
#ifdef SYS_poll
    else if (nr == SYS_poll)
        scan_poll(v, tid, a[0], a[1]);
#endif
#ifdef SYS_select
    else if (nr == SYS_select)
        scan_select(v, tid, a[0], a[1]);
#endif
#ifdef SYS_io_uring_enter
    else if (nr == SYS_io_uring_enter)
        v->unsure = true; /* it may accept through the ring: nothing to see here */
#endif
    return 0;
}

static int scan_threads(struct proc_view *v) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)v->pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? -ESRCH : -errno;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && rc == 0)
        if (de->d_name[0] != '.')
            rc = scan_thread(v, (pid_t)atoi(de->d_name));
    closedir(d);
    return rc;
}

int ready_scan_process(pid_t pid, const unsigned long *inos, size_t n, bool *seen) {
    struct proc_view v = {.pid = pid, .inos = inos, .n = n, .seen = seen};
    int rc = scan_fds(&v);
    /* Blocked in a call on a socket it does not hold is impossible, so threads only matter
     * when it holds one. */
    if (rc == 0 && v.nheld > 0)
        rc = scan_threads(&v);
    free(v.held);
    return rc == 0 && v.unsure ? 1 : rc;
}

/* Appends the children of every thread of @pid to @pids (up to @max in all). */
static size_t add_children(pid_t pid, pid_t *pids, size_t n, size_t max) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    struct dirent *de;
    if (d == NULL)
        return n;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char file[96];
        snprintf(file, sizeof(file), "%s/%d/children", path, atoi(de->d_name));
        FILE *f = fopen(file, "re");
        if (f == NULL)
            continue;
        int child;
        while (n < max && fscanf(f, "%d", &child) == 1)
            pids[n++] = (pid_t)child;
        fclose(f);
    }
    closedir(d);
    return n;
}

static bool listed(const pid_t *pids, size_t n, pid_t pid) {
    for (size_t i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

enum ready_verdict ready_check(const pid_t *roots, size_t nroots, const unsigned long *inos,
                               size_t n) {
    pid_t pids[READY_MAX_PROCS];
    bool seen[READY_MAX_SOCKETS] = {false}, unsure = false;
    size_t npids = 0, all = 0;
    if (n == 0 || n > READY_MAX_SOCKETS)
        return READY_CANNOT_TELL;
    for (size_t i = 0; i < nroots && npids < READY_MAX_PROCS; i++)
        if (roots[i] > 0 && !listed(pids, npids, roots[i]))
            pids[npids++] = roots[i];
    for (size_t i = 0; i < npids; i++) {
        int rc = ready_scan_process(pids[i], inos, n, seen);
        if (rc != 0 && rc != -ESRCH)
            unsure = true;
        size_t before = npids;
        npids = add_children(pids[i], pids, npids, READY_MAX_PROCS);
        /* A listed root may also be a child of another: keep each once. */
        for (size_t k = before; k < npids;)
            if (listed(pids, before, pids[k]))
                pids[k] = pids[--npids];
            else
                k++;
    }
    for (size_t i = 0; i < n; i++)
        all += seen[i];
    if (all == n)
        return READY_ACCEPTING;
    return unsure ? READY_CANNOT_TELL : READY_NOT_YET;
}
