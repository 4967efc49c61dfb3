/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's sockets: parsed from --listen, found, bound, described and passed on. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listeners.h"
#include "log.h"

int listener_parse(const char *arg, struct listener *l, char *why, size_t size) {
    memset(l, 0, sizeof(*l));
    l->fd = -1;
    const char *eq = strchr(arg, '=');
    if (eq == NULL) {
        snprintf(why, size, "'%s': no NAME= before the spec", arg);
        return -1;
    }
    size_t len = (size_t)(eq - arg);
    if (len == 0 || len > AFDT_NAME_MAX) {
        snprintf(why, size, "'%s': NAME must have 1 to %d characters", arg, AFDT_NAME_MAX);
        return -1;
    }
    /* Names travel in LISTEN_FDNAMES, where ':' separates them. */
    for (size_t i = 0; i < len; i++) {
        if (arg[i] <= ' ' || arg[i] > '~' || arg[i] == ':') {
            snprintf(why, size, "'%s': NAME may hold printable ASCII except spaces and ':'", arg);
            return -1;
        }
    }
    memcpy(l->name, arg, len);
    l->spec = eq + 1;
    /* No socket is -1, so a spec that parses fails the check on the descriptor instead. */
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    if (afdt_check_spec(-1, l->spec, &e) < 0 && e.operation == AFDT_PATHNAME) {
        int err = errno;
        snprintf(why, size, "'%s': %s", arg, e.message);
        return err == EADDRNOTAVAIL ? -2 : -1;
    }
    return 0;
}

const char *listener_source_str(enum listener_source src) {
    switch (src) {
    case FROM_BIND: return "bound";
    case FROM_LISTEN_FDS: return "socket activation";
    case FROM_PREDECESSOR: return "taken over";
    default: return "none";
    }
}

/* The file a "unix:PATH" spec names, or NULL (not Unix, or an abstract name). */
static const char *unix_file(const char *spec) {
    if (strncmp(spec, "unix:", 5) != 0 || spec[5] == '@')
        return NULL;
    return spec + 5;
}

/* Remember the file behind a Unix socket we now own, to remove it when we stop for good. */
static void own_file(struct listener *l) {
    const char *path = unix_file(l->spec);
    struct stat st;
    if (path && stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        l->own_file = true;
        l->dev = st.st_dev;
        l->ino = st.st_ino;
    }
}

static int find_slot(const struct afdt_named_fd *set, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (set[i].fd >= 0 && strcmp(set[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Take @l's socket from what socket activation passed: by name, else the first socket that
 * matches the spec (systemd names sockets after their unit unless told otherwise).  Returns
 * 1 when taken, 0 when none is there, -1 after saying why. */
static int take_passed(struct listener *l, struct afdt_named_fd *passed, uint32_t n) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    int j = find_slot(passed, n, l->name);
    if (j >= 0 && afdt_check_spec(passed[j].fd, l->spec, &e) < 0) {
        say("the socket '%s' passed by socket activation is not %s: %s", l->name, l->spec,
            e.message);
        return -1;
    }
    for (uint32_t i = 0; j < 0 && i < n; i++)
        if (passed[i].fd >= 0 && afdt_check_spec(passed[i].fd, l->spec, &e) == 0)
            j = (int)i;
    if (j < 0)
        return 0;
    l->fd = passed[j].fd; /* now the listener's */
    passed[j].fd = -1;
    l->source = FROM_LISTEN_FDS;
    return 1;
}

/* Take @l's socket from a predecessor's set: by name, and it must match the spec. */
static int take_sent(struct listener *l, struct afdt_named_fd *pred, uint32_t n) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    int j = find_slot(pred, n, l->name);
    if (j < 0) {
        say("the running supervisor has no socket named '%s'; a supervisor that takes over "
            "never binds sockets itself",
            l->name);
        return -1;
    }
    if (afdt_check_spec(pred[j].fd, l->spec, &e) < 0) {
        char addr[160];
        describe_socket(pred[j].fd, addr, sizeof(addr), NULL);
        say("--listen %s=%s does not match the running supervisor's socket '%s' (%s): %s", l->name,
            l->spec, l->name, addr, e.message);
        return -1;
    }
    l->fd = pred[j].fd; /* now the listener's */
    pred[j].fd = -1;
    l->source = FROM_PREDECESSOR;
    return 0;
}

static int bind_one(struct listener *l) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    l->fd = afdt_open_spec(l->spec, &e);
    if (l->fd < 0) {
        int err = errno;
        say("cannot listen on %s=%s: %s%s%s%s%s", l->name, l->spec, strerror(err),
            e.message[0] ? " (" : "", e.message, e.message[0] ? ")" : "", resource_hint(err));
        return -1;
    }
    l->source = FROM_BIND;
    own_file(l);
    return 0;
}

int listeners_acquire(struct listener *ls, uint32_t n, bool from_pred, struct afdt_named_fd *pred,
                      uint32_t npred) {
    struct afdt_named_fd *passed = NULL;
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    int rc = -1;
    int got = afdt_listen_fds(1, &passed, &e);
    if (got < 0) {
        say("cannot use the sockets of socket activation: %s", e.message);
        return -1;
    }
    uint32_t npassed = (uint32_t)got;
    for (uint32_t i = 0; i < n; i++) {
        int r = take_passed(&ls[i], passed, npassed);
        if (r < 0)
            goto out;
        if (r == 0 && from_pred && take_sent(&ls[i], pred, npred) < 0)
            goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        if (ls[i].fd < 0 && bind_one(&ls[i]) < 0)
            goto out;
    for (uint32_t i = 0; i < npassed; i++)
        if (passed[i].fd >= 0)
            say("socket activation passed '%s', which no --listen asks for: closed",
                passed[i].name);
    for (uint32_t i = 0; from_pred && i < npred; i++)
        if (pred[i].fd >= 0)
            say("the running supervisor's socket '%s' is in no --listen: not taken over",
                pred[i].name);
    rc = 0;
out:
    if (rc < 0)
        listeners_release(ls, n, true);
    afdt_named_fds_free(passed, npassed, 1);
    return rc;
}

void listeners_adopt(struct listener *ls, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (ls[i].source == FROM_PREDECESSOR)
            own_file(&ls[i]);
}

void listeners_release(struct listener *ls, uint32_t n, bool remove) {
    for (uint32_t i = 0; i < n; i++) {
        struct listener *l = &ls[i];
        const char *path = unix_file(l->spec);
        struct stat st;
        /* Unlink before close: once closed, the name may be bound by someone we must not
         * disturb. */
        if (remove && l->own_file && path && stat(path, &st) == 0 && st.st_dev == l->dev &&
            st.st_ino == l->ino)
            (void)unlink(path);
        l->own_file = false;
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
    }
}

void describe_socket(int fd, char *buf, size_t size, int *port) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];
    if (port)
        *port = 0;
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(buf, size, "(unknown: %s)", strerror(errno));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
        if (port)
            *port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
        if (port)
            *port = ntohs(in6->sin6_port);
    } else if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        size_t plen = len > offsetof(struct sockaddr_un, sun_path)
                          ? len - offsetof(struct sockaddr_un, sun_path)
                          : 0;
        if (plen == 0)
            snprintf(buf, size, "(unnamed)");
        else if (un->sun_path[0] == '\0')
            snprintf(buf, size, "@%.*s", (int)(plen - 1), un->sun_path + 1);
        else
            snprintf(buf, size, "%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
    } else {
        snprintf(buf, size, "(family %d)", ss.ss_family);
    }
}

int place_listen_fds(const int *fds, int *scratch, uint32_t n) {
    int first_free = (int)(3 + n);
    /* Copies above the target range first, so no dup2 below can close a socket that still
     * has to be moved. */
    for (uint32_t i = 0; i < n; i++) {
        scratch[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, first_free);
        if (scratch[i] < 0)
            return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        if (dup2(scratch[i], (int)(3 + i)) < 0) /* the copy at 3 + i is not close-on-exec */
            return -1;
    for (uint32_t i = 0; i < n; i++)
        close(scratch[i]);
#ifdef CLOSE_RANGE_CLOEXEC
    /* Whatever this process inherited stays out of the command, as under systemd. */
    (void)close_range((unsigned)first_free, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
    return 0;
}

int set_listen_env(uint32_t n, const char *fdnames) {
    char count[16], pid[16];
    snprintf(count, sizeof(count), "%u", n);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    if (setenv("LISTEN_FDS", count, 1) < 0 || setenv("LISTEN_PID", pid, 1) < 0 ||
        setenv("LISTEN_FDNAMES", fdnames, 1) < 0)
        return -1;
    return 0;
}

static int check_file(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    return access(path, X_OK) == 0 ? 0 : errno;
}

int find_command(const char *file) {
    if (file[0] == '\0')
        return ENOENT;
    if (strchr(file, '/'))
        return check_file(file);
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/bin:/usr/bin"; /* what execvp(3) searches without PATH */
    int found = ENOENT;
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char full[4096];
        if (len == 0)
            snprintf(full, sizeof(full), "./%s", file);
        else
            snprintf(full, sizeof(full), "%.*s/%s", (int)len, p, file);
        int r = check_file(full);
        if (r == 0)
            return 0;
        if (r == EACCES)
            found = EACCES;
        if (end == NULL)
            break;
        p = end;
    }
    return found;
}
