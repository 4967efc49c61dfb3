/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt serve: find out what is at the control path, acquire the sockets, then hand over to
 * the state machine (sup.c) until the supervisor stops. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "sup.h"

/* What is at the control path: 0 nothing (or a stale socket of ours, now removed), 1 a
 * supervisor to take over from (its greeting in *p, its sockets in *pred), -1 something not
 * ours or not trusted (said why).  Who answers is checked before it is asked anything. */
static int probe_control(const char *path, struct predecessor *p, struct afdt_named_fd **pred,
                         uint32_t *npred) {
    struct stat st;
    bool abstract = path[0] == '@';
    if (!abstract && lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        say("cannot use --control %s: %s", path, strerror(errno));
        return -1;
    }
    if (!abstract && !S_ISSOCK(st.st_mode)) {
        say("--control %s exists and is not a socket: not ours to replace", path);
        return -1;
    }
    char resp[AFDT_MSGLEN + 1], state[16];
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    if (exchange(path, "hello", resp, sizeof(resp), NULL, NULL, NULL, &e) < 0) {
        int err = errno;
        if (e.operation == AFDT_PEER) {
            say("--control %s: %s; refusing to take over from it (--trust-uid UID trusts "
                "another user)",
                path, e.message);
            return -1;
        }
        if (e.operation == AFDT_CONNECT && (err == ECONNREFUSED || err == ENOENT))
            return control_claim(path); /* stale, or gone: the control channel replaces it */
        say("--control %s is a socket that does not answer as an afdt supervisor: %s", path,
            err ? strerror(err) : e.message);
        return -1;
    }
    if (control_parse_hello(resp, p, state, sizeof(state)) < 0) {
        say("--control %s is served by something that is not an afdt supervisor "
            "(it answered \"%.60s\")",
            path, resp);
        return -1;
    }
    if (strcmp(state, "running") != 0) {
        say("the supervisor at %s (pid %d) is %s; try again once it is running or gone", path,
            p->pid, state[0] ? state : "in an unknown state");
        return -1;
    }
    say("taking over from the supervisor at %s (pid %d)", path, p->pid);
    int r = exchange(path, AFDT_LISTENERS_REQUEST, resp, sizeof(resp), NULL, pred, npred, &e);
    if (r < 0 || *pred == NULL) {
        say("cannot get the running supervisor's sockets: %s",
            r < 0 ? e.message : "it sent no socket set");
        return -1;
    }
    p->path = path;
    return 1;
}

/* Copy the sockets of the process @pidfd refers to (@who, for messages): for each --listen,
 * the one that @specs[i] describes.  Returns 0, or -1 after saying why. */
static int take_sockets(const struct serve_args *a, int pidfd, const char *const *specs,
                        const char *who, struct afdt_named_fd **taken, uint32_t *ntaken) {
    const char **names = calloc(a->nls, sizeof(*names));
    if (names == NULL) {
        say("out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < a->nls; i++)
        names[i] = a->ls[i].name;
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    int r = afdt_take_listeners_pidfd(pidfd, names, specs, a->nls, taken, &e);
    int err = errno;
    free(names);
    if (r < 0) {
        say("cannot take the sockets of %s: %s (%s)", who, e.message, strerror(err));
        return -1;
    }
    *ntaken = a->nls;
    say("took the sockets of %s", who);
    return 0;
}

/* Take the sockets of a generation left running by a supervisor that died on our control
 * path, as its state file in @rundir records (into *@st, *@taken).  Returns 1 when taken, 0
 * when there is nothing to take over, -1 after saying why. */
static int take_from_orphan(const struct serve_args *a, const char *rundir, struct state *st,
                            struct afdt_named_fd **taken, uint32_t *ntaken) {
    if (state_load(rundir, st) <= 0)
        return 0;
    if (proc_alive(&st->sup)) {
        say("the supervisor (pid %d) recorded in %s runs but does not answer at %s; stop it "
            "first",
            (int)st->sup.pid, rundir, a->control);
        return -1;
    }
    const struct state_gen *serving = NULL;
    for (uint32_t i = 0; i < st->ngens && serving == NULL; i++)
        if (strcmp(st->gens[i].state, "serving") == 0 && proc_alive(&st->gens[i].proc))
            serving = &st->gens[i];
    if (serving == NULL)
        return 0; /* it died with its generations: a fresh start */
    char who[64];
    snprintf(who, sizeof(who), "generation %d (pid %d)", serving->id, (int)serving->proc.pid);
    say("the supervisor (pid %d) on %s died; its %s still serves: taking it over", (int)st->sup.pid,
        a->control, who);
    /* The same sockets, by name and spec: each is then taken by its actual address. */
    const char **specs = calloc(a->nls, sizeof(*specs));
    int r = -1;
    if (specs == NULL) {
        say("out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < a->nls; i++) {
        for (uint32_t j = 0; j < st->nls && specs[i] == NULL; j++)
            if (strcmp(st->ls[j].name, a->ls[i].name) == 0 &&
                strcmp(st->ls[j].spec, a->ls[i].spec) == 0)
                specs[i] = st->ls[j].addr;
        if (specs[i] == NULL || st->nls != a->nls) {
            say("--listen %s=%s is not one of the sockets of %s: give the same --listen options "
                "as its supervisor had, or stop it (kill %d)",
                a->ls[i].name, a->ls[i].spec, who, (int)serving->proc.pid);
            goto out;
        }
    }
    int pidfd = proc_pidfd(&serving->proc);
    if (pidfd < 0) {
        say("%s is gone: %s", who, strerror(errno));
        r = 0;
        goto out;
    }
    r = take_sockets(a, pidfd, specs, who, taken, ntaken) < 0 ? -1 : 1;
    close(pidfd);
out:
    free(specs);
    return r;
}

/* The real and effective uids of process @id, still that very process once they are read (its
 * start time).  Returns 0, or -1. */
static int uids_of(const struct proc_id *id, uint32_t *ruid, uint32_t *euid) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)id->pid);
    FILE *f = fopen(path, "re");
    int r = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Uid: %u %u", ruid, euid) == 2)
            r = 0;
    if (f)
        fclose(f);
    return r == 0 && proc_alive(id) ? 0 : -1;
}

/* Whether @uid is ours, root's or a --trust-uid's. */
static bool uid_trusted(uint32_t uid) {
    struct afdt_client_options o;
    uint32_t uids[TOOL_TRUST_MAX + 2];
    trust_options(&o, uids);
    for (uint32_t i = 0; i < o.n_trusted_uids; i++)
        if (uids[i] == uid)
            return true;
    return false;
}

/* --adopt: take the sockets of process a->adopt_pid, matched by the --listen specs, if it runs
 * as a uid we trust (another user's process could keep copies of what we serve on: the same
 * rule as for a predecessor).  Returns its pidfd, or -1 after saying why. */
static int take_from_adopted(const struct serve_args *a, struct afdt_named_fd **taken,
                             uint32_t *ntaken) {
    char who[32];
    uint32_t ruid, euid;
    snprintf(who, sizeof(who), "pid %d", a->adopt_pid);
    struct proc_id id = proc_id_of(a->adopt_pid);
    int pidfd = proc_pidfd(&id);
    if (pidfd < 0) {
        say("cannot take the sockets of %s: %s", who,
            errno == ENOSYS ? "pidfd_open(2) needs Linux 5.3 or later"
                            : "no such process (or it has exited)");
        return -1;
    }
    if (uids_of(&id, &ruid, &euid) < 0) {
        say("cannot take the sockets of %s: no such process (or it has exited)", who);
        close(pidfd);
        return -1;
    }
    if (!uid_trusted(ruid) || !uid_trusted(euid)) {
        say("--adopt: %s runs as uid %u, which is not trusted (only our own uid, root and "
            "--trust-uid): its sockets are not taken",
            who, (unsigned)(uid_trusted(ruid) ? euid : ruid));
        close(pidfd);
        return -1;
    }
    const char **specs = calloc(a->nls, sizeof(*specs));
    if (specs == NULL) {
        say("out of memory");
        close(pidfd);
        return -1;
    }
    for (uint32_t i = 0; i < a->nls; i++)
        specs[i] = a->ls[i].spec;
    int r = take_sockets(a, pidfd, specs, who, taken, ntaken);
    free(specs);
    if (r < 0) {
        close(pidfd);
        return -1;
    }
    return pidfd;
}

/* As many descriptors as the hard limit allows: the supervisor holds every socket, and each
 * generation needs twice as many for a moment while they are put in place.  Generations get
 * the limit we were started with. */
static void raise_nofile(struct sup *s) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == rl.rlim_max)
        return;
    s->nofile = rl;
    rl.rlim_cur = rl.rlim_max;
    s->nofile_raised = setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* LISTEN_FDNAMES must fit in one environment string for exec. */
static int check_fdnames(const struct serve_args *a) {
    size_t len = sizeof("LISTEN_FDNAMES=");
    for (uint32_t i = 0; i < a->nls; i++)
        len += strlen(a->ls[i].name) + 1;
    long page = sysconf(_SC_PAGESIZE);
    size_t max = (size_t)(page > 0 ? page : 4096) * 32; /* the kernel's MAX_ARG_STRLEN */
    if (len <= max)
        return 0;
    say("LISTEN_FDNAMES would be %zu bytes, more than the %zu that exec allows one environment "
        "string: use shorter --listen names, or fewer sockets",
        len, max);
    return -1;
}

int serve_main(const struct serve_args *a) {
    struct sup s;
    struct predecessor p;
    struct state orphans;
    struct afdt_named_fd *pred = NULL;
    uint32_t npred = 0;
    char rundir[STATE_DIR_MAX];
    int adopt_pidfd = -1, rc = 1;

    log_as_supervisor();
    signal(SIGPIPE, SIG_IGN);
    memset(&orphans, 0, sizeof(orphans));
    if (state_dir_path(a->control, rundir, sizeof(rundir)) < 0)
        return 1;
    int rundir_lock = state_dir_make(rundir);
    if (rundir_lock < 0)
        return 1;
    say("runtime directory %s", rundir);
    state_dir_clean(rundir);
    sup_init(&s, a, rundir);
    trust_set(&a->trust);
    raise_nofile(&s);
    if (check_fdnames(a) < 0)
        return 1;
    int e = find_command(a->argv[0]);
    if (e) {
        say("cannot run %s: %s", a->argv[0],
            e == ENOENT && !strchr(a->argv[0], '/') ? "command not found" : strerror(e));
        goto out;
    }
    memset(&p, 0, sizeof(p));
    int kind = probe_control(a->control, &p, &pred, &npred);
    if (kind < 0)
        goto out;
    if (a->adopt_pid && kind == 1) {
        say("--adopt: a supervisor already serves at %s", a->control);
        goto out;
    }
    int orphaned = 0;
    if (a->adopt_pid) {
        adopt_pidfd = take_from_adopted(a, &pred, &npred);
        if (adopt_pidfd < 0)
            goto out;
    } else if (kind == 0) {
        orphaned = take_from_orphan(a, rundir, &orphans, &pred, &npred);
        if (orphaned < 0)
            goto out;
    }
    int r = listeners_acquire(a->ls, a->nls, pred != NULL, pred, npred);
    afdt_named_fds_free(pred, npred, 1);
    pred = NULL;
    if (r < 0)
        goto out;
    if (kind == 1)
        sup_follow(&s, &p);
    if (orphaned == 1) {
        listeners_adopt(a->ls, a->nls); /* its Unix socket files are ours now */
        sup_take_orphans(&s, &orphans);
    }
    if (adopt_pidfd >= 0)
        sup_adopt(&s, (pid_t)a->adopt_pid, adopt_pidfd);
    adopt_pidfd = -1; /* the supervisor's */
    rc = sup_run(&s);
    listeners_release(a->ls, a->nls, !sup_retired(&s));
out:
    afdt_named_fds_free(pred, npred, 1);
    if (adopt_pidfd >= 0)
        close(adopt_pidfd);
    state_free(&orphans);
    (void)rmdir(rundir); /* if we leave it empty */
    close(rundir_lock);
    return rc;
}
