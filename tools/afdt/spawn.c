/* SPDX-License-Identifier: BSD-3-Clause */
/* Starting a generation's process: libuv's uv_spawn recipe for signals, and exec errors
 * reported through a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listeners.h"
#include "log.h"
#include "spawn.h"

extern char **environ;

#define PID_ROOM 16 /* digits of a pid, and the NUL */

static bool named_in(const char *var, const char *const *set, size_t nset) {
    const char *eq = strchr(var, '=');
    size_t len = eq ? (size_t)(eq - var) : strlen(var);
    for (size_t i = 0; i < nset; i++)
        if (strncmp(set[i], var, len) == 0 && set[i][len] == '=')
            return true;
    return len == 10 && strncmp(var, "LISTEN_PID", 10) == 0;
}

char **spawn_env(const char *const *set, size_t nset, char **ret_pid_digits) {
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + nset + 2, sizeof(char *));
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!named_in(environ[i], set, nset) && (env[k++] = strdup(environ[i])) == NULL)
            goto fail;
    for (size_t i = 0; i < nset; i++)
        if ((env[k++] = strdup(set[i])) == NULL)
            goto fail;
    if ((env[k] = calloc(1, sizeof("LISTEN_PID=") + PID_ROOM)) == NULL)
        goto fail;
    strcpy(env[k], "LISTEN_PID=");
    *ret_pid_digits = env[k] + sizeof("LISTEN_PID=") - 1;
    return env;
fail:
    spawn_env_free(env);
    return NULL;
}

void spawn_env_free(char **env) {
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* The decimal digits of @v into @buf (room for PID_ROOM): async-signal-safe. */
static void put_digits(char *buf, long v) {
    char tmp[PID_ROOM];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && n < PID_ROOM - 1);
    for (int i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
}

/* The child's side, between fork and exec: only async-signal-safe calls. */
__attribute__((noreturn)) static void child(const struct spawn_req *r, int err_fd) {
    int e;
    /* Its own process group, so the whole generation can be signalled, and a Ctrl-C meant for
     * the supervisor does not reach it. */
    setpgid(0, 0);
    /* No PR_SET_PDEATHSIG: a generation outlives a supervisor killed outright and keeps
     * serving, for the next supervisor on the same control path to take over. */
    /* The supervisor's handlers (libevent's) must not run here, nor be inherited as ignored. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        if (sigaction(sig, &sa, NULL) < 0 && sig != SIGKILL && sig != SIGSTOP) {
            /* glibc refuses the two realtime signals it keeps for itself, but they too may have
             * come to us ignored (GNU make passes them so), and exec keeps that: the system
             * call resets them.  All zeros is SIG_DFL, no flags, no mask in every layout of
             * the kernel's struct; 8 is the size of its signal set. */
            unsigned long k[8] = {0};
            (void)syscall(SYS_rt_sigaction, sig, k, NULL, (size_t)8);
        }
    }
    int ef = fcntl(err_fd, F_DUPFD_CLOEXEC, (int)(3 + r->nfds)); /* above the sockets' range */
    if (ef < 0) {
        ef = err_fd; /* nothing was moved yet: the pipe is still there to say why */
        goto fail;
    }
    /* Into the generation's cgroup before anything else, so all it starts is in there too
     * ("0": the writer); where it cannot, the parent's /proc walk follows it instead. */
    if (r->cgroup_procs >= 0)
        (void)!write(r->cgroup_procs, "0", 1);
    if (r->user && (setgroups(r->user->ngroups, r->user->groups) < 0 || setgid(r->user->gid) < 0 ||
                    setuid(r->user->uid) < 0))
        goto fail;
    int out[2] = {-1, -1}; /* also above the range, out of the sockets' way */
    for (int i = 0; r->output && i < 2; i++)
        if ((out[i] = fcntl(r->output[i], F_DUPFD_CLOEXEC, (int)(3 + r->nfds))) < 0)
            goto fail;
    if (place_listen_fds(r->fds, r->scratch, r->nfds) < 0)
        goto fail;
    /* The limit the supervisor was given, now that the sockets are in place (a lower soft
     * limit leaves open descriptors open). */
    if (r->nofile && setrlimit(RLIMIT_NOFILE, r->nofile) < 0)
        goto fail;
    for (int i = 0; r->output && i < 2; i++)
        if (dup2(out[i], 1 + i) < 0)
            goto fail;
    put_digits(r->pid_digits, (long)getpid());
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvpe(r->argv[0], r->argv, r->env);
fail:
    e = errno;
    while (write(ef, &e, sizeof(e)) < 0 && errno == EINTR) {
    }
    _exit(127);
}

pid_t spawn_start(const struct spawn_req *r, char *why, size_t size) {
    int p[2], e = 0;
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(why, size, "cannot make a pipe: %s%s", strerror(errno), resource_hint(errno));
        return -1;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child(r, p[1]);
    int fork_errno = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        snprintf(why, size, "fork: %s%s", strerror(fork_errno), resource_hint(fork_errno));
        return -1;
    }
    setpgid(pid, pid); /* also here, so a signal sent at once finds the group */
    /* The pipe closes at exec (close-on-exec), or brings the errno of a failed exec. */
    ssize_t n;
    while ((n = read(p[0], &e, sizeof(e))) < 0 && errno == EINTR) {
    }
    close(p[0]);
    if (n != 0) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        snprintf(why, size, "cannot run %s: %s%s", r->argv[0],
                 n == (ssize_t)sizeof(e) ? strerror(e) : "it failed before exec",
                 n == (ssize_t)sizeof(e) ? resource_hint(e) : "");
        return -1;
    }
    return pid;
}

/* ---- --user USER[:GROUP] ---- */

/* @name as a number, when it is all digits. */
static int as_id(const char *name, unsigned *ret) {
    char *end;
    if (name[0] < '0' || name[0] > '9')
        return -1;
    unsigned long v = strtoul(name, &end, 10);
    if (*end != '\0' || v > 0x7fffffffUL)
        return -1;
    *ret = (unsigned)v;
    return 0;
}

int spawn_user_parse(const char *spec, struct spawn_user *ret, char *why, size_t size) {
    struct spawn_user u;
    memset(&u, 0, sizeof(u));
    const char *colon = strchr(spec, ':');
    size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (ulen == 0 || ulen >= sizeof(u.name) || (colon && colon[1] == '\0')) {
        snprintf(why, size, "--user wants USER or USER:GROUP, not '%s'", spec);
        return -1;
    }
    memcpy(u.name, spec, ulen);
    char buf[16384];
    struct passwd pw, *pwp = NULL;
    unsigned id;
    if (getpwnam_r(u.name, &pw, buf, sizeof(buf), &pwp) != 0 || pwp == NULL) {
        if (as_id(u.name, &id) < 0 || getpwuid_r(id, &pw, buf, sizeof(buf), &pwp) != 0 ||
            pwp == NULL) {
            snprintf(why, size, "--user: no user named '%s'", u.name);
            return -1;
        }
    }
    u.uid = pwp->pw_uid;
    u.gid = pwp->pw_gid;
    snprintf(u.name, sizeof(u.name), "%s", pwp->pw_name);
    snprintf(u.home, sizeof(u.home), "%s", pwp->pw_dir ? pwp->pw_dir : "/");
    if (colon) {
        struct group gr, *grp = NULL;
        if ((getgrnam_r(colon + 1, &gr, buf, sizeof(buf), &grp) != 0 || grp == NULL) &&
            (as_id(colon + 1, &id) < 0 || getgrgid_r(id, &gr, buf, sizeof(buf), &grp) != 0 ||
             grp == NULL)) {
            snprintf(why, size, "--user: no group named '%s'", colon + 1);
            return -1;
        }
        u.gid = grp->gr_gid;
    }
    /* Its supplementary groups, as initgroups(3) would set them, with GROUP among them. */
    int n = SPAWN_GROUPS_MAX;
    if (getgrouplist(u.name, u.gid, u.groups, &n) < 0) {
        snprintf(why, size, "--user %s: more than %d groups", u.name, SPAWN_GROUPS_MAX);
        return -1;
    }
    u.ngroups = (size_t)n;
    *ret = u;
    return 0;
}
