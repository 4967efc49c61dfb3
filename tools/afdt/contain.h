/* SPDX-License-Identifier: BSD-3-Clause */
/* Containment: every process a generation starts, followed and ended.  A leaf: it decides
 * nothing about generations, only which process is whose. */
#ifndef AFDT_CONTAIN_H
#define AFDT_CONTAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Whatever a generation's processes do (setsid, a double fork), they stay known: the
 * supervisor is a child subreaper, so an orphan comes to it rather than to init, and each
 * generation has a cgroup of its own where one can be made (cgroup v2, as root or in a
 * delegated subtree).  Without one, they are the supervisor's descendants found in /proc: a
 * child of one of them, one in a process group or session one of them leads, or an orphan
 * whose parent ended unseen, by its AFDT_GENERATION; failing all of these, the generation
 * that was newest when it started. */

/* One process of a generation, as /proc last showed it. */
struct proc {
    pid_t pid, ppid, pgrp, sid;
    unsigned long long start; /* clock ticks after boot: a pid reused is another process */
};

/* A generation's processes. */
struct procs {
    int gen;                  /* its AFDT_GENERATION */
    pid_t leader;             /* the first process */
    unsigned long long since; /* the leader's start */
    int cg_dir;               /* its cgroup, or -1 */
    int cg_procs;             /* that cgroup's cgroup.procs, open for writing, or -1 */
    char cg_name[48];
    bool outsider;     /* not our descendants: a generation of a supervisor that died */
    struct proc *list; /* as of the last procs_update() (zombies left out) */
    size_t n;
};

/* Become a child subreaper and (with @cgroups) find where cgroups can be made; @how says
 * which way processes will be followed.  Returns 0, or -1 (with the reason in @how). */
int contain_init(bool cgroups, char *how, size_t size);
/* Whether generations get cgroups (contain_init() found where to make them). */
bool contain_has_cgroups(void);
/* Set up @g for generation @gen, with (if @cgroup) a cgroup of its own when one can be made. */
void procs_init(struct procs *g, int gen, bool cgroup);
/* @g is a generation we did not start, whose process is @pid: when that is in a cgroup a
 * supervisor made beside us for a generation (one that died), follow every process in it, and
 * remove it once empty. */
void procs_follow(struct procs *g, pid_t pid);
/* Its first process, @leader, was started. */
void procs_started(struct procs *g, pid_t leader);
/* Look again: which process belongs to which of @gens (newest first).  A process whose
 * generation has ended (its AFDT_GENERATION names none of @gens) is sent SIGKILL.  Returns 0,
 * or -1 when /proc could not be read (the lists are then as before). */
int procs_update(struct procs *const *gens, size_t ngens);
/* The process that stands for @g once its leader has gone: the eldest of those whose parent
 * is not one of them; 0 when none is left. */
pid_t procs_main(const struct procs *g);
bool procs_has(const struct procs *g, pid_t pid);
/* Send @sig to every process of @g (SIGKILL: the whole cgroup at once, where there is one). */
void procs_signal(const struct procs *g, int sig);
/* Release @g: its cgroup is removed if empty. */
void procs_free(struct procs *g);
/* @pid, a child of ours, belongs to no generation (@excluding), or no longer needs saying so
 * (reaped). */
void contain_exclude(pid_t pid, bool excluding);
/* SIGKILL every descendant of the supervisor still alive, and reap them all: for its very
 * end. */
void contain_end_all(void);

#endif
