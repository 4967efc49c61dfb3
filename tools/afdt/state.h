/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's runtime directory and its state file: what a supervisor that outlives its
 * predecessor's SIGKILL needs to take over what it left running.  A leaf: it reads and writes,
 * it decides nothing. */
#ifndef AFDT_STATE_H
#define AFDT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <afdt.h>

#define STATE_PATH_MAX 108 /* a notify socket's path must fit in sun_path */
#define STATE_DIR_MAX 80   /* a runtime directory's, with room left for notify-ID */
#define STATE_MAX_GENS 16

/* One running process, known by its pid and its start time (field 22 of /proc/PID/stat, in
 * clock ticks since boot), so that a reused pid is never taken for it. */
struct proc_id {
    pid_t pid;
    unsigned long long start;
};

struct state_gen {
    int id;
    struct proc_id proc;
    char state[12]; /* "starting", "serving", "draining" */
    bool own_group; /* it leads its own process group (ours do; an adopted process may not) */
    char notify[STATE_PATH_MAX]; /* its NOTIFY_SOCKET, or empty */
};

struct state_listener {
    char name[AFDT_NAME_MAX + 1];
    char spec[256]; /* as given to --listen */
    char addr[256]; /* the socket's own address, as a spec with its port ("tcp:1.2.3.4:80") */
};

struct state {
    struct proc_id sup;
    char control[4096];
    int next_gen;
    bool uses_notify;
    unsigned restarts, rollbacks;
    int last_restart_id;
    uint32_t nls;
    struct state_listener *ls; /* malloc'd */
    uint32_t ngens;
    struct state_gen gens[STATE_MAX_GENS];
};

/* The runtime directory of the supervisor whose control path is @control, the same for every
 * supervisor on that path: a directory named by a hash of its absolute path, under
 * $XDG_RUNTIME_DIR/afdt, /run/afdt for root, else /tmp/afdt-UID.  Returns 0, or -1 after
 * saying why. */
int state_dir_path(const char *control, char *buf, size_t size);
/* Make @dir (and its parent) if missing: ours, 0711 (searchable, so a generation that drops
 * its privileges still reaches its NOTIFY_SOCKET, not listable), and refuse one that another
 * user owns or could write.  Returns a descriptor holding a shared lock on it, to keep for as
 * long as the supervisor runs (state_dir_clean() never removes a locked directory), or -1
 * after saying why. */
int state_dir_make(const char *dir);
/* Remove the runtime directories beside @dir (never @dir) that we own and whose supervisor
 * and generations are all gone. */
void state_dir_clean(const char *dir);

/* Write @st to @dir's state file, atomically (a new file renamed over the old).  Returns 0,
 * or -1 with errno set. */
int state_save(const char *dir, const struct state *st);
/* Read @dir's state file into @st.  Returns 1, 0 when there is none, -1 when it is not ours
 * or malformed (said why).  Release with state_free(). */
int state_load(const char *dir, struct state *st);
void state_free(struct state *st);
/* Remove @dir's state file. */
void state_remove(const char *dir);

/* @pid with its start time, or a zero start when it does not exist. */
struct proc_id proc_id_of(pid_t pid);
/* Whether @p is still running: the same pid with the same start time, not a zombie. */
bool proc_alive(const struct proc_id *p);
/* A pidfd (close-on-exec) for @p, checked against its start time after it was opened, so it
 * refers to that very process.  Returns it, or -1 with errno set (ESRCH: gone; ENOSYS: Linux
 * older than 5.3). */
int proc_pidfd(const struct proc_id *p);
/* Send @sig to the process of @pidfd.  Returns 0, or -1 with errno set. */
int pidfd_signal(int pidfd, int sig);
/* @fd's local address as a spec with its real port: "tcp:127.0.0.1:8080", "udp:[::1]:53",
 * "unix:/path", "unix:@name".  Returns 0, or -1. */
int socket_spec(int fd, char *buf, size_t size);

#endif
