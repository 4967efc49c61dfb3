/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's set-up and tear-down, its state file, and the loop the state machine runs
 * in. */
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
void save_state(struct sup *s) {
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
