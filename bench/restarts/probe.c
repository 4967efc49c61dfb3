/* SPDX-License-Identifier: BSD-3-Clause */
/* Times one restart of a server from outside, whatever its mechanism:
 *
 *   afdt-restarts-probe PORT COMM -- COMMAND [ARG...]
 *
 * notes the processes alive, runs COMMAND (which restarts the server somehow), and prints
 * "cmd_ms=A accept_ms=B status=S": A when COMMAND exited, B when a process that was not alive
 * before, named COMM (comm, as ps shows it; or one of several, comma-separated), was first seen
 * accepting on a TCP socket listening on PORT (-1 when none within 30 s or when COMMAND failed), S
 * COMMAND's exit status. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ready.h"

#define MAX_PIDS 65536
#define MAX_INOS 16

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t list_pids(pid_t *pids, size_t max) {
    size_t n = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL && n < max)
        if (de->d_name[0] >= '1' && de->d_name[0] <= '9')
            pids[n++] = (pid_t)atoi(de->d_name);
    closedir(d);
    return n;
}

/* The inodes of the TCP sockets listening on @port that process @pid holds: each socket it has
 * is copied with pidfd_getfd(2) and asked.  (Not /proc/net/tcp: with the load's tens of
 * thousands of TIME_WAIT sockets, reading it takes long enough to slow the whole machine.) */
static size_t listening(pid_t pid, unsigned port, unsigned long *inos, size_t max) {
    char path[64], link[64];
    size_t n = 0;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = pidfd < 0 ? NULL : opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL && n < max) {
        ssize_t len = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
        if (len <= 0 || strncmp(link, "socket:", 7) != 0)
            continue;
        int fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(de->d_name), 0);
        int on = 0;
        struct sockaddr_storage ss;
        socklen_t olen = sizeof(on), slen = sizeof(ss);
        if (fd < 0)
            continue;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &olen) == 0 && on &&
            getsockname(fd, (struct sockaddr *)&ss, &slen) == 0 &&
            (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
            ntohs(((struct sockaddr_in *)&ss)->sin_port) == port)
            inos[n++] = ready_socket_inode(fd);
        close(fd);
    }
    if (d)
        closedir(d);
    if (pidfd >= 0)
        close(pidfd);
    return n;
}

static int cmp_pid(const void *a, const void *b) {
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static bool new_accepting(const pid_t *old, size_t nold, unsigned port, const char *comm) {
    static pid_t pids[MAX_PIDS];
    size_t n = list_pids(pids, MAX_PIDS);
    for (size_t i = 0; i < n; i++) {
        unsigned long inos[MAX_INOS];
        bool seen[MAX_INOS] = {false};
        char path[64], name[64] = "";
        if (bsearch(&pids[i], old, nold, sizeof(*old), cmp_pid))
            continue;
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pids[i]);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        if (fgets(name, sizeof(name), f))
            name[strcspn(name, "\n")] = '\0';
        fclose(f);
        size_t len = strlen(name);
        bool match = false;
        for (const char *c = comm; *c && !match; c += strcspn(c, ","), c += *c == ',')
            match = strncmp(c, name, len) == 0 && (c[len] == ',' || c[len] == '\0');
        if (!match)
            continue;
        size_t ninos = listening(pids[i], port, inos, MAX_INOS);
        (void)ready_scan_process(pids[i], inos, ninos, seen);
        for (size_t k = 0; k < ninos; k++)
            if (seen[k])
                return true;
    }
    return false;
}

int main(int argc, char **argv) {
    static pid_t old[MAX_PIDS];
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: %s PORT COMM -- COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    unsigned port = (unsigned)atoi(argv[1]);
    size_t nold = list_pids(old, MAX_PIDS);
    qsort(old, nold, sizeof(old[0]), cmp_pid);
    double t0 = now_ms(), cmd_ms = -1, accept_ms = -1;
    pid_t child = fork();
    if (child < 0)
        return 2;
    if (child == 0) {
        execvp(argv[4], argv + 4);
        _exit(127);
    }
    int status = 0;
    while (now_ms() - t0 < 30000 && (cmd_ms < 0 || accept_ms < 0)) {
        if (cmd_ms < 0 && waitpid(child, &status, WNOHANG) == child)
            cmd_ms = now_ms() - t0;
        if (cmd_ms >= 0 && status != 0) /* the restart failed: nothing new to wait for */
            break;
        if (accept_ms < 0 && new_accepting(old, nold, port, argv[2]))
            accept_ms = now_ms() - t0;
        usleep(2000);
    }
    if (cmd_ms < 0) {
        waitpid(child, &status, 0);
        cmd_ms = now_ms() - t0;
    }
    printf("cmd_ms=%.1f accept_ms=%.1f status=%d\n", cmd_ms, accept_ms,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}
