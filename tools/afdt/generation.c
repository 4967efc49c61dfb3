/* SPDX-License-Identifier: BSD-3-Clause */
/* Generations: start COMMAND with the sockets, hear its NOTIFY_SOCKET, stop it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "supervisor.h"

const char *gen_state_str(enum gen_state st) {
    switch (st) {
    case GEN_STARTING: return "starting";
    case GEN_SERVING: return "serving";
    default: return "draining";
    }
}

struct gen *gen_by_pid(struct sup *s, pid_t pid) {
    for (struct gen *g = s->gens; g; g = g->next)
        if (g->pid == pid)
            return g;
    return NULL;
}

static struct timeval ms_tv(int64_t ms) {
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* One datagram's lines, as sd_notify(3) defines them. */
static void handle_notify(struct gen *g, char *msg) {
    for (char *line = msg, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strcmp(line, "READY=1") == 0) {
            g->sup->uses_notify = true;
            sup_gen_ready(g, "it sent READY=1");
        } else if (strncmp(line, "STATUS=", 7) == 0) {
            snprintf(g->status, sizeof(g->status), "%s", line + 7);
        } else if (strcmp(line, "STOPPING=1") == 0) {
            say("generation %d (pid %d) is stopping", g->id, (int)g->pid);
        } else if (strncmp(line, "ERRNO=", 6) == 0) {
            int e = atoi(line + 6);
            say("generation %d (pid %d) reports an error: %s", g->id, (int)g->pid, strerror(e));
        } else if (strncmp(line, "EXTEND_TIMEOUT_USEC=", 20) == 0 && g->state == GEN_STARTING) {
            /* It asks for more time to get ready: from now, not from the start. */
            struct timeval tv = ms_tv(strtoll(line + 20, NULL, 10) / 1000);
            evtimer_add(g->timer, &tv);
        }
    }
}

static void on_notify(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    struct gen *g = arg;
    for (int i = 0; i < 64; i++) {
        char buf[4097];
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 32)];
        } ctl;
        struct iovec iov = {buf, sizeof(buf) - 1};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
        ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        bool trusted = false;
        uint32_t uid = 0;
        pid_t pid = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET)
                continue;
            if (c->cmsg_type == SCM_RIGHTS) {
                /* sd_notify's FDSTORE=1 and BARRIER=1 send descriptors: we keep none (a
                 * barrier's waiter is released when its pipe closes). */
                size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t k = 0; k < nfds; k++) {
                    int rfd;
                    memcpy(&rfd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
                    close(rfd);
                }
            } else if (c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred uc;
                memcpy(&uc, CMSG_DATA(c), sizeof(uc));
                uid = uc.uid;
                pid = uc.pid;
                /* Our own user, or any process of this generation, even one that dropped
                 * its privileges. */
                trusted = uc.uid == getuid() || uc.uid == 0 || getpgid(uc.pid) == g->pid;
            }
        }
        if (!trusted) {
            say("generation %d: ignored a notification from pid %d (uid %u), not one of its "
                "processes",
                g->id, (int)pid, uid);
            continue;
        }
        buf[n] = '\0';
        handle_notify(g, buf);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct gen *g = arg;
    if (g->state == GEN_STARTING) {
        sup_gen_timeout(g);
    } else if (g->state == GEN_DRAINING) {
        char t[32];
        format_age(g->sup->args->drain_timeout_ms, t, sizeof(t));
        say("generation %d (pid %d) did not exit within the drain timeout (%s): SIGKILL", g->id,
            (int)g->pid, t);
        kill(-g->pid, SIGKILL);
        kill(g->pid, SIGKILL);
    }
}

/* The child's side of gen_spawn(), between fork and exec: only async-signal-safe calls,
 * and setenv(3), which is safe here because the supervisor has a single thread. */
__attribute__((noreturn)) static void child(struct sup *s, struct gen *g, int err_fd,
                                            pid_t parent) {
    const struct serve_args *a = s->args;
    sigset_t none;
    int e;
    /* Its own process group, so the whole generation can be killed, and a Ctrl-C meant for
     * the supervisor does not reach it. */
    setpgid(0, 0);
    /* A supervisor killed outright takes its generations with it (gracefully). */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
        _exit(127);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    int ef = fcntl(err_fd, F_DUPFD_CLOEXEC, (int)(3 + a->nls)); /* above the sockets' range */
    if (ef < 0)
        _exit(127);
    char num[16], path[sizeof(g->notify_path)];
    snprintf(num, sizeof(num), "%d", g->id);
    memcpy(path, g->notify_path, sizeof(path));
    if (place_listen_fds(s->fds, s->scratch, a->nls) < 0 ||
        set_listen_env(a->nls, s->fdnames) < 0 || setenv("NOTIFY_SOCKET", path, 1) < 0 ||
        setenv("AFDT_GENERATION", num, 1) < 0)
        goto fail;
    execvp(a->argv[0], a->argv);
fail:
    e = errno;
    while (write(ef, &e, sizeof(e)) < 0 && errno == EINTR) {
    }
    _exit(127);
}

static int open_notify(struct gen *g) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int one = 1;
    snprintf(g->notify_path, sizeof(g->notify_path), "%s/notify-%d", g->sup->tmpdir, g->id);
    memcpy(sun.sun_path, g->notify_path, sizeof(sun.sun_path));
    g->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (g->notify_fd < 0)
        return -1;
    (void)unlink(g->notify_path);
    if (bind(g->notify_fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        setsockopt(g->notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ||
        chmod(g->notify_path, 0666) < 0) /* see on_notify() for who is heard */
        return -1;
    return 0;
}

struct gen *gen_spawn(struct sup *s, char *why, size_t size) {
    int p[2] = {-1, -1}, e = 0;
    struct gen *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    g->sup = s;
    g->id = s->next_gen++;
    g->notify_fd = -1;
    if (open_notify(g) < 0 || pipe2(p, O_CLOEXEC) < 0) {
        snprintf(why, size, "cannot make its notify socket: %s", strerror(errno));
        goto fail;
    }
    g->notify_ev = event_new(s->eb, g->notify_fd, EV_READ | EV_PERSIST, on_notify, g);
    g->timer = evtimer_new(s->eb, on_timer, g);
    if (g->notify_ev == NULL || g->timer == NULL || event_add(g->notify_ev, NULL) < 0) {
        snprintf(why, size, "cannot watch its notify socket");
        goto fail;
    }
    pid_t parent = getpid();
    g->pid = fork();
    if (g->pid == 0)
        child(s, g, p[1], parent);
    if (g->pid < 0) {
        snprintf(why, size, "fork: %s", strerror(errno));
        goto fail;
    }
    setpgid(g->pid, g->pid); /* also here, so a signal sent at once finds the group */
    close(p[1]);
    p[1] = -1;
    /* The pipe closes at exec (close-on-exec), or brings the errno of a failed exec. */
    ssize_t n;
    while ((n = read(p[0], &e, sizeof(e))) < 0 && errno == EINTR) {
    }
    if (n != 0) {
        int st;
        while (waitpid(g->pid, &st, 0) < 0 && errno == EINTR) {
        }
        snprintf(why, size, "cannot run %s: %s", s->args->argv[0],
                 n == (ssize_t)sizeof(e) ? strerror(e) : "it failed before exec");
        g->pid = 0;
        goto fail;
    }
    close(p[0]);
    g->started_ms = now_ms();
    g->state = GEN_STARTING;
    struct timeval tv = ms_tv(s->args->ready_timeout_ms);
    evtimer_add(g->timer, &tv);
    g->next = s->gens;
    s->gens = g;
    say("generation %d started: pid %d", g->id, (int)g->pid);
    return g;
fail:
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    gen_free(g);
    return NULL;
}

void gen_drain(struct gen *g) {
    if (g->state == GEN_DRAINING)
        return;
    g->state = GEN_DRAINING;
    kill(g->pid, SIGTERM);
    struct timeval tv = ms_tv(g->sup->args->drain_timeout_ms);
    evtimer_add(g->timer, &tv);
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
    if (g->timer)
        event_free(g->timer);
    if (g->notify_fd >= 0) {
        (void)unlink(g->notify_path);
        close(g->notify_fd);
    }
    free(g);
}
