/* SPDX-License-Identifier: BSD-3-Clause */
/* A generation's life, as the state machine (sup.c) decides it: started with its notify socket
 * and its output's relay, signalled, drained, followed through its processes, and freed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "control.h"
#include "log.h"
#include "notify.h"
#include "ready.h"
#include "spawn.h"
#include "sup_internal.h"

struct gen *gen_by_pid(struct sup *s, pid_t pid) {
    for (struct gen *g = s->gens; g; g = g->next)
        if (g->pid == pid && !g->ended)
            return g;
    return NULL;
}

/* Look again at which processes each generation has. */
void update_procs(struct sup *s) {
    struct procs *list[64];
    size_t n = 0;
    for (struct gen *g = s->gens; g && n < 64; g = g->next)
        if (!g->foreign || g->procs.outsider)
            list[n++] = &g->procs;
    if (procs_update(list, n) < 0)
        say("cannot read /proc to follow the generations' processes: %s", strerror(errno));
}

void gen_free(struct gen *g) {
    for (struct gen **pp = &g->sup->gens; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    if (g->notify_ev)
        event_free(g->notify_ev);
    if (g->exit_ev)
        event_free(g->exit_ev);
    if (g->timer)
        event_free(g->timer);
    if (g->scan)
        event_free(g->scan);
    if (g->notify_fd >= 0) {
        (void)unlink(g->notify_path);
        close(g->notify_fd);
    }
    if (g->gone_fd >= 0) {
        tell_waiter(g->gone_fd, "gone\n");
        close(g->gone_fd);
    }
    procs_free(&g->procs);
    if (g->pidfd >= 0)
        close(g->pidfd);
    struct sup *s = g->sup;
    free(g);
    save_state(s);
}

/* Send @sig to @g's main process (the rest of one of ours: procs_signal()); to a foreign one
 * through its pidfd, never to a reused pid, and with @with_group to the process group it
 * leads. */
void gen_signal(struct gen *g, int sig, bool with_group) {
    if (!g->foreign) {
        kill(g->pid, sig);
        return;
    }
    if (pidfd_signal(g->pidfd, sig) == 0 && with_group && g->own_group)
        kill(-g->pid, sig);
}

/* Ask @g to finish: its main process, or once that has exited all that is left of it. */
void gen_drain(struct gen *g) {
    if (g->state == GEN_DRAINING)
        return;
    g->state = GEN_DRAINING;
    if (g->ended)
        procs_signal(&g->procs, g->drain_sig);
    else
        gen_signal(g, g->drain_sig, false);
    struct timeval tv = ms_tv(g->sup->args->drain_timeout_ms);
    evtimer_add(g->timer, &tv);
    save_state(g->sup);
}

/* Free the generations that have ended and have no process left. */
void sweep(struct sup *s) {
    update_procs(s);
    for (struct gen *g = s->gens, *next; g; g = next) {
        next = g->next;
        if (g->ended && g->procs.n == 0)
            gen_free(g);
    }
    finish_if_done(s);
}

/* Pipes for a generation's stdout and stderr: @rd and @wr get their read and write ends, or -1s
 * (then the generation writes to ours, unprefixed). */
static void open_output(struct sup *s, int rd[2], int wr[2]) {
    int p[2][2] = {{-1, -1}, {-1, -1}};
    rd[0] = rd[1] = wr[0] = wr[1] = -1;
    pid_t *more = realloc(s->relays, (s->nrelays + 1) * sizeof(*more)); /* room for its relay */
    if (more)
        s->relays = more;
    if (more == NULL || pipe2(p[0], O_CLOEXEC) < 0 || pipe2(p[1], O_CLOEXEC) < 0) {
        say("the next generation's output goes to ours unprefixed: %s", strerror(errno));
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 2; k++)
                if (p[i][k] >= 0)
                    close(p[i][k]);
        return;
    }
    for (int i = 0; i < 2; i++) {
        rd[i] = p[i][0];
        wr[i] = p[i][1];
    }
}

/* A relay for generation @id's output, from the read ends @rd (closed here): a process of its
 * own (relay.c), which outlives us, so that the generation never writes into a pipe nobody
 * reads.  Started after the generation, off the path to its readiness. */
static void start_relay(struct sup *s, int id, int rd[2]) {
    int scratch[2];
    char exe[] = "/proc/self/exe", cmd[] = "relay", num[16], why[256], *digits;
    snprintf(num, sizeof(num), "%d", id);
    char *argv[] = {exe, cmd, num, NULL};
    char **env = spawn_env(NULL, 0, &digits);
    pid_t pid = -1;
    if (env == NULL) {
        snprintf(why, sizeof(why), "out of memory");
    } else {
        /* Not in the generation's cgroup, nor as its user: the relay is not the generation. */
        struct spawn_req r = {.argv = argv,
                              .fds = rd,
                              .scratch = scratch,
                              .nfds = 2,
                              .env = env,
                              .pid_digits = digits,
                              .cgroup_procs = -1};
        pid = spawn_start(&r, why, sizeof(why));
        spawn_env_free(env);
    }
    if (pid > 0) {
        s->relays[s->nrelays++] = pid; /* room made by open_output() */
        contain_exclude(pid, true);    /* no generation's process, though our child */
    } else {
        say("generation %d's output has no relay (%s): what it writes there fails", id, why);
    }
    close(rd[0]);
    close(rd[1]);
}

/* Reaped @pid if it was a relay's; returns whether it was. */
bool relay_reaped(struct sup *s, pid_t pid) {
    for (size_t i = 0; i < s->nrelays; i++) {
        if (s->relays[i] == pid) {
            contain_exclude(pid, false);
            s->relays[i] = s->relays[--s->nrelays];
            return true;
        }
    }
    return false;
}

/* On the way out: give the relays a moment to copy what the generations last wrote. */
void wait_relays(struct sup *s) {
    int64_t end = now_ms() + 2000;
    while (s->nrelays > 0 && now_ms() < end) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid > 0)
            relay_reaped(s, pid);
        else if (pid == 0)
            sleep_ms_tool(10);
        else
            break;
    }
    free(s->relays);
}

/* A new generation @id of @s, owning no descriptor yet (each starts at -1), or NULL. */
static struct gen *gen_new(struct sup *s, int id) {
    struct gen *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->sup = s;
    g->id = id;
    g->notify_fd = -1;
    g->pidfd = -1;
    g->gone_fd = -1;
    return g;
}

/* Start generation s->next_gen: its notify socket, then COMMAND.  NULL with @why on failure. */
struct gen *gen_start(struct sup *s, char *why, size_t size) {
    struct gen *g = gen_new(s, s->next_gen++);
    if (g == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    g->drain_sig = s->args->stop_signal;
    procs_init(&g->procs, g->id, true);
    snprintf(g->notify_path, sizeof(g->notify_path), "%s/notify-%d", s->notify_dir, g->id);
    g->notify_fd = notify_open(g->notify_path);
    if (g->notify_fd < 0) {
        snprintf(why, size, "cannot make its notify socket: %s%s", strerror(errno),
                 resource_hint(errno));
        goto fail;
    }
    g->notify_ev = event_new(s->eb, g->notify_fd, EV_READ | EV_PERSIST, on_notify, g);
    g->timer = evtimer_new(s->eb, on_gen_timer, g);
    g->scan = evtimer_new(s->eb, on_gen_scan, g);
    if (g->notify_ev == NULL || g->timer == NULL || g->scan == NULL ||
        event_add(g->notify_ev, NULL) < 0) {
        snprintf(why, size, "cannot watch its notify socket");
        goto fail;
    }
    char notify[sizeof(g->notify_path) + 16], gen[32], *pid_digits;
    snprintf(notify, sizeof(notify), "NOTIFY_SOCKET=%s", g->notify_path);
    snprintf(gen, sizeof(gen), "AFDT_GENERATION=%d", g->id);
    s->announce[s->nannounce] = notify;
    s->announce[s->nannounce + 1] = gen;
    char **env = spawn_env((const char *const *)s->announce, s->nannounce + 2, &pid_digits);
    if (env == NULL) {
        snprintf(why, size, "out of memory");
        goto fail;
    }
    int rd[2], output[2];
    open_output(s, rd, output);
    struct spawn_req r = {.argv = s->args->argv,
                          .nofile = s->nofile_raised ? &s->nofile : NULL,
                          .fds = s->fds,
                          .scratch = s->scratch,
                          .nfds = s->args->nls,
                          .env = env,
                          .pid_digits = pid_digits,
                          .cgroup_procs = g->procs.cg_procs,
                          .user = s->args->user,
                          .output = output[0] >= 0 ? output : NULL};
    g->pid = spawn_start(&r, why, size);
    spawn_env_free(env);
    for (int i = 0; i < 2; i++) /* the generation's now: the relay ends when it is gone */
        if (output[i] >= 0)
            close(output[i]);
    if (rd[0] >= 0 && g->pid > 0)
        start_relay(s, g->id, rd);
    else if (rd[0] >= 0)
        close(rd[0]), close(rd[1]);
    if (g->pid < 0) {
        g->pid = 0;
        goto fail;
    }
    procs_started(&g->procs, g->pid);
    g->started_ms = now_ms();
    g->state = GEN_STARTING;
    g->proc = proc_id_of(g->pid); /* our child: its pid cannot be reused before we reap it */
    struct timeval tv = ms_tv(s->args->ready_timeout_ms), scan = ms_tv(READY_SCAN_MS);
    evtimer_add(g->timer, &tv);
    evtimer_add(g->scan, &scan);
    g->next = s->gens;
    s->gens = g;
    say("generation %d started: pid %d", g->id, (int)g->pid);
    save_state(s);
    return g;
fail:
    gen_free(g);
    return NULL;
}

/* Watch @pid, which is not our child, as generation @id through @pidfd (now the
 * generation's), in @state.  NULL after saying why. */
struct gen *gen_foreign(struct sup *s, int id, pid_t pid, int pidfd, enum gen_state state,
                        bool own_group, int drain_sig) {
    struct gen *g = gen_new(s, id);
    if (g == NULL) {
        say("out of memory");
        close(pidfd);
        return NULL;
    }
    g->pid = pid;
    g->proc = proc_id_of(pid);
    g->state = state;
    g->started_ms = now_ms();
    g->foreign = true;
    procs_init(&g->procs, id, false);
    procs_follow(&g->procs, pid); /* in the cgroup its dead supervisor made, if any */
    g->pidfd = pidfd;
    g->own_group = own_group;
    g->drain_sig = drain_sig;
    g->next = s->gens;
    s->gens = g;
    g->exit_ev = event_new(s->eb, pidfd, EV_READ, on_foreign_exit, g);
    g->timer = evtimer_new(s->eb, on_gen_timer, g);
    if (g->exit_ev == NULL || g->timer == NULL || event_add(g->exit_ev, NULL) < 0) {
        say("cannot watch process %d", (int)pid);
        gen_free(g);
        return NULL;
    }
    return g;
}

/* Hear a taken-over generation's NOTIFY_SOCKET again, at the path it was given (in our
 * runtime directory, where its dead supervisor had bound it). */
void gen_rebind_notify(struct gen *g, const char *path) {
    size_t dlen = strlen(g->sup->tmpdir);
    if (path[0] == '\0' || strncmp(path, g->sup->tmpdir, dlen) != 0 || path[dlen] != '/' ||
        strlen(path) >= sizeof(g->notify_path))
        return;
    snprintf(g->notify_path, sizeof(g->notify_path), "%s", path);
    g->notify_fd = notify_open(g->notify_path);
    if (g->notify_fd < 0)
        return;
    g->notify_ev = event_new(g->sup->eb, g->notify_fd, EV_READ | EV_PERSIST, on_notify, g);
    if (g->notify_ev)
        event_add(g->notify_ev, NULL);
}
