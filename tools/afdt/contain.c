/* SPDX-License-Identifier: BSD-3-Clause */
/* Containment: every process a generation starts stays known to the supervisor (a child
 * subreaper, a cgroup per generation where one can be made, else /proc), and can be ended. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "contain.h"

/* Where the generations' cgroups are made: the supervisor's own cgroup v2 directory, or -1. */
static int cg_base = -1;
static char cg_base_path[PATH_MAX];
static char cg_own[PATH_MAX]; /* its path in the hierarchy: "" for the root */

/* The mount point of the cgroup v2 hierarchy (from /proc/self/mountinfo), when it is mounted
 * from its root. */
static int cgroup2_mount(char *buf, size_t size) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -1;
    char line[1024];
    int r = -1;
    while (r < 0 && fgets(line, sizeof(line), f)) {
        char root[256], point[512];
        const char *sep = strstr(line, " - cgroup2 ");
        if (sep && sscanf(line, "%*s %*s %*s %255s %511s", root, point) == 2 &&
            strcmp(root, "/") == 0 && strlen(point) < size) {
            snprintf(buf, size, "%s", point);
            r = 0;
        }
    }
    fclose(f);
    return r;
}

/* This process's cgroup v2 path (the "0::" line of /proc/self/cgroup). */
static int own_cgroup(char *buf, size_t size) {
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL)
        return -1;
    char line[PATH_MAX + 8];
    int r = -1;
    while (r < 0 && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "0::/", 4) != 0)
            continue;
        line[strcspn(line, "\n")] = '\0';
        if (strlen(line + 3) < size) {
            snprintf(buf, size, "%s", line + 3);
            r = 0;
        }
    }
    fclose(f);
    return r;
}

/* Remove the empty cgroups that supervisors now dead made beside us. */
static void remove_stale_cgroups(void) {
    int fd = openat(cg_base, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *e;
    int sup, gen;
    while ((e = readdir(d)) != NULL)
        if (sscanf(e->d_name, "afdt-%d-gen-%d", &sup, &gen) == 2 && sup > 0 &&
            kill((pid_t)sup, 0) < 0 && errno == ESRCH)
            (void)unlinkat(cg_base, e->d_name, AT_REMOVEDIR); /* fails while one is in it */
    closedir(d);
}

bool contain_has_cgroups(void) {
    return cg_base >= 0;
}

int contain_init(bool cgroups, char *how, size_t size) {
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        snprintf(how, size, "cannot become a child subreaper: %s", strerror(errno));
        return -1;
    }
    char mnt[PATH_MAX], own[PATH_MAX];
    if (cgroups && cgroup2_mount(mnt, sizeof(mnt)) == 0 && own_cgroup(own, sizeof(own)) == 0) {
        int len =
            snprintf(cg_base_path, sizeof(cg_base_path), "%s%s", mnt, strcmp(own, "/") ? own : "");
        if (len > 0 && (size_t)len < sizeof(cg_base_path))
            cg_base = open(cg_base_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        /* A group we may not make groups in (not root, nothing delegated to us) is none. */
        if (cg_base >= 0 && faccessat(cg_base, ".", W_OK, AT_EACCESS) < 0) {
            close(cg_base);
            cg_base = -1;
        }
        snprintf(cg_own, sizeof(cg_own), "%s", strcmp(own, "/") ? own : "");
    }
    if (cg_base >= 0) {
        remove_stale_cgroups();
        snprintf(how, size, "a cgroup per generation in %s where it can be made", cg_base_path);
    } else {
        snprintf(how, size, "%s: processes found through /proc",
                 cgroups ? "no cgroup v2 to make groups in" : "no cgroups (--cgroup no)");
    }
    return 0;
}

/* One process, as /proc/PID/stat tells it. */
struct pinfo {
    pid_t pid, ppid, pgrp, sid;
    unsigned long long start; /* clock ticks after boot */
    char state;
    bool ours;           /* a descendant of the supervisor */
    bool stray;          /* its generation (by its environment) has ended */
    struct procs *owner; /* its generation, or NULL */
};

/* Processes as one look at /proc found them, sorted by pid. */
struct snapshot {
    struct pinfo *all;
    size_t n, cap;
};

static int read_stat(pid_t pid, struct pinfo *p) {
    char path[40], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name, in parentheses, may hold anything: the fields start after the last ')'. */
    const char *r = strrchr(buf, ')');
    int ppid, pgrp, sid;
    memset(p, 0, sizeof(*p));
    if (r == NULL || sscanf(r + 2,
                            "%c %d %d %d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
                            "%*d %llu",
                            &p->state, &ppid, &pgrp, &sid, &p->start) != 5)
        return -1;
    p->pid = pid;
    p->ppid = ppid;
    p->pgrp = pgrp;
    p->sid = sid;
    return 0;
}

/* Add @pid to @sn (unsorted).  Returns 0, or -1 when out of memory. */
static int snapshot_add(struct snapshot *sn, pid_t pid) {
    if (sn->n == sn->cap) {
        size_t cap = sn->cap ? 2 * sn->cap : 256;
        struct pinfo *more = realloc(sn->all, cap * sizeof(*more));
        if (more == NULL)
            return -1;
        sn->all = more;
        sn->cap = cap;
    }
    if (read_stat(pid, &sn->all[sn->n]) == 0)
        sn->n++;
    return 0;
}

static int by_pid(const void *a, const void *b) {
    pid_t x = ((const struct pinfo *)a)->pid, y = ((const struct pinfo *)b)->pid;
    return (x > y) - (x < y);
}

static struct pinfo *find_pid(const struct snapshot *sn, pid_t pid) {
    struct pinfo key = {.pid = pid};
    return sn->n ? bsearch(&key, sn->all, sn->n, sizeof(key), by_pid) : NULL;
}

/* Every process on the machine into @sn.  Returns 0, or -1 with errno set. */
static int read_all(struct snapshot *sn) {
    DIR *d = opendir("/proc");
    if (d == NULL)
        return -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end == '\0' && pid > 0)
            rc = snapshot_add(sn, (pid_t)pid);
    }
    closedir(d);
    if (sn->n > 1) /* qsort(NULL, 0) is undefined, and an empty snapshot has no array */
        qsort(sn->all, sn->n, sizeof(*sn->all), by_pid);
    return rc;
}

/* Children of ours that are no generation's (contain_exclude()); by pid, which a child keeps
 * until it is reaped. */
static pid_t excluded[64];
static size_t nexcluded;

void contain_exclude(pid_t pid, bool excluding) {
    for (size_t i = 0; i < nexcluded; i++)
        if (excluded[i] == pid) {
            if (!excluding)
                excluded[i] = excluded[--nexcluded];
            return;
        }
    if (excluding && nexcluded < sizeof(excluded) / sizeof(excluded[0]))
        excluded[nexcluded++] = pid;
}

static bool is_excluded(pid_t pid) {
    for (size_t i = 0; i < nexcluded; i++)
        if (excluded[i] == pid)
            return true;
    return false;
}

static void mark_descendants(struct snapshot *sn, pid_t self) {
    for (bool more = true; more;) {
        more = false;
        for (size_t i = 0; i < sn->n; i++) {
            struct pinfo *p = &sn->all[i], *parent = find_pid(sn, p->ppid);
            if (!p->ours && !is_excluded(p->pid) && (p->ppid == self || (parent && parent->ours)))
                p->ours = more = true;
        }
    }
}

/* The pids in @g's cgroup.procs, added to @sn when its look missed them (started since): ours,
 * unless @g is an outsider's. */
static void claim_cgroup(struct procs *g, struct snapshot *sn) {
    int fd = openat(g->cg_dir, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "re");
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    int pid;
    struct snapshot sorted = *sn; /* the part bsearch may look in */
    while (fscanf(f, "%d", &pid) == 1) {
        size_t n = sn->n;
        if (find_pid(&sorted, (pid_t)pid) == NULL && snapshot_add(sn, (pid_t)pid) == 0 && sn->n > n)
            sn->all[n].ours = !g->outsider;
        sorted.all = sn->all;
    }
    if (sn->n > 1) /* qsort(NULL, 0) is undefined, and an empty snapshot has no array */
        qsort(sn->all, sn->n, sizeof(*sn->all), by_pid);
    rewind(f);
    while (fscanf(f, "%d", &pid) == 1) {
        struct pinfo *p = find_pid(sn, (pid_t)pid);
        if (p && (p->ours || g->outsider))
            p->owner = g;
    }
    fclose(f);
}

/* The AFDT_GENERATION in @pid's environment, or 0. */
static int environ_gen(pid_t pid) {
    char path[40], buf[8192];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
        if (strncmp(buf + i, "AFDT_GENERATION=", 16) == 0)
            return atoi(buf + i + 16);
    return 0;
}

static bool was_member(const struct procs *g, const struct pinfo *p) {
    for (size_t i = 0; i < g->n; i++)
        if (g->list[i].pid == p->pid && g->list[i].start == p->start)
            return true;
    return false;
}

static bool in_its_groups(const struct procs *g, const struct pinfo *p) {
    if (p->pgrp == g->leader || p->sid == g->leader)
        return true;
    for (size_t i = 0; i < g->n; i++)
        if (p->pgrp == g->list[i].pgrp || p->sid == g->list[i].sid)
            return true;
    return false;
}

/* Which of @gens @p belongs to, from what was known before this look and its parent's
 * owner; NULL when nothing says (yet). */
static struct procs *owner_of(struct procs *const *gens, size_t ngens, struct snapshot *sn,
                              struct pinfo *p, pid_t self) {
    for (size_t k = 0; k < ngens; k++)
        if (!gens[k]->outsider && was_member(gens[k], p))
            return gens[k];
    struct pinfo *parent = find_pid(sn, p->ppid);
    if (parent && parent->owner)
        return parent->owner;
    for (size_t k = 0; k < ngens; k++)
        if (!gens[k]->outsider && in_its_groups(gens[k], p))
            return gens[k];
    if (p->ppid == self && !p->stray) {
        /* An orphan whose parent ended before it was seen: its environment says. */
        int id = environ_gen(p->pid);
        for (size_t k = 0; k < ngens; k++)
            if (!gens[k]->outsider && gens[k]->gen == id)
                return gens[k];
        p->stray = id > 0; /* of a generation that is gone */
    }
    return NULL;
}

/* Fill each generation's list from @sn. Returns 0, or -1 when out of memory. */
static int assign(struct procs *const *gens, size_t ngens, struct snapshot *sn) {
    int rc = 0;
    for (size_t k = 0; k < ngens; k++) {
        struct procs *g = gens[k];
        size_t count = 0;
        for (size_t i = 0; i < sn->n; i++)
            count += sn->all[i].owner == g && sn->all[i].state != 'Z';
        struct proc *list = calloc(count ? count : 1, sizeof(*list));
        if (list == NULL) {
            rc = -1;
            continue;
        }
        free(g->list);
        g->list = list;
        g->n = 0;
        for (size_t i = 0; i < sn->n; i++) {
            const struct pinfo *p = &sn->all[i];
            if (p->owner == g && p->state != 'Z')
                g->list[g->n++] = (struct proc){p->pid, p->ppid, p->pgrp, p->sid, p->start};
        }
    }
    return rc;
}

/* One look.  *@again is set when a descendant was seen ended: a child it made
 * just before may have been missed, the listing of /proc being read before it existed. */
static int update_once(struct procs *const *gens, size_t ngens, bool *again) {
    struct snapshot sn = {NULL, 0, 0};
    pid_t self = getpid();
    bool all_in_cgroups = true;
    for (size_t k = 0; k < ngens; k++)
        all_in_cgroups = all_in_cgroups && gens[k]->cg_dir >= 0;
    *again = false;
    if (all_in_cgroups) {
        /* Their cgroups say it all: no need to read the whole of /proc. */
        for (size_t k = 0; k < ngens; k++)
            claim_cgroup(gens[k], &sn);
        int rc = assign(gens, ngens, &sn);
        free(sn.all);
        return rc;
    }
    int rc = read_all(&sn);
    if (rc == 0) {
        mark_descendants(&sn, self);
        for (size_t k = 0; k < ngens; k++)
            if (gens[k]->cg_dir >= 0)
                claim_cgroup(gens[k], &sn);
        for (bool more = true; more;) {
            more = false;
            for (size_t i = 0; i < sn.n; i++) {
                struct pinfo *p = &sn.all[i];
                if (p->ours && !p->owner && (p->owner = owner_of(gens, ngens, &sn, p, self)))
                    more = true;
            }
        }
        for (size_t i = 0; i < sn.n; i++) {
            struct pinfo *p = &sn.all[i];
            if (!p->ours || p->state == 'Z') {
                *again = *again || (p->ours && p->state == 'Z');
                continue;
            }
            if (p->stray) {
                kill(p->pid, SIGKILL); /* its generation ended, drain timeout and all */
                continue;
            }
            /* Last, one no trace leads to: the generation newest when it started. */
            for (size_t k = 0; k < ngens && !p->owner; k++)
                if (!gens[k]->outsider && gens[k]->since <= p->start)
                    p->owner = gens[k]; /* @gens is newest first */
        }
        rc = assign(gens, ngens, &sn);
    }
    free(sn.all);
    return rc;
}

int procs_update(struct procs *const *gens, size_t ngens) {
    bool again = false;
    int rc = update_once(gens, ngens, &again);
    if (rc == 0 && again)
        rc = update_once(gens, ngens, &again);
    return rc;
}

void procs_init(struct procs *g, int gen, bool cgroup) {
    memset(g, 0, sizeof(*g));
    g->gen = gen;
    g->cg_dir = g->cg_procs = -1;
    if (!cgroup || cg_base < 0)
        return;
    snprintf(g->cg_name, sizeof(g->cg_name), "afdt-%d-gen-%d", (int)getpid(), gen);
    /* Not one that exists: a supervisor that had our pid may have left processes in it. */
    if (mkdirat(cg_base, g->cg_name, 0755) < 0) {
        g->cg_name[0] = '\0';
        return;
    }
    g->cg_dir = openat(cg_base, g->cg_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g->cg_dir >= 0)
        g->cg_procs = openat(g->cg_dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (g->cg_procs < 0) {
        procs_free(g);
        g->cg_name[0] = '\0';
    }
}

void procs_follow(struct procs *g, pid_t pid) {
    char path[64], line[PATH_MAX + 8];
    int gen, sup;
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    FILE *f = cg_base < 0 ? NULL : fopen(path, "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        const char *name = strrchr(line, '/');
        size_t dir = name ? (size_t)(name - line) : 0;
        /* "0::/OUR/CGROUP/afdt-PID-gen-N": one made beside us, by a supervisor now gone. */
        if (strncmp(line, "0::", 3) != 0 || name == NULL ||
            sscanf(name + 1, "afdt-%d-gen-%d", &sup, &gen) != 2 ||
            strlen(name + 1) >= sizeof(g->cg_name) || dir - 3 != strlen(cg_own) ||
            strncmp(line + 3, cg_own, dir - 3) != 0)
            continue;
        g->cg_dir = openat(cg_base, name + 1, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (g->cg_dir >= 0) {
            snprintf(g->cg_name, sizeof(g->cg_name), "%s", name + 1);
            g->outsider = true;
        }
    }
    fclose(f);
}

void procs_started(struct procs *g, pid_t leader) {
    struct pinfo p = {.pid = leader, .pgrp = leader};
    g->leader = leader;
    if (read_stat(leader, &p) == 0)
        g->since = p.start;
    /* Also from here: the child moved itself already, or could not (then nothing can). */
    if (g->cg_procs >= 0)
        (void)dprintf(g->cg_procs, "%d\n", (int)leader);
    struct proc *list = realloc(g->list, sizeof(*list));
    if (list) {
        g->list = list;
        g->list[0] = (struct proc){leader, getpid(), leader, p.sid, g->since};
        g->n = 1;
    }
}

pid_t procs_main(const struct procs *g) {
    const struct proc *best = NULL;
    for (size_t i = 0; i < g->n; i++) {
        bool parent_in = false;
        for (size_t k = 0; k < g->n; k++)
            parent_in = parent_in || g->list[k].pid == g->list[i].ppid;
        if (!parent_in && (best == NULL || g->list[i].start < best->start))
            best = &g->list[i];
    }
    return best ? best->pid : 0;
}

bool procs_has(const struct procs *g, pid_t pid) {
    for (size_t i = 0; i < g->n; i++)
        if (g->list[i].pid == pid)
            return true;
    return false;
}

void procs_signal(const struct procs *g, int sig) {
    if (sig == SIGKILL && g->cg_dir >= 0) {
        int fd = openat(g->cg_dir, "cgroup.kill", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            (void)!write(fd, "1", 1);
            close(fd);
        }
    }
    for (size_t i = 0; i < g->n; i++)
        kill(g->list[i].pid, sig);
}

void procs_free(struct procs *g) {
    if (g->cg_procs >= 0)
        close(g->cg_procs);
    if (g->cg_dir >= 0)
        close(g->cg_dir);
    /* Removed once empty; a cgroup with a process left in it stays, and says so. */
    if (g->cg_name[0] && cg_base >= 0)
        (void)unlinkat(cg_base, g->cg_name, AT_REMOVEDIR);
    free(g->list);
    g->list = NULL;
    g->n = 0;
    g->cg_dir = g->cg_procs = -1;
}

void contain_end_all(void) {
    struct snapshot sn = {NULL, 0, 0};
    if (read_all(&sn) == 0) {
        mark_descendants(&sn, getpid());
        for (size_t i = 0; i < sn.n; i++)
            if (sn.all[i].ours && sn.all[i].state != 'Z')
                kill(sn.all[i].pid, SIGKILL);
    }
    free(sn.all);
    /* Each comes to us (a subreaper) as it dies: none is left for our own parent to reap. */
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
}
