/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's state machine: the only part of afdt(1) that changes the supervisor's
 * state.  Everything else (log, listeners, spawn, notify, control) is a leaf it calls. */
#ifndef AFDT_SUP_H
#define AFDT_SUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/un.h>

#include "contain.h"
#include "log.h"
#include "spawn.h"
#include "state.h"
#include "tool.h"

struct event;
struct event_base;

enum gen_state { GEN_STARTING, GEN_SERVING, GEN_DRAINING };

/* One generation: a run of COMMAND with the sockets. */
struct gen {
    struct sup *sup;
    struct gen *next; /* the supervisor's list, newest first */
    int id;
    pid_t pid;          /* its main process: the first one, or what that left when it exited 0 */
    bool ended;         /* its main process has exited: the rest of it is being ended */
    struct procs procs; /* every process it has */
    enum gen_state state;
    int64_t started_ms;
    int notify_fd; /* its own NOTIFY_SOCKET */
    char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct event *notify_ev;
    struct event *timer; /* starting: the ready deadline; draining: the SIGKILL deadline */
    struct event *scan;  /* starting: the next look at whether it accepts */
    bool sent_ready;     /* it sent READY=1 */
    bool cannot_tell;    /* some of its processes could not be looked at */
    char ready_how[96];  /* how it was found ready, for the log and afdt status */
    int gone_fd;      /* a restart's outcome pipe, told "gone" and closed when this one is freed */
    char status[128]; /* the last STATUS= it sent */
    struct proc_id proc; /* its pid and start time, for the state file */
    /* Not our child: a generation left by a supervisor that died, or a process adopted with
     * --adopt.  Its exit comes through its pidfd; its exit status goes to its parent. */
    bool foreign;
    int pidfd;
    struct event *exit_ev;
    bool own_group; /* it leads its own process group, which is signalled with it */
    int drain_sig;  /* what asks it to drain: SIGTERM, or --adopt-signal */
    struct say_limit bad_extend;
    struct say_limit said; /* its STOPPING=1 and ERRNO= lines: it may send them at will */
};

/* What became of one restart, for "result ID". */
enum outcome_state { OUTCOME_NONE, OUTCOME_PENDING, OUTCOME_OK, OUTCOME_FAILED };
struct outcome {
    int id;
    enum outcome_state state;
    char text[320];
};
#define SUP_OUTCOMES 8

enum sup_state { SUP_STARTING, SUP_RUNNING, SUP_STOPPING };

/* The start limit: at most RESPAWN_BURST respawns within RESPAWN_INTERVAL_MS (as systemd's
 * StartLimitBurst= and StartLimitIntervalSec= defaults), the first at once, each next one
 * after twice the pause of the one before, from RESPAWN_PAUSE_MS. */
#define RESPAWN_BURST 5
#define RESPAWN_INTERVAL_MS 10000
#define RESPAWN_PAUSE_MS 100

/* What a running supervisor said of itself in its greeting, for a successor. */
struct predecessor {
    const char *path; /* its control path */
    int pid;
    int gen; /* its newest generation */
    bool uses_notify;
    unsigned restarts, rollbacks;
    int last_restart_id;
};

struct sup {
    const struct serve_args *args;
    struct event_base *eb;
    void *server; /* the control channel, or NULL */
    /* The sockets, in --listen order: as a named set for "listeners", as descriptors for
     * each generation, and their names as LISTEN_FDNAMES. */
    struct afdt_named_fd *named;
    int *fds;
    int *scratch;
    char *fdnames;
    unsigned long *inos; /* their inodes, to see a generation accept on them (ready.c) */
    char **announce;     /* "NAME=VALUE"s telling a generation where they are (--convention) */
    size_t nannounce;
    pid_t *relays; /* the generations' output relays (relay.c) not yet reaped */
    size_t nrelays;
    char tmpdir[STATE_DIR_MAX]; /* the runtime directory: notify sockets, state file */
    bool owns_state;            /* the state file there is ours to write and remove */
    struct state *orphans;      /* left running by a supervisor that died: take them over */
    pid_t adopt_pid;            /* --adopt: the process whose place generation 1 takes */
    int adopt_pidfd;
    char notify_dir[STATE_DIR_MAX + 16]; /* tmpdir, or one for a --trust-uid user */
    /* The pids that took the sockets ("listeners"): only they may ask us to retire. */
    int takers[4];
    unsigned ntakers;
    struct say_limit ignored_notify;
    /* The descriptor limit we were started with, for the generations, when we raised ours. */
    struct rlimit nofile;
    bool nofile_raised;
    struct gen *gens;
    struct gen *current;  /* the serving generation, or NULL */
    struct gen *starting; /* the generation on trial, or NULL */
    int next_gen;
    bool uses_notify; /* a generation has sent READY=1 (said in the greeting; requires nothing) */
    unsigned restarts, rollbacks;
    unsigned respawns;                 /* generations started after the serving one crashed */
    int64_t respawn_ms[RESPAWN_BURST]; /* when the last ones were (to be) made, a ring */
    struct event *respawn_timer;       /* the next respawn, pending */
    bool respawning;                   /* the generation on trial replaces one that crashed */
    struct event *sweep;               /* a look at the generations' processes, every 0.25 s
                                        * (with cgroups) or 1 s */
    int restart_id;                    /* the restart in progress, or 0 */
    int result_fd; /* its outcome pipe (afdt restart holds the other end), or -1 */
    int last_restart_id;
    struct outcome outcomes[SUP_OUTCOMES];
    enum sup_state state;
    bool retiring; /* handed over to a successor: the socket files are its now */
    int exit_code;
    int current_exit; /* status of a serving generation that exited during a restart, or -1 */
    int64_t started_ms;
    const char *pred_path; /* while taking over: the predecessor's control path */
    int pred_pid;
    char parent_notify[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    struct event *sigs[4];
};

/* A supervisor for @a, not yet running, whose runtime directory is @rundir: takes
 * NOTIFY_SOCKET (its own service manager's) out of the environment, so each generation gets
 * its own. */
void sup_init(struct sup *s, const struct serve_args *a, const char *rundir);
/* Take over the generations @st records, left running by a supervisor that died (the
 * listeners already hold their sockets): the serving one serves on, the others drain.
 * @st stays the caller's until sup_run() returns. */
void sup_take_orphans(struct sup *s, struct state *st);
/* Take the place of process @pid (its sockets already taken; @pidfd is the supervisor's
 * now): it serves until generation 1 is ready, then gets --adopt-signal and drains. */
void sup_adopt(struct sup *s, pid_t pid, int pidfd);
/* Continue from the running supervisor @p: its counters, and the takeover once our first
 * generation is ready. */
void sup_follow(struct sup *s, const struct predecessor *p);
/* Run: the control channel (unless taking over), the first generation, the loop, until the
 * supervisor stops.  The listeners must be acquired.  Returns the exit status; everything
 * but the listeners is released (sup_retired() says whether their files are still ours). */
int sup_run(struct sup *s);
/* Whether the supervisor handed its sockets to a successor (their files are its now). */
bool sup_retired(const struct sup *s);

/* For the status report (control.c): names of states, the outcome of restart @id. */
const char *gen_state_str(enum gen_state st);
const char *sup_state_str(enum sup_state st);
const struct outcome *sup_outcome(const struct sup *s, int id);

#endif
