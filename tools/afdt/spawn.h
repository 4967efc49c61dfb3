/* SPDX-License-Identifier: BSD-3-Clause */
/* Starting a generation's process and signalling it.  A leaf: it decides nothing. */
#ifndef AFDT_SPAWN_H
#define AFDT_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

/* ---- --user USER[:GROUP] ---- */

#define SPAWN_GROUPS_MAX 64

/* Who a generation runs as, resolved before any fork (the child only calls set*id). */
struct spawn_user {
    char name[64];
    char home[256];
    uid_t uid;
    gid_t gid;
    gid_t groups[SPAWN_GROUPS_MAX]; /* its supplementary groups, as initgroups(3) sets them */
    size_t ngroups;
};

/* Resolve "USER[:GROUP]" (names or numbers) into *@ret.  Returns 0, or -1 with the reason
 * in @why. */
int spawn_user_parse(const char *spec, struct spawn_user *ret, char *why, size_t size);

/* What to start: COMMAND with the sockets at 3.. and an environment made before fork. */
struct spawn_req {
    char *const *argv;           /* COMMAND [ARG...], NULL-terminated; searched in PATH */
    const struct rlimit *nofile; /* RLIMIT_NOFILE to give it, or NULL for ours */
    const int *fds;              /* the sockets, placed at 3, 4, ... in this order */
    int *scratch;                /* room for nfds descriptors, used by the child */
    uint32_t nfds;
    char **env;       /* the whole environment (spawn_env()) */
    char *pid_digits; /* inside one of @env's strings: where the child writes its own pid */
    int cgroup_procs; /* a cgroup's cgroup.procs the child moves itself into first, or -1 */
    const struct spawn_user *user; /* who the child becomes before exec, or NULL */
    const int *output; /* NULL, or two descriptors that become the child's stdout and stderr */
};

/* An environment for a child: this process's, less every variable named in @set, plus @set
 * ("NAME=VALUE" strings, copied) and "LISTEN_PID=" with room for the child's pid, whose
 * place is returned in *ret_pid_digits.  NULL when out of memory.  Free with spawn_env_free(). */
char **spawn_env(const char *const *set, size_t nset, char **ret_pid_digits);
void spawn_env_free(char **env);

/* Start @r in its own process group: every signal blocked across fork; in the child, every
 * disposition reset to its default and the signal mask emptied just before exec, with only
 * async-signal-safe calls in between.  An exec failure comes back through a close-on-exec
 * pipe.  Returns the pid, or -1 with the reason in @why (the child, if any, reaped). */
pid_t spawn_start(const struct spawn_req *r, char *why, size_t size);

#endif
