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
#include "sup_internal.h"

static void respawn_or_stop(struct sup *s, int code, bool failure);

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

/* Tell our own service manager (systemd, or a supervisor above us) one sd_notify(3) datagram:
 * the lines of @fmt, each KEY=VALUE.  Every one has a STATUS= line for people. */
void tell_manager(struct sup *s, const char *fmt, ...) {
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

void finish_if_done(struct sup *s) {
    if (s->state == SUP_STOPPING && s->gens == NULL)
        event_base_loopexit(s->eb, NULL);
}

/* Write @line into a client's outcome pipe: at most a few hundred bytes into an empty pipe, so it
 * never blocks; a client that went away (EPIPE) is no matter. */
void tell_waiter(int fd, const char *line) {
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

void close_control(struct sup *s) {
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

int open_control(struct sup *s, bool replacing) {
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

/* What a generation said on its NOTIFY_SOCKET. */
static void gen_notified(struct gen *g, const struct notify_msg *m) {
    if (m->has_status)
        snprintf(g->status, sizeof(g->status), "%s", m->status);
    if (m->stopping)
        say_limited(&g->said, "generation %d (pid %d) is stopping", g->id, (int)g->pid);
    if (m->errno_value)
        say_limited(&g->said, "generation %d (pid %d) reports an error: %s", g->id, (int)g->pid,
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

void on_notify(evutil_socket_t fd, short what, void *arg) {
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

void on_gen_scan(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    gen_look(arg);
}

void on_gen_timer(evutil_socket_t fd, short what, void *arg) {
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

void on_respawn_timer(evutil_socket_t fd, short what, void *arg) {
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
void on_foreign_exit(evutil_socket_t fd, short what, void *arg) {
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

/* ---- events from outside: signals and the control channel ---- */

void on_signal(evutil_socket_t sig, short what, void *arg) {
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
