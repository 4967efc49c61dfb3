/* SPDX-License-Identifier: BSD-3-Clause */
/* Taking a running process's listening sockets: pidfd_open(2) and pidfd_getfd(2). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The same numbers on every architecture (they came after the tables were unified). */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define NO_ACCESS                                                                                  \
    "no access to the process's descriptors: it needs the same user and a dumpable process "       \
    "(PTRACE_MODE_ATTACH), or CAP_SYS_PTRACE"

/* The pid a pidfd refers to, from its fdinfo: > 0, or -errno (-ESRCH once it has exited). */
static int pidfd_pid(int pidfd) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    afdt__close(fd);
    if (n < 0)
        return -e;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nPid:\t");
    if (p == NULL)
        return -EBADF; /* not a pidfd */
    long pid = strtol(p + 6, NULL, 10);
    return pid > 0 ? (int)pid : -ESRCH;
}

/* Whether the process @pidfd refers to is no longer the live process @pid.  A pidfd is readable
 * once its process has exited, zombie or not. */
static bool has_exited(int pidfd, int pid) {
    struct pollfd p = {.fd = pidfd, .events = POLLIN, .revents = 0};
    return pidfd_pid(pidfd) != pid || poll(&p, 1, 0) != 0;
}

/* A socket of the target, by its descriptor number there and its inode. */
struct cand {
    int fd;
    unsigned long ino;
};

/* The target's socket descriptors, one per socket (the lowest number), into a malloc'd
 * *ret.  Returns the count, or -1 with @f set. */
static int list_sockets(int pid, struct cand **ret, struct afdt__fail *f) {
    char path[64];
    struct cand *c = NULL;
    size_t n = 0, cap = 0;
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (d == NULL) {
        int e = errno;
        if (e == EACCES || e == EPERM)
            return afdt__fail(f, AFDT_NO_OPERATION, EPERM, NO_ACCESS);
        if (e == ENOENT)
            return afdt__fail(f, AFDT_NO_OPERATION, ESRCH, "the process has exited");
        return afdt__fail(f, AFDT_NO_OPERATION, e, "cannot list the process's descriptors");
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char link[64], *end;
        long fd = strtol(de->d_name, &end, 10);
        if (de->d_name[0] < '0' || de->d_name[0] > '9' || *end != '\0')
            continue;
        ssize_t len = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
        if (len <= 0)
            continue; /* closed meanwhile */
        link[len] = '\0';
        unsigned long ino;
        if (sscanf(link, "socket:[%lu]", &ino) != 1)
            continue;
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++) {
            if (c[i].ino == ino) {
                seen = true;
                if (fd < c[i].fd)
                    c[i].fd = (int)fd;
            }
        }
        if (seen)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            struct cand *bigger = realloc(c, cap * sizeof(*c));
            if (bigger == NULL) {
                free(c);
                closedir(d);
                return afdt__fail(f, AFDT_MALLOC, ENOMEM, "");
            }
            c = bigger;
        }
        c[n].fd = (int)fd;
        c[n].ino = ino;
        n++;
    }
    closedir(d);
    *ret = c; /* the caller's */
    return (int)n;
}

/* A copy of the target's descriptor @target_fd, close-on-exec, ours; or -1, with *gone set
 * when the target closed it meanwhile, else with @f set. */
static int get_fd(int pidfd, int target_fd, bool *gone, struct afdt__fail *f) {
    *gone = false;
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
    if (fd >= 0)
        return fd;
    switch (errno) {
    case EBADF: *gone = true; return -1;
    case EPERM:
    case EACCES: return afdt__fail(f, AFDT_NO_OPERATION, EPERM, NO_ACCESS);
    case ESRCH: return afdt__fail(f, AFDT_NO_OPERATION, ESRCH, "the process has exited");
    case ENOSYS:
        return afdt__fail(f, AFDT_NO_OPERATION, ENOSYS, "pidfd_getfd(2) needs Linux 5.6 or later");
    default: return afdt__fail(f, AFDT_NO_OPERATION, errno, "pidfd_getfd(2) failed");
    }
}

/* Check the arguments and make the set, every descriptor -1. */
static int new_set(const char *const *names, const char *const *specs, uint32_t n,
                   struct afdt_named_fd **ret_set, struct afdt_named_fd **set,
                   struct afdt__fail *f) {
    if (n == 0 || names == NULL || specs == NULL || ret_set == NULL)
        return afdt__fail(f, AFDT_PATHNAME, EINVAL, "no names or specs, or a NULL output");
    for (uint32_t i = 0; i < n; i++) {
        size_t len = names[i] ? strnlen(names[i], AFDT_NAME_MAX + 1) : 0;
        if (len == 0 || len > AFDT_NAME_MAX)
            return afdt__fail(f, AFDT_PATHNAME, EINVAL, "a listener name is empty or too long");
        struct afdt_error_t e = AFDT_ERROR_T_INIT;
        if (afdt_parse_spec(specs[i], &e) < 0)
            return afdt__fail(f, e.operation, errno, e.message);
    }
    *set = calloc(n, sizeof(**set));
    if (*set == NULL)
        return afdt__fail(f, AFDT_MALLOC, ENOMEM, "");
    for (uint32_t i = 0; i < n; i++) {
        (*set)[i].fd = -1;
        memcpy((*set)[i].name, names[i], strlen(names[i]));
    }
    return 0;
}

AFDT_EXPORT int afdt_take_listeners_pidfd(int pidfd, const char *const *names,
                                          const char *const *specs, uint32_t n,
                                          struct afdt_named_fd **ret_set,
                                          struct afdt_error_t *err) {
    struct afdt__fail f = {AFDT_NO_OPERATION, 0, ""};
    struct afdt_named_fd *set = NULL;
    struct cand *cands = NULL;
    uint32_t filled = 0;
    int r = -1;

    if (new_set(names, specs, n, ret_set, &set, &f) < 0)
        goto out;
    int pid = pidfd_pid(pidfd);
    if (pid < 0) {
        afdt__fail(&f, AFDT_NO_OPERATION, -pid,
                   pid == -ESRCH ? "the process has exited" : "not a pidfd");
        goto out;
    }
    /* A zombie's /proc/PID/fd is closed to all but root (EPERM): say what it is first. */
    if (has_exited(pidfd, pid)) {
        afdt__fail(&f, AFDT_NO_OPERATION, ESRCH, "the process has exited");
        goto out;
    }
    int ncands = list_sockets(pid, &cands, &f);
    if (ncands < 0)
        goto out;
    /* The list came from /proc/PID: it is that process's only if the pidfd still refers to
     * a live process with that pid (else the pid may have been reused meanwhile). */
    if (has_exited(pidfd, pid)) {
        afdt__fail(&f, AFDT_NO_OPERATION, ESRCH, "the process has exited");
        goto out;
    }
    for (int k = 0; k < ncands && filled < n; k++) {
        bool gone;
        int fd = get_fd(pidfd, cands[k].fd, &gone, &f);
        if (fd < 0 && gone)
            continue;
        if (fd < 0)
            goto out;
        uint32_t i = 0;
        while (i < n && (set[i].fd >= 0 || afdt_check_spec(fd, specs[i], NULL) < 0))
            i++;
        if (i == n) {
            /* Not one we want.  A plain close: its options are the target's too. */
            afdt__close(fd);
            continue;
        }
        set[i].fd = fd; /* now the set's */
        filled++;
    }
    if (filled < n) {
        afdt__fail(&f, AFDT_NO_OPERATION, EADDRNOTAVAIL,
                   "the process has no socket that matches a spec");
        goto out;
    }
    *ret_set = set; /* the caller's */
    set = NULL;
    r = (int)n;
out:
    if (set) {
        for (uint32_t i = 0; i < n; i++)
            afdt__close(set[i].fd);
        free(set);
    }
    free(cands);
    return r < 0 ? afdt__report(err, AFDT__KEEP_PHASE, &f) : r;
}

AFDT_EXPORT int afdt_take_listeners(int32_t pid, const char *const *names, const char *const *specs,
                                    uint32_t n, struct afdt_named_fd **ret_set,
                                    struct afdt_error_t *err) {
    struct afdt__fail f;
    if (pid <= 0) {
        afdt__fail(&f, AFDT_NO_OPERATION, ESRCH, "no such process");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
    if (pidfd < 0) {
        int e = errno;
        afdt__fail(&f, AFDT_NO_OPERATION, e,
                   e == ENOSYS  ? "pidfd_open(2) needs Linux 5.3 or later"
                   : e == ESRCH ? "no such process"
                                : "pidfd_open(2) failed");
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    }
    int r = afdt_take_listeners_pidfd(pidfd, names, specs, n, ret_set, err);
    afdt__close(pidfd);
    return r;
}
