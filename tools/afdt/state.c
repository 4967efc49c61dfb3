/* SPDX-License-Identifier: BSD-3-Clause */
/* The runtime directory and state file of a supervisor, and who is still running. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "state.h"

#define STATE_MAGIC "afdt-state 1"

/* The same numbers on every architecture. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* The directory that holds every runtime directory of this user's supervisors. */
static int base_dir(char *buf, size_t size) {
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (xdg && xdg[0] == '/' && strlen(xdg) < 48)
        n = snprintf(buf, size, "%s/afdt", xdg);
    else if (geteuid() == 0)
        n = snprintf(buf, size, "/run/afdt");
    else
        n = snprintf(buf, size, "/tmp/afdt-%u", (unsigned)geteuid());
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* FNV-1a, 64 bits: a short name for a control path.  Two paths of one user sharing a name is
 * practically impossible, and another user cannot aim at ours (each user has its own base). */
static uint64_t hash(const char *s) {
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

int state_dir_path(const char *control, char *buf, size_t size) {
    char dir[PATH_MAX], abs[PATH_MAX + 256], base[64];
    const char *slash = strrchr(control, '/');
    const char *name = slash ? slash + 1 : control;
    size_t dlen = slash ? (size_t)(slash - control) : 0;
    char parent[PATH_MAX];
    if (dlen >= sizeof(parent) || strlen(name) > 255) {
        say("--control %s: path too long", control);
        return -1;
    }
    memcpy(parent, slash ? control : ".", slash ? dlen : 1);
    parent[slash ? dlen : 1] = '\0';
    if (slash && dlen == 0)
        strcpy(parent, "/");
    if (control[0] == '@') {
        snprintf(abs, sizeof(abs), "%s", control); /* an abstract name: the same everywhere */
    } else if (realpath(parent, dir) == NULL) {
        say("--control %s: %s: %s", control, parent, strerror(errno));
        return -1;
    } else {
        snprintf(abs, sizeof(abs), "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
    }
    if (base_dir(base, sizeof(base)) < 0)
        return -1;
    int n = snprintf(buf, size, "%s/%016llx", base, (unsigned long long)hash(abs));
    if (n <= 0 || (size_t)n >= size || (size_t)n >= STATE_DIR_MAX) {
        say("the runtime directory for --control %s would be too long: %s/...", control, base);
        return -1;
    }
    return 0;
}

/* Whether @path is a directory of ours that nobody else may write.  0, or -1 (said why). */
static int check_dir(const char *path) {
    struct stat st;
    if (lstat(path, &st) < 0) {
        say("cannot use the runtime directory %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
        say("the runtime directory %s is not a directory of uid %u that only it can write: "
            "not using it",
            path, (unsigned)geteuid());
        return -1;
    }
    return 0;
}

/* @path made (or found) as a directory of ours, with @mode. */
static int make_one(const char *path, mode_t mode) {
    if (mkdir(path, mode) < 0 && errno != EEXIST) {
        say("cannot make the runtime directory %s: %s", path, strerror(errno));
        return -1;
    }
    if (check_dir(path) < 0)
        return -1;
    (void)chmod(path, mode);
    return 0;
}

int state_dir_make(const char *dir) {
    char base[STATE_PATH_MAX];
    const char *slash = strrchr(dir, '/');
    if (slash == NULL || (size_t)(slash - dir) >= sizeof(base))
        return -1;
    memcpy(base, dir, (size_t)(slash - dir));
    base[slash - dir] = '\0';
    /* The base is searchable, not listable (a --trust-uid user's notify directory is in it);
     * each runtime directory is private: nobody else can reach a notify socket there, flood
     * us with notifications or stall us with a descriptor. */
    for (int tries = 0; tries < 8; tries++) {
        if (make_one(base, 0711) < 0 || make_one(dir, 0700) < 0)
            return -1;
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            say("cannot open the runtime directory %s: %s", dir, strerror(errno));
            return -1;
        }
        while (flock(fd, LOCK_SH) < 0 && errno == EINTR) {
        }
        struct stat held, now;
        if (fstat(fd, &held) == 0 && lstat(dir, &now) == 0 && held.st_dev == now.st_dev &&
            held.st_ino == now.st_ino)
            return fd; /* the caller's, for as long as it runs */
        close(fd);     /* a cleaner removed it just before we had it: make it again */
    }
    say("cannot keep the runtime directory %s: it keeps being removed", dir);
    return -1;
}

struct proc_id proc_id_of(pid_t pid) {
    struct proc_id p = {pid, 0};
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return p;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return p;
    buf[n] = '\0';
    /* "PID (COMM) STATE ...": COMM may hold anything, so count fields from its last ')'. */
    char *q = strrchr(buf, ')');
    if (q == NULL || q[1] != ' ')
        return p;
    char state = q[2];
    q += 2;
    for (int field = 3; field < 22 && q; field++) {
        q = strchr(q, ' ');
        if (q)
            q++;
    }
    if (q && state != 'Z' && state != 'X')
        p.start = strtoull(q, NULL, 10);
    return p;
}

bool proc_alive(const struct proc_id *p) {
    if (p->pid <= 0 || p->start == 0)
        return false;
    struct proc_id now = proc_id_of(p->pid);
    return now.start == p->start;
}

int proc_pidfd(const struct proc_id *p) {
    int fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (fd < 0)
        return -1;
    /* The pidfd pins the process it was opened for: if that is still the one we know now,
     * it is the one we meant. */
    if (!proc_alive(p)) {
        close(fd);
        errno = ESRCH;
        return -1;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* pidfds are close-on-exec already; be explicit */
    return fd;
}

int pidfd_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int socket_spec(int fd, char *buf, size_t size) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0;
    socklen_t tlen = sizeof(type);
    char host[INET6_ADDRSTRLEN];
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
        return -1;
    const char *proto = type == SOCK_DGRAM ? "udp" : "tcp";
    int n = -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        n = snprintf(buf, size, "%s:%s:%u", proto, host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        n = snprintf(buf, size, "%s:[%s]:%u", proto, host, ntohs(in6->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        size_t plen = len - offsetof(struct sockaddr_un, sun_path);
        if (plen == 0 || plen > sizeof(un->sun_path))
            return -1;
        if (un->sun_path[0] == '\0')
            n = snprintf(buf, size, "unix:@%.*s", (int)(plen - 1), un->sun_path + 1);
        else
            n = snprintf(buf, size, "unix:%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
    }
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Fields are separated by tabs: names and specs never hold one (a control path or a notify
 * path might, and is then refused by the reader's checks, not misread). */
int state_save(const char *dir, const struct state *st) {
    char tmp[STATE_PATH_MAX + 16], path[STATE_PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s/state.new", dir);
    snprintf(path, sizeof(path), "%s/state", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    fprintf(f, "%s\nsupervisor\t%d\t%llu\ncontrol\t%s\n", STATE_MAGIC, (int)st->sup.pid,
            st->sup.start, st->control);
    fprintf(f, "counters\t%d\t%d\t%u\t%u\t%d\n", st->next_gen, st->uses_notify, st->restarts,
            st->rollbacks, st->last_restart_id);
    for (uint32_t i = 0; i < st->nls; i++)
        fprintf(f, "listener\t%s\t%s\t%s\n", st->ls[i].name, st->ls[i].spec, st->ls[i].addr);
    for (uint32_t i = 0; i < st->ngens; i++) {
        const struct state_gen *g = &st->gens[i];
        fprintf(f, "generation\t%d\t%d\t%llu\t%s\t%s\t%s\n", g->id, (int)g->proc.pid, g->proc.start,
                g->state, g->own_group ? "group" : "alone", g->notify);
    }
    int bad = fflush(f) != 0 || ferror(f);
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad || rename(tmp, path) < 0) {
        e = bad ? e : errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* Split @line at tabs into at most @max fields; returns the count. */
static int split(char *line, char **fields, int max) {
    int n = 0;
    for (char *p = line; p && n < max;) {
        fields[n++] = p;
        p = strchr(p, '\t');
        if (p)
            *p++ = '\0';
    }
    return n;
}

static bool copy(char *dst, size_t size, const char *src) {
    size_t len = strlen(src);
    if (len >= size)
        return false;
    memcpy(dst, src, len + 1);
    return true;
}

int state_load(const char *dir, struct state *st) {
    char path[STATE_PATH_MAX + 16], line[8192];
    memset(st, 0, sizeof(*st));
    snprintf(path, sizeof(path), "%s/state", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        say("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid() ||
        (sb.st_mode & 022)) {
        say("%s is not a file of uid %u that only it can write: ignoring it", path,
            (unsigned)geteuid());
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    bool ok = fgets(line, sizeof(line), f) && strcmp(line, STATE_MAGIC "\n") == 0;
    while (ok && fgets(line, sizeof(line), f)) {
        char *fl[8];
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') {
            ok = false;
            break;
        }
        line[len - 1] = '\0';
        int n = split(line, fl, 8);
        if (strcmp(fl[0], "supervisor") == 0 && n == 3) {
            st->sup.pid = atoi(fl[1]);
            st->sup.start = strtoull(fl[2], NULL, 10);
        } else if (strcmp(fl[0], "control") == 0 && n == 2) {
            ok = copy(st->control, sizeof(st->control), fl[1]);
        } else if (strcmp(fl[0], "counters") == 0 && n == 6) {
            st->next_gen = atoi(fl[1]);
            st->uses_notify = atoi(fl[2]) != 0;
            st->restarts = (unsigned)strtoul(fl[3], NULL, 10);
            st->rollbacks = (unsigned)strtoul(fl[4], NULL, 10);
            st->last_restart_id = atoi(fl[5]);
        } else if (strcmp(fl[0], "listener") == 0 && n == 4) {
            struct state_listener *more = realloc(st->ls, (st->nls + 1) * sizeof(*more));
            if (more == NULL) {
                ok = false;
                break;
            }
            st->ls = more;
            struct state_listener *l = &st->ls[st->nls++];
            ok = copy(l->name, sizeof(l->name), fl[1]) && copy(l->spec, sizeof(l->spec), fl[2]) &&
                 copy(l->addr, sizeof(l->addr), fl[3]);
        } else if (strcmp(fl[0], "generation") == 0 && n == 7 && st->ngens < STATE_MAX_GENS) {
            struct state_gen *g = &st->gens[st->ngens++];
            g->id = atoi(fl[1]);
            g->proc.pid = atoi(fl[2]);
            g->proc.start = strtoull(fl[3], NULL, 10);
            g->own_group = strcmp(fl[5], "group") == 0;
            ok = copy(g->state, sizeof(g->state), fl[4]) &&
                 copy(g->notify, sizeof(g->notify), fl[6]);
        } else {
            ok = false;
        }
    }
    fclose(f);
    if (!ok || st->sup.pid <= 0) {
        say("%s is malformed: ignoring it", path);
        state_free(st);
        return -1;
    }
    return 1;
}

void state_free(struct state *st) {
    free(st->ls);
    st->ls = NULL;
    st->nls = 0;
}

void state_remove(const char *dir) {
    char path[STATE_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/state", dir);
    (void)unlink(path);
}

/* Whether one of the generations that @dir's state file records is still running (its
 * supervisor is not: we hold the directory's lock). */
static bool dir_in_use(const char *dir) {
    struct state st;
    int r = state_load(dir, &st);
    if (r <= 0)
        return r < 0; /* a file that is not ours to judge: leave it */
    bool alive = proc_alive(&st.sup);
    for (uint32_t i = 0; i < st.ngens && !alive; i++)
        alive = proc_alive(&st.gens[i].proc);
    state_free(&st);
    return alive;
}

void state_dir_clean(const char *dir) {
    char base[STATE_PATH_MAX];
    const char *slash = strrchr(dir, '/');
    if (slash == NULL || (size_t)(slash - dir) >= sizeof(base))
        return;
    memcpy(base, dir, (size_t)(slash - dir));
    base[slash - dir] = '\0';
    DIR *d = opendir(base);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char sub[STATE_PATH_MAX + 32], file[STATE_PATH_MAX + 300];
        struct stat st;
        /* Ours are named by 16 hex digits; anything else there is left alone. */
        if (strlen(de->d_name) != 16 || strspn(de->d_name, "0123456789abcdef") != 16)
            continue;
        snprintf(sub, sizeof(sub), "%s/%.16s", base, de->d_name);
        if (strcmp(sub, dir) == 0)
            continue;
        /* A live supervisor holds its directory's lock from before it writes anything there
         * until it exits. */
        int fd = open(sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &st) < 0 || st.st_uid != geteuid() ||
            dir_in_use(sub)) {
            close(fd);
            continue;
        }
        DIR *sd = fdopendir(fd);
        if (sd == NULL) {
            close(fd);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(sd)) != NULL) {
            if (strcmp(e->d_name, "state") == 0 || strcmp(e->d_name, "state.new") == 0 ||
                strncmp(e->d_name, "notify-", 7) == 0) {
                snprintf(file, sizeof(file), "%s/%s", sub, e->d_name);
                (void)unlink(file);
            }
        }
        if (rmdir(sub) == 0)
            say("removed the runtime directory %s of a supervisor that died", sub);
        closedir(sd); /* and its lock */
    }
    closedir(d);
}
