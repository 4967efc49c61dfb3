/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's state, shared by serve.c, generation.c and control.c. */
#ifndef AFDT_SUPERVISOR_H
#define AFDT_SUPERVISOR_H

#include <sys/un.h>

#include "afdt_tool.h"

struct event;
struct event_base;

enum gen_state { GEN_STARTING, GEN_SERVING, GEN_DRAINING };

/* One generation: a run of COMMAND with the sockets. */
struct gen {
    struct sup *sup;
    struct gen *next; /* the supervisor's list, newest first */
    int id;
    pid_t pid; /* also its process group */
    enum gen_state state;
    int64_t started_ms;
    int notify_fd; /* its own NOTIFY_SOCKET */
    char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct event *notify_ev;
    struct event *timer; /* starting: the ready deadline; draining: the SIGKILL deadline */
    char status[128];    /* the last STATUS= it sent */
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
    char tmpdir[80]; /* private directory of the notify sockets */
    struct gen *gens;
    struct gen *current;  /* the serving generation, or NULL */
    struct gen *starting; /* the generation on trial, or NULL */
    int next_gen;
    bool uses_notify; /* a generation has sent READY=1: from now on each must */
    unsigned restarts, rollbacks;
    int restart_id; /* the restart in progress, or 0 */
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

/* generation.c */
struct gen *gen_spawn(struct sup *s, char *why, size_t size);
void gen_drain(struct gen *g);
void gen_free(struct gen *g);
struct gen *gen_by_pid(struct sup *s, pid_t pid);
const char *gen_state_str(enum gen_state st);

/* serve.c: what generation.c and control.c report or ask for */
void sup_gen_ready(struct gen *g, const char *how);
void sup_gen_timeout(struct gen *g);
int sup_restart(struct sup *s, const char *origin, char *msg, size_t size);
void sup_stop(struct sup *s, int code, const char *why);
void sup_retire(struct sup *s, int successor_pid);
void notify_parent(struct sup *s, const char *msg);

/* control.c */
int control_open(struct sup *s, bool replacing);
void control_close(struct sup *s);
const struct outcome *control_outcome(const struct sup *s, int id);

#endif
