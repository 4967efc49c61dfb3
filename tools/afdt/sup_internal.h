/* SPDX-License-Identifier: BSD-3-Clause */
/* What the three files of the supervisor's state machine share, and nothing else may use:
 * sup.c decides (every transition, every event), gen.c carries out a generation's life, run.c
 * sets up, keeps the state file and runs the loop. */
#ifndef AFDT_SUP_INTERNAL_H
#define AFDT_SUP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/types.h>

#include <event2/util.h>

#include "sup.h"

/* How often a starting generation is looked at to see whether it accepts yet. */
#define READY_SCAN_MS 10

static inline struct timeval ms_tv(int64_t ms) {
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* ---- the state machine (sup.c): its transitions and the events that drive them ---- */

/* Tell our own service manager (systemd, or a supervisor above us) one sd_notify(3) datagram:
 * the lines of @fmt, each KEY=VALUE.  Every one has a STATUS= line for people. */
void tell_manager(struct sup *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void close_control(struct sup *s);
void finish_if_done(struct sup *s);
void on_foreign_exit(evutil_socket_t fd, short what, void *arg);
void on_gen_scan(evutil_socket_t fd, short what, void *arg);
void on_gen_timer(evutil_socket_t fd, short what, void *arg);
void on_notify(evutil_socket_t fd, short what, void *arg);
void on_respawn_timer(evutil_socket_t fd, short what, void *arg);
void on_signal(evutil_socket_t sig, short what, void *arg);
int open_control(struct sup *s, bool replacing);
void tell_waiter(int fd, const char *line);

/* ---- a generation's life (gen.c): start, signal, drain, end, and its output's relay ---- */

struct gen *gen_by_pid(struct sup *s, pid_t pid);
void gen_drain(struct gen *g);
struct gen *gen_foreign(struct sup *s, int id, pid_t pid, int pidfd, enum gen_state state,
                        bool own_group, int drain_sig);
void gen_free(struct gen *g);
void gen_rebind_notify(struct gen *g, const char *path);
void gen_signal(struct gen *g, int sig, bool with_group);
struct gen *gen_start(struct sup *s, char *why, size_t size);
bool relay_reaped(struct sup *s, pid_t pid);
void sweep(struct sup *s);
void update_procs(struct sup *s);
void wait_relays(struct sup *s);

/* ---- set-up, the state file and the loop (run.c) ---- */

void save_state(struct sup *s);

#endif
