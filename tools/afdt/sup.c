/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's state machine: every event (signals, child exits, notifications, timers,
 * control requests) arrives here, and only here does the supervisor's state change. */
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
#include "sup.h"

static void gen_drain(struct gen *g);
static void gen_free(struct gen *g);
static void save_state(struct sup *s);
static void respawn_or_stop(struct sup *s, int code, bool failure);

/* How often a starting generation is looked at to see whether it accepts yet. */
#define READY_SCAN_MS 10

/* ---- names ---- */

const char *gen_state_str(enum gen_state st) {
    switch (st) {
    case GEN_STARTING: return "starting";
    case GEN_SERVING: return "serving";
    default: return "draining";
    }
}

const char *sup_state_str(enum sup_state st) {
    switch (st) {
    case SUP_STARTING: return "starting";
    case SUP_RUNNING: return "running";
    default: return "stopping";
    }
}

const struct outcome *sup_outcome(const struct sup *s, int id) {
    const struct outcome *o = &s->outcomes[id % SUP_OUTCOMES];
    return id > 0 && o->id == id ? o : NULL;
}

static struct timeval ms_tv(int64_t ms) {
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* Tell our own service manager (systemd, or a supervisor above us) one sd_notify(3) datagram:
 * the lines of @fmt, each KEY=VALUE.  Every one has a STATUS= line for people. */
__attribute__((format(printf, 2, 3))) static void tell_manager(struct sup *s, const char *fmt,
                                                               ...) {
    if (s->parent_notify[0] == '\0')
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (notify_send(s->parent_notify, msg) < 0)
        say("cannot notify our own service manager: %s", strerror(errno));
}

static void describe_exit(int st, char *buf, size_t size, int *code) {
    if (WIFEXITED(st)) {
        *code = WEXITSTATUS(st);
        snprintf(buf, size, "exited with status %d", *code);
    } else {
        *code = 128 + WTERMSIG(st);
        snprintf(buf, size, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    }
}

/* ---- the supervisor's transitions ---- */

static void finish_if_done(struct sup *s) {
    if (s->state == SUP_STOPPING && s->gens == NULL)
        event_base_loopexit(s->eb, NULL);
}

/* Write @line into a client's outcome pipe: at most a few hundred bytes into an empty pipe, so it
 * never blocks; a client that went away (EPIPE) is no matter. */
static void tell_waiter(int fd, const char *line) {
    if (fd >= 0 && write(fd, line, strlen(line)) < 0 && errno != EPIPE)
        say("cannot write a restart's outcome: %s", strerror(errno));
}

/* The restart in progress is over; the client waiting on its outcome pipe, if any, is told, and,
 * when @old (the generation it replaced) drains, told again once that one is gone. */
static void finish_restart(struct sup *s, bool ok, const char *text, struct gen *old) {
    struct outcome *o = &s->outcomes[s->restart_id % SUP_OUTCOMES];
    char line[sizeof(o->text) + 16];
    o->state = ok ? OUTCOME_OK : OUTCOME_FAILED;
    snprintf(o->text, sizeof(o->text), "%s", text);
    say("restart %d %s: %s", s->restart_id, ok ? "succeeded" : "failed", text);
    s->restart_id = 0;
    snprintf(line, sizeof(line), "%s %s\n", ok ? "ok" : "failed", o->text);
    tell_waiter(s->result_fd, line);
    if (ok && old && s->result_fd >= 0 && old->gone_fd < 0)
        old->gone_fd = s->result_fd; /* now the old generation's, closed with it */
    else if (s->result_fd >= 0)
        close(s->result_fd);
    s->result_fd = -1;
}

static void close_control(struct sup *s) {
    if (s->server)
        afdt_close_server(s->server);
    s->server = NULL;
}

static void stop(struct sup *s, int code, const char *why) {
    if (s->state == SUP_STOPPING)
        return;
    s->state = SUP_STOPPING;
    s->exit_code = code;
    say("stopping (%s)", why);
    if (!s->retiring) /* the service goes on, under the successor named in MAINPID= */
        tell_manager(s, "STOPPING=1\nSTATUS=stopping: %s", why);
    if (s->restart_id)
        finish_restart(s, false, "the supervisor is stopping", NULL);
    s->starting = NULL;
    s->current = NULL;
    if (s->respawn_timer)
        evtimer_del(s->respawn_timer);
    for (struct gen *g = s->gens; g; g = g->next)
        gen_drain(g);
    finish_if_done(s);
}

static void retire(struct sup *s, int successor_pid) {
    say("handing over to the supervisor with pid %d and retiring", successor_pid);
    tell_manager(s, "MAINPID=%d\nSTATUS=handing over to the supervisor with pid %d", successor_pid,
                 successor_pid);
    /* The socket files and the control path are the successor's from now on. */
    s->retiring = true;
    s->owns_state = false; /* the runtime directory's state file is the successor's too */
    close_control(s);
    stop(s, 0, "retired");
}

/* The generation on trial failed (@g still running, or NULL when it has exited). */
static void start_failed(struct sup *s, struct gen *g, const char *what, int code) {
    char text[320];
    int id = s->restart_id;
    s->starting = NULL;
    if (g)
        gen_drain(g);
    if (s->restart_id) {
        s->rollbacks++;
        if (s->current)
            snprintf(text, sizeof(text), "%s; rolled back: generation %d (pid %d) keeps serving",
                     what, s->current->id, (int)s->current->pid);
        else
            snprintf(text, sizeof(text), "%s, and the serving generation had exited", what);
        finish_restart(s, false, text, NULL);
        tell_manager(s, "READY=1\nSTATUS=restart %d failed: %s", id, text);
        if (s->current == NULL)
            respawn_or_stop(s, s->current_exit < 0 ? 1 : s->current_exit, s->current_exit != 0);
        return;
    }
    if (s->respawning) {
        say("%s", what);
        respawn_or_stop(s, code, true);
        return;
    }
    if (s->pred_path) {
        say("%s; upgrade abandoned, the running supervisor keeps serving", what);
        stop(s, 1, "upgrade abandoned");
        return;
    }
    if (s->current && s->current->foreign) {
        /* The process we were to replace still serves: leave it be, untouched. */
        struct gen *adopted = s->current;
        say("%s; adoption abandoned: pid %d keeps serving without afdt", what, (int)adopted->pid);
        s->current = NULL;
        gen_free(adopted);
        stop(s, 1, "adoption abandoned");
        return;
    }
    (void)what; /* its exit is in the log already */
    stop(s, code, "its first generation exited");
}

static int on_control(const struct afdt_peer *peer, const uint8_t *request, uint32_t length,
                      struct afdt_reply *reply, void *userdata);
static void on_control_done(const struct afdt_peer *peer, const uint8_t *request, uint32_t length,
                            const struct afdt_reply *reply, int error, void *userdata);

static int open_control(struct sup *s, bool replacing) {
    s->server = control_serve(s->eb, s->args->control, s->args->control_mode, replacing, on_control,
                              on_control_done, s);
    return s->server ? 0 : -1;
}

/* Tell the predecessor to retire, then take the control path over. */
static void complete_takeover(struct sup *s) {
    char resp[128];
    const char *path = s->pred_path;
    if (ask(path, "retire", resp, sizeof(resp), NULL, NULL, NULL) == 0 &&
        strncmp(resp, "retiring", 8) == 0)
        say("the old supervisor (pid %d) is retiring", s->pred_pid);
    else
        say("the old supervisor (pid %d) did not agree to retire; taking its control path anyway",
            s->pred_pid);
    s->pred_path = NULL;
    s->state = SUP_RUNNING;
    s->owns_state = true;
    listeners_adopt(s->args->ls, s->args->nls);
    if (open_control(s, true) < 0)
        say("no control channel: SIGHUP restarts, SIGTERM stops");
}

static void gen_ready(struct gen *g, const char *how) {
    struct sup *s = g->sup;
    if (g != s->starting)
        return; /* a serving generation saying it again, or one already given up */
    s->starting = NULL;
    s->respawning = false;
    evtimer_del(g->timer);
    evtimer_del(g->scan);
    snprintf(g->ready_how, sizeof(g->ready_how), "%s", how);
    g->state = GEN_SERVING;
    struct gen *old = s->current;
    s->current = g;
    if (s->restart_id) {
        char text[320];
        int id = s->restart_id;
        s->restarts++;
        if (old)
            snprintf(text, sizeof(text),
                     "generation %d (pid %d) took over (%s); generation %d (pid %d) drains", g->id,
                     (int)g->pid, how, old->id, (int)old->pid);
        else
            snprintf(text, sizeof(text), "generation %d (pid %d) took over (%s)", g->id,
                     (int)g->pid, how);
        finish_restart(s, true, text, old);
        s->current_exit = -1;
        if (old)
            gen_drain(old);
        save_state(s);
        tell_manager(s, "READY=1\nSTATUS=serving: generation %d (pid %d); restart %d succeeded",
                     g->id, (int)g->pid, id);
        return;
    }
    say("generation %d (pid %d) is ready (%s)", g->id, (int)g->pid, how);
    if (s->pred_path)
        complete_takeover(s);
    if (old) {
        say("the adopted process (pid %d) drains (signal %s)", (int)old->pid,
            sigabbrev_np(old->drain_sig) ? sigabbrev_np(old->drain_sig) : "?");
        gen_drain(old);
    }
    s->state = SUP_RUNNING;
    save_state(s);
    /* MAINPID=: the manager may not have started us (an upgrade), and names us from now on. */
    tell_manager(s, "READY=1\nMAINPID=%d\nSTATUS=serving: generation %d (pid %d)", (int)getpid(),
                 g->id, (int)g->pid);
}

/* Readiness: a generation is ready once it is seen accepting on every socket (ready.c), with
 * or without READY=1; READY=1 alone does not do (a server may send it before any of its
 * processes accepts), unless accepting cannot be seen. Nothing carries over from one
 * generation to the next. */
static void gen_look(struct gen *g) {
    struct sup *s = g->sup;
    if (g != s->starting)
        return;
    /* Its first process and what containment knows of it (a daemon that left the tree). */
    pid_t roots[READY_MAX_PROCS];
    size_t nroots = 0;
    roots[nroots++] = g->pid;
    for (size_t i = 0; i < g->procs.n && nroots < READY_MAX_PROCS; i++)
        roots[nroots++] = g->procs.list[i].pid;
    enum ready_verdict v = ready_check(roots, nroots, s->inos, s->args->nls);
    g->cannot_tell = v == READY_CANNOT_TELL;
    if (v == READY_ACCEPTING) {
        gen_ready(g, g->sent_ready ? "it sent READY=1 and is accepting on every socket"
                                   : "it is accepting on every socket");
    } else if (v == READY_CANNOT_TELL && g->sent_ready) {
        gen_ready(g, "it sent READY=1; whether it accepts cannot be seen");
    } else if (g->scan) {
        struct timeval tv = ms_tv(READY_SCAN_MS);
        evtimer_add(g->scan, &tv);
    }
}

static void gen_ready_timeout(struct gen *g) {
    struct sup *s = g->sup;
    char t[32], what[256];
    format_age(s->args->ready_timeout_ms, t, sizeof(t));
    gen_look(g); /* a last look */
    if (g != s->starting)
        return;
    snprintf(what, sizeof(what), "generation %d (pid %d) %s within %s", g->id, (int)g->pid,
             g->sent_ready    ? "sent READY=1 but was not seen accepting on every socket"
             : g->cannot_tell ? "did not send READY=1, and whether it accepts could not be seen,"
                              : "was not seen accepting on every socket, nor sent READY=1,",
             t);
    start_failed(s, g, what, 1);
}

/* ---- generations ---- */

static struct gen *gen_by_pid(struct sup *s, pid_t pid) {
    for (struct gen *g = s->gens; g; g = g->next)
        if (g->pid == pid && !g->ended)
            return g;
    return NULL;
}

/* Look again at which processes each generation has. */
static void update_procs(struct sup *s) {
    struct procs *list[64];
    size_t n = 0;
    for (struct gen *g = s->gens; g && n < 64; g = g->next)
        if (!g->foreign || g->procs.outsider)
            list[n++] = &g->procs;
    if (procs_update(list, n) < 0)
        say("cannot read /proc to follow the generations' processes: %s", strerror(errno));
}

static void gen_free(struct gen *g) {
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
static void gen_signal(struct gen *g, int sig, bool with_group) {
    if (!g->foreign) {
        kill(g->pid, sig);
        return;
    }
    if (pidfd_signal(g->pidfd, sig) == 0 && with_group && g->own_group)
        kill(-g->pid, sig);
}

/* Ask @g to finish: its main process, or once that has exited all that is left of it. */
static void gen_drain(struct gen *g) {
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
static void sweep(struct sup *s) {
    update_procs(s);
    for (struct gen *g = s->gens, *next; g; g = next) {
        next = g->next;
        if (g->ended && g->procs.n == 0)
            gen_free(g);
    }
    finish_if_done(s);
}

/* What a generation said on its NOTIFY_SOCKET. */
static void gen_notified(struct gen *g, const struct notify_msg *m) {
    if (m->has_status)
        snprintf(g->status, sizeof(g->status), "%s", m->status);
    if (m->stopping)
        say("generation %d (pid %d) is stopping", g->id, (int)g->pid);
    if (m->errno_value)
        say("generation %d (pid %d) reports an error: %s", g->id, (int)g->pid,
            strerror(m->errno_value));
    if (m->bad_extend[0])
        say_limited(&g->bad_extend,
                    "generation %d (pid %d): EXTEND_TIMEOUT_USEC=%s is not a number of "
                    "microseconds (0 to %lld): ignored",
                    g->id, (int)g->pid, m->bad_extend, (long long)NOTIFY_EXTEND_MAX_USEC);
    if (m->has_extend && g->state == GEN_STARTING) {
        /* It asks for more time to get ready: from now, not from the start. */
        if (m->extend_usec == NOTIFY_EXTEND_MAX_USEC)
            say_limited(&g->bad_extend,
                        "generation %d (pid %d): EXTEND_TIMEOUT_USEC= is cut to the longest "
                        "extension, one hour",
                        g->id, (int)g->pid);
        struct timeval tv = ms_tv(m->extend_usec / 1000);
        evtimer_add(g->timer, &tv);
    }
    if (m->ready && g->state == GEN_STARTING) {
        g->sup->uses_notify = true;
        g->sent_ready = true;
        gen_look(g); /* last: it may end the generation's trial */
    }
}

static void on_notify(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    struct gen *g = arg;
    struct notify_msg m;
    for (int i = 0; i < 64 && notify_read(fd, &m) > 0; i++) {
        const struct trust *t = &g->sup->args->trust;
        if (!notify_sender_in(&m, g->pid, t->uids, t->n) && !procs_has(&g->procs, m.pid)) {
            say_limited(&g->sup->ignored_notify,
                        "generation %d: ignored a notification from pid %d (uid %u), not one of "
                        "its processes",
                        g->id, (int)m.pid, (unsigned)m.uid);
            continue;
        }
        gen_notified(g, &m);
    }
}

static void on_gen_scan(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    gen_look(arg);
}

static void on_gen_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct gen *g = arg;
    if (g->state == GEN_STARTING) {
        gen_ready_timeout(g);
    } else if (g->state == GEN_DRAINING) {
        char t[32];
        format_age(g->sup->args->drain_timeout_ms, t, sizeof(t));
        update_procs(g->sup);
        say("generation %d (pid %d) did not end within the drain timeout (%s): SIGKILL", g->id,
            (int)g->pid, t);
        if (g->foreign)
            gen_signal(g, SIGKILL, true);
        procs_signal(&g->procs, SIGKILL);
    }
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
static bool relay_reaped(struct sup *s, pid_t pid) {
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
static void wait_relays(struct sup *s) {
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

/* Start generation s->next_gen: its notify socket, then COMMAND.  NULL with @why on failure. */
static struct gen *gen_start(struct sup *s, char *why, size_t size) {
    struct gen *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    g->sup = s;
    g->id = s->next_gen++;
    g->notify_fd = -1;
    g->pidfd = -1;
    g->drain_sig = s->args->stop_signal;
    g->gone_fd = -1;
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

/* Start a restart; @result_fd (ours, or -1) is the write end of the asking client's outcome
 * pipe.  Returns the restart's number, or -1 with @msg saying why not now. */
static int restart(struct sup *s, const char *origin, int result_fd, char *msg, size_t size) {
    if (s->state == SUP_STOPPING) {
        snprintf(msg, size, "stopping: the supervisor is shutting down");
    } else if (s->starting && s->restart_id == 0) {
        char t[32];
        format_age(s->args->ready_timeout_ms - (now_ms() - s->starting->started_ms), t, sizeof(t));
        snprintf(msg, size,
                 "busy: generation %d, the first, is still starting (it has %s left to be "
                 "ready); ask again once it serves",
                 s->starting->id, t);
    } else if (s->starting) {
        snprintf(msg, size, "busy: a restart is in progress (generation %d is starting)",
                 s->starting->id);
    } else {
        msg = NULL;
    }
    if (msg) {
        if (result_fd >= 0)
            close(result_fd);
        return -1;
    }
    s->result_fd = result_fd;
    evtimer_del(s->respawn_timer); /* a respawn pending: this restart starts one now */
    int id = ++s->last_restart_id;
    struct outcome *o = &s->outcomes[id % SUP_OUTCOMES];
    o->id = id;
    o->state = OUTCOME_PENDING;
    o->text[0] = '\0';
    s->restart_id = id;
    say("restart %d (%s): starting generation %d", id, origin, s->next_gen);
    /* Before the start, so that even one that cannot start ends in READY=1 after RELOADING=1. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    tell_manager(s, "RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=restart %d: starting generation %d",
                 (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, id, s->next_gen);
    char why[256];
    struct gen *g = gen_start(s, why, sizeof(why));
    if (g == NULL) {
        start_failed(s, NULL, why, 1);
        return id;
    }
    s->starting = g;
    return id;
}

/* The serving generation ended on its own, or its replacement failed after it: start another
 * on the same sockets (the supervisor keeps them open meanwhile: connections wait in their
 * queues), unless --restart says not to or the start limit is reached. */
static void respawn_or_stop(struct sup *s, int code, bool failure) {
    enum restart_policy r = s->args->restart;
    if (r == RESTART_NEVER || (r == RESTART_ON_FAILURE && !failure)) {
        stop(s, code, "the serving generation exited on its own");
        return;
    }
    int64_t now = now_ms();
    int recent = 0;
    for (int i = 0; i < RESPAWN_BURST; i++)
        recent += s->respawn_ms[i] > 0 && now - s->respawn_ms[i] < RESPAWN_INTERVAL_MS;
    if (recent == RESPAWN_BURST) {
        say("giving up: %d respawns within %ds", RESPAWN_BURST, RESPAWN_INTERVAL_MS / 1000);
        stop(s, code, "the serving generation keeps failing");
        return;
    }
    int64_t pause = recent ? (int64_t)RESPAWN_PAUSE_MS << (recent - 1) : 0;
    s->respawn_ms[s->respawns % RESPAWN_BURST] = now + pause;
    struct timeval tv = ms_tv(pause);
    evtimer_add(s->respawn_timer, &tv);
}

static void on_respawn_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct sup *s = arg;
    char why[256];
    s->respawns++;
    say("respawn %u: starting generation %d", s->respawns, s->next_gen);
    tell_manager(s, "STATUS=respawn %u: starting generation %d", s->respawns, s->next_gen);
    s->respawning = true;
    s->starting = gen_start(s, why, sizeof(why));
    if (s->starting == NULL) {
        say("%s", why);
        respawn_or_stop(s, 1, true);
    }
}

/* Generation @g has ended, as @how says (with @code, the supervisor's exit status if it
 * stops for it; @failure: whether --restart on-failure respawns it). */
static void gen_gone(struct sup *s, struct gen *g, const char *how, int code, bool failure) {
    char what[200];
    int id = g->id;
    pid_t pid = g->pid;
    if (g->foreign && g->own_group)
        kill(-pid, SIGKILL); /* anything it left behind in its process group */
    bool was_starting = g == s->starting, was_current = g == s->current;
    g->ended = true;
    if (g->procs.n == 0) {
        gen_free(g);
    } else {
        /* What it left has the drain timeout to end, as a generation asked to stop. */
        if (g->state == GEN_DRAINING)
            procs_signal(&g->procs, g->drain_sig);
        gen_drain(g);
    }
    if (was_starting) {
        snprintf(what, sizeof(what), "generation %d (pid %d) %s before it was ready", id, (int)pid,
                 how);
        start_failed(s, NULL, what, code);
    } else if (was_current) {
        s->current = NULL;
        if (s->starting) {
            s->current_exit = code;
            say("waiting for generation %d to take over", s->starting->id);
        } else {
            respawn_or_stop(s, code, failure);
        }
    }
    finish_if_done(s);
}

/* The main process of @g, our child, has exited with status @st. */
static void gen_exited(struct sup *s, struct gen *g, int st) {
    char how[96];
    int code;
    describe_exit(st, how, sizeof(how), &code);
    update_procs(s);
    if (WIFEXITED(st) && code == 0 && g->state != GEN_DRAINING) {
        /* It daemonized: what it left is the generation now. */
        pid_t main = procs_main(&g->procs);
        if (main > 0) {
            say("generation %d (pid %d) exited with status 0 leaving pid %d: that is its main "
                "process now",
                g->id, (int)g->pid, (int)main);
            g->pid = main;
            g->proc = proc_id_of(main); /* our child too (we are a subreaper), or soon */
            save_state(s);
            return;
        }
    }
    say("generation %d (pid %d) %s", g->id, (int)g->pid, how);
    gen_gone(s, g, how, code, !WIFEXITED(st) || code != 0);
}

/* A foreign generation's pidfd became readable: it has exited. */
static void on_foreign_exit(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct gen *g = arg;
    bool draining = g->state == GEN_DRAINING;
    update_procs(g->sup);
    if (g->id == 0)
        say("the adopted process (pid %d) exited", (int)g->pid);
    else
        say("generation %d (pid %d) exited (its status goes to its parent, not to us)", g->id,
            (int)g->pid);
    gen_gone(g->sup, g, "exited", draining ? 0 : 1, true);
}

/* Watch @pid, which is not our child, as generation @id through @pidfd (now the
 * generation's), in @state.  NULL after saying why. */
static struct gen *gen_foreign(struct sup *s, int id, pid_t pid, int pidfd, enum gen_state state,
                               bool own_group, int drain_sig) {
    struct gen *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        say("out of memory");
        close(pidfd);
        return NULL;
    }
    g->sup = s;
    g->id = id;
    g->pid = pid;
    g->proc = proc_id_of(pid);
    g->state = state;
    g->started_ms = now_ms();
    g->notify_fd = -1;
    g->gone_fd = -1;
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
static void gen_rebind_notify(struct gen *g, const char *path) {
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

/* ---- events from outside: signals and the control channel ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    struct sup *s = arg;
    if (sig == SIGCHLD) {
        int st;
        pid_t pid;
        /* Generations' main processes, and orphans of theirs (we are a subreaper): those
         * are only reaped. */
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            struct gen *g = gen_by_pid(s, pid);
            if (g)
                gen_exited(s, g, st);
            else
                relay_reaped(s, pid);
        }
        sweep(s);
    } else if (sig == SIGHUP) {
        char msg[200];
        if (restart(s, "SIGHUP", -1, msg, sizeof(msg)) < 0)
            say("SIGHUP: no restart: %s", msg);
    } else {
        stop(s, 0, sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
}

/* Whether process @pid asked for the sockets lately (a successor does, before "retire"). */
static bool took_sockets(const struct sup *s, int pid) {
    for (unsigned i = 0; i < s->ntakers && i < 4; i++)
        if (s->takers[i] == pid)
            return true;
    return false;
}

static int on_control(const struct afdt_peer *peer, const uint8_t *request, uint32_t length,
                      struct afdt_reply *reply, void *userdata) {
    struct sup *s = userdata;
    char req[AFDT_MSGLEN + 1], *out = (char *)reply->content, msg[320];
    size_t cap = AFDT_MSGLEN;
    int n, arg;
    memcpy(req, request, length);
    req[length] = '\0';
    switch (control_parse(req, &arg)) {
    case CTL_HELLO: n = control_hello(s, out, cap); break;
    case CTL_STATUS: {
        update_procs(s);
        int fd = control_status_fd(s, arg == 1);
        if (fd < 0) {
            n = snprintf(out, cap, "error cannot write the status: %s", strerror(errno));
            break;
        }
        reply->fds[0] = fd; /* closed by on_control_done */
        reply->nfds = 1;
        n = snprintf(out, cap, "ok");
        break;
    }
    case CTL_RESTART: {
        char origin[64];
        snprintf(origin, sizeof(origin), "asked by pid %d", (int)peer->pid);
        /* The reply carries the read end of a pipe the outcome is written into when known, as
         * the control channel answers each request once, at once. */
        int p[2] = {-1, -1};
        if (pipe2(p, O_CLOEXEC) < 0 || fcntl(p[1], F_SETFL, O_NONBLOCK) < 0) {
            say("no outcome pipe for this restart (%s): the client will ask", strerror(errno));
            if (p[0] >= 0)
                close(p[0]), close(p[1]);
            p[0] = p[1] = -1;
        }
        int id = restart(s, origin, p[1], msg, sizeof(msg));
        if (id < 0) {
            n = snprintf(out, cap, "error %s", msg);
            if (p[0] >= 0)
                close(p[0]);
            break;
        }
        n = snprintf(out, cap, "started %d", id);
        if (p[0] >= 0) {
            reply->fds[0] = p[0]; /* closed by on_control_done */
            reply->nfds = 1;
        }
        break;
    }
    case CTL_RESULT: {
        const struct outcome *o = sup_outcome(s, arg);
        if (o == NULL)
            n = snprintf(out, cap, "error no such restart");
        else if (o->state == OUTCOME_PENDING)
            n = snprintf(out, cap, "pending");
        else
            n = snprintf(out, cap, "%s %s", o->state == OUTCOME_OK ? "ok" : "failed", o->text);
        break;
    }
    case CTL_STOP:
        n = snprintf(out, cap, "stopping pid=%d", (int)getpid());
        snprintf(msg, sizeof(msg), "asked by pid %d", (int)peer->pid);
        stop(s, 0, msg);
        break;
    case CTL_LISTENERS:
        reply->named = s->named; /* the supervisor's own, kept open */
        reply->nnamed = s->args->nls;
        s->takers[s->ntakers++ % 4] = (int)peer->pid;
        n = snprintf(out, cap, "%s", TOOL_PROTOCOL);
        break;
    case CTL_RETIRE:
        if (!took_sockets(s, (int)peer->pid)) {
            n = snprintf(out, cap, "error only a successor that took the sockets may ask this");
            say("refused \"retire\" from pid %d, which did not take the sockets", (int)peer->pid);
            break;
        }
        n = snprintf(out, cap, "retiring pid=%d", (int)getpid());
        retire(s, (int)peer->pid);
        break;
    default: n = snprintf(out, cap, "error unknown request \"%.60s\"", req); break;
    }
    reply->content_length = n < 0 ? 0 : (uint32_t)n < cap ? (uint32_t)n : (uint32_t)cap;
    return 0;
}

static void on_control_done(const struct afdt_peer *peer, const uint8_t *request, uint32_t length,
                            const struct afdt_reply *reply, int error, void *userdata) {
    (void)peer;
    (void)request;
    (void)length;
    (void)error;
    (void)userdata;
    for (uint32_t i = 0; i < reply->nfds; i++)
        close(reply->fds[i]);
}

/* ---- set-up and the loop ---- */

void sup_init(struct sup *s, const struct serve_args *a, const char *rundir) {
    memset(s, 0, sizeof(*s));
    s->args = a;
    s->adopt_pidfd = -1;
    snprintf(s->tmpdir, sizeof(s->tmpdir), "%s", rundir);
    s->next_gen = 1;
    s->current_exit = -1;
    s->result_fd = -1;
    s->started_ms = now_ms();
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ns && strlen(ns) < sizeof(s->parent_notify))
        snprintf(s->parent_notify, sizeof(s->parent_notify), "%s", ns);
    unsetenv("NOTIFY_SOCKET"); /* each generation gets its own */
}

void sup_follow(struct sup *s, const struct predecessor *p) {
    s->pred_path = p->path;
    s->pred_pid = p->pid;
    s->next_gen = p->gen + 1;
    s->uses_notify = p->uses_notify;
    s->restarts = p->restarts;
    s->rollbacks = p->rollbacks;
    s->last_restart_id = p->last_restart_id;
}

bool sup_retired(const struct sup *s) {
    return s->retiring;
}

/* The variables that tell a generation where its sockets are, by --convention, and who it
 * runs as (--user), with two slots left for NOTIFY_SOCKET and AFDT_GENERATION. */
static int prepare_announce(struct sup *s) {
    const struct serve_args *a = s->args;
    const struct spawn_user *u = a->user;
    char **v = calloc(a->nls + 7, sizeof(*v));
    size_t n = 0;
    if (v == NULL)
        return -1;
    s->announce = v;
    switch (a->convention) {
    case CONVENTION_SYSTEMD:
        if (asprintf(&v[n++], "LISTEN_FDS=%u", a->nls) < 0 || !(v[n++] = strdup(s->fdnames)))
            return -1;
        break;
    case CONVENTION_NGINX: {
        /* NGINX="3;4;": nginx matches each to its listen directive by address. */
        size_t len = sizeof("NGINX=") + 12 * a->nls;
        if ((v[n] = calloc(1, len)) == NULL)
            return -1;
        size_t off = (size_t)snprintf(v[n], len, "NGINX=");
        for (uint32_t i = 0; i < a->nls; i++)
            off += (size_t)snprintf(v[n] + off, len - off, "%u;", 3 + i);
        n++;
        break;
    }
    case CONVENTION_EINHORN:
        if (asprintf(&v[n++], "EINHORN_FD_COUNT=%u", a->nls) < 0)
            return -1;
        for (uint32_t i = 0; i < a->nls; i++)
            if (asprintf(&v[n++], "EINHORN_FD_%u=%u", i, 3 + i) < 0)
                return -1;
        break;
    }
    if (u &&
        (asprintf(&v[n++], "USER=%s", u->name) < 0 ||
         asprintf(&v[n++], "LOGNAME=%s", u->name) < 0 || asprintf(&v[n++], "HOME=%s", u->home) < 0))
        return -1;
    s->nannounce = n;
    return 0;
}

static void free_announce(struct sup *s) {
    for (size_t i = 0; s->announce && i < s->nannounce; i++)
        free(s->announce[i]);
    free(s->announce);
}

void sup_take_orphans(struct sup *s, struct state *st) {
    s->orphans = st;
    s->next_gen = st->next_gen;
    s->uses_notify = st->uses_notify;
    s->restarts = st->restarts;
    s->rollbacks = st->rollbacks;
    s->last_restart_id = st->last_restart_id;
}

void sup_adopt(struct sup *s, pid_t pid, int pidfd) {
    s->adopt_pid = pid;
    s->adopt_pidfd = pidfd; /* now the supervisor's */
}

/* Write what a successor needs, should we die, to the state file (while it is ours). */
static void save_state(struct sup *s) {
    if (!s->owns_state || s->eb == NULL)
        return;
    const struct serve_args *a = s->args;
    struct state st;
    memset(&st, 0, sizeof(st));
    st.sup = proc_id_of(getpid());
    snprintf(st.control, sizeof(st.control), "%s", a->control);
    st.next_gen = s->next_gen;
    st.uses_notify = s->uses_notify;
    st.restarts = s->restarts;
    st.rollbacks = s->rollbacks;
    st.last_restart_id = s->last_restart_id;
    st.ls = calloc(a->nls, sizeof(*st.ls));
    if (st.ls == NULL)
        return;
    st.nls = a->nls;
    for (uint32_t i = 0; i < a->nls; i++) {
        snprintf(st.ls[i].name, sizeof(st.ls[i].name), "%s", a->ls[i].name);
        snprintf(st.ls[i].spec, sizeof(st.ls[i].spec), "%s", a->ls[i].spec);
        if (socket_spec(a->ls[i].fd, st.ls[i].addr, sizeof(st.ls[i].addr)) < 0)
            snprintf(st.ls[i].addr, sizeof(st.ls[i].addr), "%s", a->ls[i].spec);
    }
    for (struct gen *g = s->gens; g && st.ngens < STATE_MAX_GENS; g = g->next) {
        struct state_gen *sg = &st.gens[st.ngens++];
        sg->id = g->id;
        sg->proc = g->proc;
        sg->own_group = !g->foreign || g->own_group;
        snprintf(sg->state, sizeof(sg->state), "%s", gen_state_str(g->state));
        snprintf(sg->notify, sizeof(sg->notify), "%s", g->notify_fd >= 0 ? g->notify_path : "");
    }
    if (state_save(s->tmpdir, &st) < 0)
        say("cannot write the state file in %s: %s", s->tmpdir, strerror(errno));
    state_free(&st);
}

/* Watch what a supervisor that died left running: its serving generation serves on, under
 * us; any other drains.  Returns the serving one, or NULL. */
static struct gen *take_orphans(struct sup *s) {
    struct gen *serving = NULL;
    for (uint32_t i = 0; i < s->orphans->ngens; i++) {
        const struct state_gen *sg = &s->orphans->gens[i];
        int pidfd = proc_pidfd(&sg->proc);
        if (pidfd < 0)
            continue; /* gone */
        bool serves = serving == NULL && strcmp(sg->state, "serving") == 0;
        struct gen *g =
            gen_foreign(s, sg->id, sg->proc.pid, pidfd, serves ? GEN_SERVING : GEN_STARTING,
                        sg->own_group, s->args->stop_signal);
        if (g == NULL)
            continue;
        gen_rebind_notify(g, sg->notify);
        if (serves) {
            serving = g;
            say("generation %d (pid %d) is serving: taken over from the supervisor (pid %d) "
                "that died",
                g->id, (int)g->pid, (int)s->orphans->sup.pid);
        } else {
            say("generation %d (pid %d), left %s by the supervisor that died, is stopped", g->id,
                (int)g->pid, sg->state);
            gen_drain(g);
        }
    }
    return serving;
}

/* The sockets in the shapes the generations and "listeners" need. */
static int prepare_sets(struct sup *s) {
    const struct serve_args *a = s->args;
    size_t names = sizeof("LISTEN_FDNAMES=");
    for (uint32_t i = 0; i < a->nls; i++)
        names += strlen(a->ls[i].name) + 1;
    s->named = calloc(a->nls, sizeof(*s->named));
    s->fds = calloc(a->nls, sizeof(int));
    s->scratch = calloc(a->nls, sizeof(int));
    s->fdnames = calloc(1, names);
    s->inos = calloc(a->nls, sizeof(*s->inos));
    if (!s->named || !s->fds || !s->scratch || !s->fdnames || !s->inos) {
        say("out of memory");
        return -1;
    }
    strcpy(s->fdnames, "LISTEN_FDNAMES=");
    for (uint32_t i = 0; i < a->nls; i++) {
        char addr[160];
        s->named[i].fd = s->fds[i] = a->ls[i].fd;
        s->inos[i] = ready_socket_inode(a->ls[i].fd);
        memcpy(s->named[i].name, a->ls[i].name, sizeof(s->named[i].name));
        if (i)
            strcat(s->fdnames, ":");
        strcat(s->fdnames, a->ls[i].name);
        describe_socket(a->ls[i].fd, addr, sizeof(addr), NULL);
        say("socket %s: %s on %s (%s)", a->ls[i].name, a->ls[i].spec, addr,
            listener_source_str(a->ls[i].source));
    }
    if (prepare_announce(s) < 0) {
        say("out of memory");
        return -1;
    }
    return 0;
}

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    sweep(arg);
}

/* Where the notify sockets go: the runtime directory (0700: only this user and root may
 * enter, so nobody else can send a notification, flood the log with them or stall us with a
 * descriptor).  Under root, a generation running as another user (--user, or a --trust-uid it
 * drops to) needs a directory that user may enter: one beside it, owned by that user. */
static int make_notify_dir(struct sup *s) {
    memcpy(s->notify_dir, s->tmpdir, sizeof(s->notify_dir));
    const struct trust *t = &s->args->trust;
    /* --user's uid first: its generations must be heard. */
    uint32_t uids[TOOL_TRUST_MAX + 1], n = 0;
    if (s->args->user)
        uids[n++] = (uint32_t)s->args->user->uid;
    for (uint32_t i = 0; i < t->n; i++)
        uids[n++] = t->uids[i];
    for (uint32_t i = 0; i < n; i++) {
        if (uids[i] == getuid() || uids[i] == 0 || getuid() != 0)
            continue; /* only root can give a directory away */
        int len = snprintf(s->notify_dir, sizeof(s->notify_dir), "%s-notify-XXXXXX", s->tmpdir);
        if (len <= 0 || (size_t)len >= sizeof(s->notify_dir) || mkdtemp(s->notify_dir) == NULL) {
            say("cannot make a notify directory beside %s: %s", s->tmpdir, strerror(errno));
            s->notify_dir[0] = '\0';
            return -1;
        }
        if (chown(s->notify_dir, uids[i], (gid_t)-1) < 0) {
            say("cannot give %s to uid %u: %s", s->notify_dir, (unsigned)uids[i], strerror(errno));
            rmdir(s->notify_dir);
            s->notify_dir[0] = '\0';
            return -1;
        }
        break; /* one directory has one owner: the first such uid */
    }
    return 0;
}

static int watch_signals(struct sup *s) {
    const int sigs[4] = {SIGCHLD, SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 4; i++) {
        s->sigs[i] = evsignal_new(s->eb, sigs[i], on_signal, s);
        if (s->sigs[i] == NULL || event_add(s->sigs[i], NULL) < 0) {
            say("cannot watch signal %d: %s%s", sigs[i], strerror(errno), resource_hint(errno));
            return -1;
        }
    }
    return 0;
}

int sup_run(struct sup *s) {
    int rc = 1;
    char why[256];
    s->eb = event_base_new();
    if (s->eb == NULL) {
        int e = errno; /* libevent has said its own line */
        say("cannot start the event loop: %s%s", strerror(e), resource_hint(e));
        goto out;
    }
    if (prepare_sets(s) < 0 || make_notify_dir(s) < 0 || watch_signals(s) < 0)
        goto out;
    /* The state file is ours unless a live supervisor still runs: then once it retires. */
    s->owns_state = s->pred_path == NULL;
    if (contain_init(!s->args->no_cgroup, why, sizeof(why)) < 0) {
        say("%s", why);
        goto out;
    }
    say("containment: %s", why);
    /* A look through cgroups is cheap; one through the whole of /proc less so. */
    struct timeval sweep = {contain_has_cgroups() ? 0 : 1, contain_has_cgroups() ? 250000 : 0};
    s->respawn_timer = evtimer_new(s->eb, on_respawn_timer, s);
    s->sweep = event_new(s->eb, -1, EV_PERSIST, on_sweep, s);
    if (s->respawn_timer == NULL || s->sweep == NULL || event_add(s->sweep, &sweep) < 0) {
        say("cannot set timers");
        goto out;
    }
    if (s->pred_path == NULL && open_control(s, false) < 0)
        goto out;
    if (s->orphans)
        s->current = take_orphans(s);
    if (s->adopt_pidfd >= 0) {
        /* Generation 0: the process we take the place of. */
        int signal = s->args->adopt_signal;
        s->current = gen_foreign(s, 0, s->adopt_pid, s->adopt_pidfd, GEN_SERVING, false, signal);
        s->adopt_pidfd = -1; /* the generation's, or closed */
        if (s->current == NULL)
            goto out;
        say("the adopted process (pid %d) serves until generation %d is ready", (int)s->adopt_pid,
            s->next_gen);
    }
    if (s->current && s->orphans) {
        s->state = SUP_RUNNING;
        save_state(s);
        tell_manager(s, "READY=1\nMAINPID=%d\nSTATUS=serving: generation %d (pid %d), taken back",
                     (int)getpid(), s->current->id, (int)s->current->pid);
    } else {
        s->starting = gen_start(s, why, sizeof(why));
        if (s->starting == NULL) {
            say("%s", why);
            goto out;
        }
    }
    event_base_dispatch(s->eb);
    rc = s->exit_code;
    say("stopped; exit status %d", rc);
out:
    close_control(s);
    if (s->adopt_pidfd >= 0)
        close(s->adopt_pidfd);
    s->adopt_pidfd = -1;
    /* Only after a failure to start the loop; an adopted process is left as it was. */
    while (s->gens)
        gen_free(s->gens);
    if (s->notify_dir[0] && strcmp(s->notify_dir, s->tmpdir) != 0)
        rmdir(s->notify_dir);
    contain_end_all(); /* none should be left: a stray would have been ended with its own */
    if (s->sweep)
        event_free(s->sweep);
    if (s->respawn_timer)
        event_free(s->respawn_timer);
    if (s->owns_state)
        state_remove(s->tmpdir);
    (void)rmdir(s->tmpdir); /* once empty: a successor's notify sockets may still be there */
    for (int i = 0; i < 4; i++)
        if (s->sigs[i])
            event_free(s->sigs[i]);
    if (s->eb)
        event_base_free(s->eb);
    free(s->named);
    free(s->fds);
    free(s->scratch);
    free(s->fdnames);
    free(s->inos);
    free_announce(s);
    wait_relays(s);
    return rc;
}
