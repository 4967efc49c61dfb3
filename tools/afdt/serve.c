/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt serve: own the sockets, run generations of COMMAND on them, restart and hand over. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "supervisor.h"

void notify_parent(struct sup *s, const char *msg) {
    if (s->parent_notify[0] == '\0')
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(s->parent_notify);
    if (len >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, s->parent_notify, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* an abstract name */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen) < 0)
        say("cannot notify our own service manager: %s", strerror(errno));
    close(fd);
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

static void finish_if_done(struct sup *s) {
    if (s->state == SUP_STOPPING && s->gens == NULL)
        event_base_loopexit(s->eb, NULL);
}

static void finish_restart(struct sup *s, bool ok, const char *text) {
    struct outcome *o = &s->outcomes[s->restart_id % SUP_OUTCOMES];
    o->state = ok ? OUTCOME_OK : OUTCOME_FAILED;
    snprintf(o->text, sizeof(o->text), "%s", text);
    say("restart %d %s: %s", s->restart_id, ok ? "succeeded" : "failed", text);
    s->restart_id = 0;
}

void sup_stop(struct sup *s, int code, const char *why) {
    if (s->state == SUP_STOPPING)
        return;
    s->state = SUP_STOPPING;
    s->exit_code = code;
    say("stopping (%s)", why);
    notify_parent(s, "STOPPING=1");
    if (s->restart_id)
        finish_restart(s, false, "the supervisor is stopping");
    s->starting = NULL;
    s->current = NULL;
    for (struct gen *g = s->gens; g; g = g->next)
        gen_drain(g);
    finish_if_done(s);
}

void sup_retire(struct sup *s, int successor_pid) {
    say("handing over to the supervisor with pid %d and retiring", successor_pid);
    /* The socket files and the control path are the successor's from now on. */
    s->retiring = true;
    control_close(s);
    sup_stop(s, 0, "retired");
}

/* The generation on trial failed (@g still running, or NULL when it has exited). */
static void start_failed(struct sup *s, struct gen *g, const char *what, int code) {
    char text[320];
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
        finish_restart(s, false, text);
        notify_parent(s, "READY=1");
        if (s->current == NULL)
            sup_stop(s, s->current_exit < 0 ? 1 : s->current_exit, "no generation left to serve");
        return;
    }
    if (s->pred_path) {
        say("%s; upgrade abandoned, the running supervisor keeps serving", what);
        sup_stop(s, 1, "upgrade abandoned");
        return;
    }
    (void)what; /* its exit is in the log already */
    sup_stop(s, code, "its first generation exited");
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
    listeners_adopt(s->args->ls, s->args->nls);
    if (control_open(s, true) < 0)
        say("no control channel: SIGHUP restarts, SIGTERM stops");
}

void sup_gen_ready(struct gen *g, const char *how) {
    struct sup *s = g->sup;
    if (g != s->starting)
        return; /* a serving generation saying it again, or one already given up */
    s->starting = NULL;
    evtimer_del(g->timer);
    g->state = GEN_SERVING;
    struct gen *old = s->current;
    s->current = g;
    if (s->restart_id) {
        char text[320];
        s->restarts++;
        if (old)
            snprintf(text, sizeof(text),
                     "generation %d (pid %d) took over (%s); generation %d (pid %d) drains", g->id,
                     (int)g->pid, how, old->id, (int)old->pid);
        else
            snprintf(text, sizeof(text), "generation %d (pid %d) took over (%s)", g->id,
                     (int)g->pid, how);
        finish_restart(s, true, text);
        s->current_exit = -1;
        if (old)
            gen_drain(old);
        notify_parent(s, "READY=1");
        return;
    }
    say("generation %d (pid %d) is ready (%s)", g->id, (int)g->pid, how);
    if (s->pred_path)
        complete_takeover(s);
    s->state = SUP_RUNNING;
    notify_parent(s, "READY=1");
}

void sup_gen_timeout(struct gen *g) {
    struct sup *s = g->sup;
    char t[32], what[200];
    format_age(s->args->ready_timeout_ms, t, sizeof(t));
    if (!s->uses_notify) {
        /* It never used NOTIFY_SOCKET: having run this long is all we can know. */
        snprintf(what, sizeof(what), "it ran %s without exiting", t);
        sup_gen_ready(g, what);
        return;
    }
    snprintf(what, sizeof(what), "generation %d (pid %d) did not send READY=1 within %s", g->id,
             (int)g->pid, t);
    start_failed(s, g, what, 1);
}

int sup_restart(struct sup *s, const char *origin, char *msg, size_t size) {
    if (s->state == SUP_STOPPING) {
        snprintf(msg, size, "stopping: the supervisor is shutting down");
        return -1;
    }
    if (s->starting && s->restart_id == 0) {
        snprintf(msg, size, "busy: generation %d is still starting", s->starting->id);
        return -1;
    }
    if (s->starting) {
        snprintf(msg, size, "busy: a restart is in progress (generation %d is starting)",
                 s->starting->id);
        return -1;
    }
    int id = ++s->last_restart_id;
    struct outcome *o = &s->outcomes[id % SUP_OUTCOMES];
    o->id = id;
    o->state = OUTCOME_PENDING;
    o->text[0] = '\0';
    s->restart_id = id;
    say("restart %d (%s): starting generation %d", id, origin, s->next_gen);
    char why[256];
    struct gen *g = gen_spawn(s, why, sizeof(why));
    if (g == NULL) {
        start_failed(s, NULL, why, 1);
        return id;
    }
    s->starting = g;
    char reloading[64];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(reloading, sizeof(reloading), "RELOADING=1\nMONOTONIC_USEC=%lld",
             (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    notify_parent(s, reloading);
    return id;
}

static void on_child_exit(struct sup *s, struct gen *g, int st) {
    char how[96], what[200];
    int code, id = g->id;
    pid_t pid = g->pid;
    describe_exit(st, how, sizeof(how), &code);
    say("generation %d (pid %d) %s", id, (int)pid, how);
    kill(-pid, SIGKILL); /* anything it left behind in its process group */
    bool was_starting = g == s->starting, was_current = g == s->current;
    gen_free(g);
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
            sup_stop(s, code, "the serving generation exited on its own");
        }
    }
    finish_if_done(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    struct sup *s = arg;
    if (sig == SIGCHLD) {
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            struct gen *g = gen_by_pid(s, pid);
            if (g)
                on_child_exit(s, g, st);
        }
    } else if (sig == SIGHUP) {
        char msg[200];
        if (sup_restart(s, "SIGHUP", msg, sizeof(msg)) < 0)
            say("SIGHUP: no restart: %s", msg);
    } else {
        char why[32];
        snprintf(why, sizeof(why), "%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
        sup_stop(s, 0, why);
    }
}

/* What is at the control path: 0 nothing (or a stale socket), 1 a supervisor to take over
 * from (its sockets in *pred), -1 something not ours (said why). */
static int probe_control(struct sup *s, struct afdt_named_fd **pred, uint32_t *npred) {
    const char *path = s->args->control;
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        say("cannot use --control %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        say("--control %s exists and is not a socket: not ours to replace", path);
        return -1;
    }
    char resp[AFDT_MSGLEN + 1];
    uint32_t len = AFDT_MSGLEN;
    int fd = -1;
    struct timeval tv = {TOOL_ASK_TIMEOUT_S, 0};
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    if (afdt_sync_client(path, (const uint8_t *)"hello", 5, (uint8_t *)resp, &len, &fd, &tv, &e) <
        0) {
        int err = errno;
        if (e.operation == AFDT_CONNECT && (err == ECONNREFUSED || err == ENOENT))
            return 0; /* stale: the control channel replaces it */
        say("--control %s is a socket that does not answer as an afdt supervisor: %s", path,
            err ? strerror(err) : e.message);
        return -1;
    }
    if (fd >= 0)
        close(fd);
    resp[len] = '\0';
    size_t plen = strlen(TOOL_PROTOCOL);
    if (strncmp(resp, TOOL_PROTOCOL, plen) != 0 || resp[plen] != ' ') {
        say("--control %s is served by something that is not an afdt supervisor "
            "(it answered \"%.60s\")",
            path, resp);
        return -1;
    }
    int pid = 0, gen = 0, notify = 0, last = 0;
    unsigned restarts = 0, rollbacks = 0;
    char state[16] = "";
    sscanf(resp + plen, " pid=%d gen=%d notify=%d restarts=%u rollbacks=%u restart=%d state=%15s",
           &pid, &gen, &notify, &restarts, &rollbacks, &last, state);
    if (strcmp(state, "running") != 0) {
        say("the supervisor at %s (pid %d) is %s; try again once it is running or gone", path, pid,
            state[0] ? state : "in an unknown state");
        return -1;
    }
    say("taking over from the supervisor at %s (pid %d)", path, pid);
    len = AFDT_MSGLEN;
    uint32_t nfds = 0;
    if (afdt_sync_client_ex(path, (const uint8_t *)AFDT_LISTENERS_REQUEST,
                            sizeof(AFDT_LISTENERS_REQUEST) - 1, (uint8_t *)resp, &len, NULL, &nfds,
                            pred, npred, &tv, &e) < 0 ||
        *pred == NULL) {
        say("cannot get the running supervisor's sockets: %s",
            *pred == NULL ? "it sent no socket set" : e.message);
        return -1;
    }
    s->pred_path = path;
    s->pred_pid = pid;
    s->next_gen = gen + 1;
    s->uses_notify = notify != 0;
    s->restarts = restarts;
    s->rollbacks = rollbacks;
    s->last_restart_id = last;
    return 1;
}

/* The sockets in the shapes the generations and "listeners" need. */
static int prepare_sets(struct sup *s) {
    const struct serve_args *a = s->args;
    size_t names = 1;
    for (uint32_t i = 0; i < a->nls; i++)
        names += strlen(a->ls[i].name) + 1;
    s->named = calloc(a->nls, sizeof(*s->named));
    s->fds = calloc(a->nls, sizeof(int));
    s->scratch = calloc(a->nls, sizeof(int));
    s->fdnames = calloc(1, names);
    if (!s->named || !s->fds || !s->scratch || !s->fdnames) {
        say("out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < a->nls; i++) {
        char addr[160];
        s->named[i].fd = s->fds[i] = a->ls[i].fd;
        memcpy(s->named[i].name, a->ls[i].name, sizeof(s->named[i].name));
        if (i)
            strcat(s->fdnames, ":");
        strcat(s->fdnames, a->ls[i].name);
        describe_socket(a->ls[i].fd, addr, sizeof(addr), NULL);
        say("socket %s: %s on %s (%s)", a->ls[i].name, a->ls[i].spec, addr,
            listener_source_str(a->ls[i].source));
    }
    return 0;
}

static int make_tmpdir(struct sup *s) {
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] != '/' || strlen(base) > 40)
        base = "/tmp";
    snprintf(s->tmpdir, sizeof(s->tmpdir), "%s/afdt-XXXXXX", base);
    if (mkdtemp(s->tmpdir) == NULL) {
        say("cannot make a private directory in %s: %s", base, strerror(errno));
        s->tmpdir[0] = '\0';
        return -1;
    }
    /* Searchable, not listable: a generation that drops its privileges can still reach its
     * NOTIFY_SOCKET, whose senders are checked one by one. */
    (void)chmod(s->tmpdir, 0711);
    return 0;
}

static int watch_signals(struct sup *s) {
    const int sigs[4] = {SIGCHLD, SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 4; i++) {
        s->sigs[i] = evsignal_new(s->eb, sigs[i], on_signal, s);
        if (s->sigs[i] == NULL || event_add(s->sigs[i], NULL) < 0) {
            say("cannot watch signal %d", sigs[i]);
            return -1;
        }
    }
    return 0;
}

int serve_main(const struct serve_args *a) {
    struct sup s;
    struct afdt_named_fd *pred = NULL;
    uint32_t npred = 0;
    int rc = 1;

    say_with_pid();
    signal(SIGPIPE, SIG_IGN);
    memset(&s, 0, sizeof(s));
    s.args = a;
    s.next_gen = 1;
    s.current_exit = -1;
    s.started_ms = now_ms();
    const char *ns = getenv("NOTIFY_SOCKET");
    if (ns && strlen(ns) < sizeof(s.parent_notify))
        snprintf(s.parent_notify, sizeof(s.parent_notify), "%s", ns);
    unsetenv("NOTIFY_SOCKET"); /* each generation gets its own */

    int e = find_command(a->argv[0]);
    if (e) {
        say("cannot run %s: %s", a->argv[0],
            e == ENOENT && !strchr(a->argv[0], '/') ? "command not found" : strerror(e));
        return 1;
    }
    int kind = probe_control(&s, &pred, &npred);
    if (kind < 0)
        return 1;
    int r = listeners_acquire(a->ls, a->nls, kind == 1, pred, npred);
    afdt_named_fds_free(pred, npred, 1);
    if (r < 0)
        return 1;
    s.eb = event_base_new();
    if (s.eb == NULL || prepare_sets(&s) < 0 || make_tmpdir(&s) < 0 || watch_signals(&s) < 0)
        goto out;
    if (kind == 0 && control_open(&s, false) < 0)
        goto out;
    char why[256];
    s.starting = gen_spawn(&s, why, sizeof(why));
    if (s.starting == NULL) {
        say("%s", why);
        goto out;
    }
    event_base_dispatch(s.eb);
    rc = s.exit_code;
    say("stopped; exit status %d", rc);
out:
    control_close(&s);
    while (s.gens) /* only after a failure to start the loop */
        gen_free(s.gens);
    listeners_release(a->ls, a->nls, !s.retiring);
    if (s.tmpdir[0])
        rmdir(s.tmpdir);
    for (int i = 0; i < 4; i++)
        if (s.sigs[i])
            event_free(s.sigs[i]);
    if (s.eb)
        event_base_free(s.eb);
    free(s.named);
    free(s.fds);
    free(s.scratch);
    free(s.fdnames);
    return rc;
}
