/* SPDX-License-Identifier: BSD-3-Clause */
/* "My listening sockets by name": from LISTEN_FDS, from a predecessor, or by binding. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"

/* A parsed "tcp:HOST:PORT", "udp:HOST:PORT" or "unix:PATH". */
struct spec {
    int type; /* SOCK_STREAM or SOCK_DGRAM */
    bool is_unix;
    bool any_port;
    struct sockaddr_storage ss;
    socklen_t len;
    struct afdt__addr un;
};

static int parse_spec(const char *text, struct spec *sp, struct afdt__fail *f) {
    memset(sp, 0, sizeof(*sp));
    if (text == NULL)
        return afdt__fail(f, AFDT_PATHNAME, EINVAL, "listen spec is NULL");
    if (strncmp(text, "unix:", 5) == 0) {
        sp->type = SOCK_STREAM;
        sp->is_unix = true;
        return afdt__addr_parse(text + 5, &sp->un, f);
    }
    if (strncmp(text, "tcp:", 4) == 0)
        sp->type = SOCK_STREAM;
    else if (strncmp(text, "udp:", 4) == 0)
        sp->type = SOCK_DGRAM;
    else
        return afdt__fail(f, AFDT_PATHNAME, EINVAL,
                          "listen spec must start with tcp:, udp: or unix:");
    const char *rest = text + 4, *colon;
    char host[256];
    size_t hlen;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL || close[1] != ':')
            return afdt__fail(f, AFDT_PATHNAME, EINVAL, "malformed [IPv6]:PORT in listen spec");
        hlen = (size_t)(close - rest - 1);
        rest++;
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL)
            return afdt__fail(f, AFDT_PATHNAME, EINVAL, "listen spec lacks :PORT");
        hlen = (size_t)(colon - rest);
    }
    if (hlen >= sizeof(host))
        return afdt__fail(f, AFDT_PATHNAME, EINVAL, "host in listen spec is too long");
    if (hlen == 0 && rest[-1] == '[')
        return afdt__fail(f, AFDT_PATHNAME, EINVAL, "empty [] in listen spec");
    /* getaddrinfo() reads "127.0.0.1 x" as 127.0.0.1: a host is printable, without spaces. */
    for (size_t i = 0; i < hlen; i++)
        if (rest[i] <= ' ' || rest[i] > '~')
            return afdt__fail(f, AFDT_PATHNAME, EINVAL,
                              "host in listen spec has a space or a control character");
    memcpy(host, rest, hlen);
    host[hlen] = '\0';
    /* Digits only: strtol() would also take spaces, a sign or nothing at all. */
    const char *port = colon + 1;
    size_t plen = strspn(port, "0123456789");
    long p = plen >= 1 && plen <= 5 && port[plen] == '\0' ? atol(port) : -1;
    if (p < 0 || p > 65535)
        return afdt__fail(f, AFDT_PATHNAME, EINVAL, "port in listen spec is not 0-65535");
    sp->any_port = p == 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = sp->type;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    bool any = host[0] == '\0' || strcmp(host, "*") == 0;
    if (any)
        hints.ai_family = AF_INET;
    int r = getaddrinfo(any ? NULL : host, port, &hints, &res);
    if (r != 0 || res == NULL)
        return afdt__fail(f, AFDT_PATHNAME, EADDRNOTAVAIL, "host in listen spec does not resolve");
    memcpy(&sp->ss, res->ai_addr, res->ai_addrlen);
    sp->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int open_parsed(const struct spec *sp, struct afdt__fail *f) {
    if (sp->is_unix)
        return afdt__listen_replacing(&sp->un, 0, 0, f);
    int fd = socket(sp->ss.ss_family, sp->type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return afdt__fail(f, AFDT_SOCKET, errno, "");
    int one = 1;
    if (sp->type == SOCK_STREAM)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* An IPv6 address means that address alone, not IPv4 too. */
    if (sp->ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&sp->ss, sp->len) < 0) {
        afdt__fail(f, AFDT_BIND, errno, "");
        goto fail;
    }
    if (sp->type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0) {
        afdt__fail(f, AFDT_LISTEN, errno, "");
        goto fail;
    }
    return fd;
fail:
    afdt__close(fd);
    return -1;
}

static int check_parsed(int fd, const struct spec *sp, struct afdt_error_t *err) {
    struct afdt_socket_expect want = {0};
    struct sockaddr_storage addr = sp->ss;
    want.size = sizeof(want);
    want.type = sp->type;
    want.family = sp->is_unix ? AF_UNIX : sp->ss.ss_family;
    want.listening = sp->type == SOCK_STREAM ? 1 : -1;
    if (sp->is_unix) {
        want.addr = &sp->un.sun;
        want.addr_len = sp->un.len;
    } else {
        /* Port 0 asks for any port: compare the address with the port the
         * socket has. */
        struct sockaddr_storage local;
        socklen_t len = sizeof(local);
        if (sp->any_port && getsockname(fd, (struct sockaddr *)&local, &len) == 0 &&
            local.ss_family == addr.ss_family) {
            if (addr.ss_family == AF_INET)
                ((struct sockaddr_in *)&addr)->sin_port = ((struct sockaddr_in *)&local)->sin_port;
            else if (addr.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&addr)->sin6_port =
                    ((struct sockaddr_in6 *)&local)->sin6_port;
        }
        want.addr = &addr;
        want.addr_len = sp->len;
    }
    return afdt_check_socket(fd, &want, err);
}

AFDT_EXPORT int afdt_open_spec(const char *spec, struct afdt_error_t *err) {
    struct afdt__fail f;
    struct spec sp;
    int fd = parse_spec(spec, &sp, &f) < 0 ? -1 : open_parsed(&sp, &f);
    return fd < 0 ? afdt__report(err, AFDT__KEEP_PHASE, &f) : fd;
}

AFDT_EXPORT int afdt_parse_spec(const char *spec, struct afdt_error_t *err) {
    struct afdt__fail f;
    struct spec sp;
    return parse_spec(spec, &sp, &f) < 0 ? afdt__report(err, AFDT__KEEP_PHASE, &f) : 0;
}

AFDT_EXPORT int afdt_check_spec(int fd, const char *spec, struct afdt_error_t *err) {
    struct afdt__fail f;
    struct spec sp;
    if (parse_spec(spec, &sp, &f) < 0)
        return afdt__report(err, AFDT__KEEP_PHASE, &f);
    return check_parsed(fd, &sp, err);
}

/* Read LISTEN_FDNAMES (@names, may be NULL) for @count descriptors from 3:
 * with @set NULL only check it and that each descriptor is open; else fill
 * @set and make each descriptor close-on-exec. */
static int read_names(const char *names, long count, struct afdt_named_fd *set,
                      struct afdt__fail *f) {
    const char *p = names;
    for (long i = 0; i < count; i++) {
        int fd = (int)(3 + i);
        size_t len = 0;
        if (p) {
            const char *colon = strchr(p, ':');
            len = colon ? (size_t)(colon - p) : strlen(p);
            if (len > AFDT_NAME_MAX || (colon == NULL && i + 1 < count) ||
                (colon && i + 1 == count))
                return afdt__fail(f, AFDT_FORMAT, EINVAL,
                                  "LISTEN_FDNAMES does not name LISTEN_FDS descriptors");
            if (set)
                memcpy(set[i].name, p, len);
            p = colon ? colon + 1 : NULL;
        }
        if (set == NULL ? fcntl(fd, F_GETFD) < 0 : fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
            return afdt__fail(f, AFDT_FORMAT, errno,
                              "LISTEN_FDS names a descriptor that is not open");
        if (set) {
            set[i].fd = fd;
            if (len == 0)
                strcpy(set[i].name, "unknown");
        }
    }
    return 0;
}

AFDT_EXPORT int afdt_listen_fds(int unset_env, struct afdt_named_fd **ret_set,
                                struct afdt_error_t *err) {
    struct afdt__fail f;
    struct afdt_named_fd *set = NULL;
    const char *pid_s = getenv("LISTEN_PID"), *n_s = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    int n = 0;
    long owned = 0; /* descriptors 3.. to close on failure */
    char *end;

    if (ret_set == NULL) {
        afdt__fail(&f, AFDT_FORMAT, EINVAL, "ret_set is NULL");
        goto fail;
    }
    *ret_set = NULL;
    if (pid_s == NULL || n_s == NULL)
        goto done;
    errno = 0;
    long pid = strtol(pid_s, &end, 10);
    if (errno || *end != '\0' || pid <= 0) {
        afdt__fail(&f, AFDT_FORMAT, EINVAL, "LISTEN_PID is not a process id");
        goto fail;
    }
    if (pid != (long)getpid())
        goto done; /* meant for another process (our parent, say) */
    long count = strtol(n_s, &end, 10);
    if (errno || *end != '\0' || count < 0 || count > 65536) {
        afdt__fail(&f, AFDT_FORMAT, EINVAL, "LISTEN_FDS is not a count");
        goto fail;
    }
    /* Check everything before taking anything: variables that lie or are
     * malformed do not tell which of descriptors 3.. are ours, and those may
     * be the program's own, so such a failure closes nothing (as
     * sd_listen_fds(3)). */
    if (read_names(names, count, NULL, &f) < 0)
        goto fail;
    set = calloc((size_t)count + 1, sizeof(*set));
    if (set == NULL) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        owned = count; /* checked: they are ours, and nobody else will take them */
        goto fail;
    }
    if (read_names(names, count, set, &f) < 0)
        goto fail;
    n = (int)count;
done:
    if (unset_env) {
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
    }
    if (n == 0) {
        free(set);
        set = NULL;
    }
    *ret_set = set; /* the caller's */
    return n;
fail:
    free(set);
    for (long i = 0; i < owned; i++)
        afdt__close((int)(3 + i));
    if (unset_env) {
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
    }
    return afdt__report(err, AFDT__KEEP_PHASE, &f);
}

/* Move the descriptor named @name out of @from (its slot becomes -1). */
static int take_named(struct afdt_named_fd *from, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++) {
        if (from[i].fd >= 0 && strncmp(from[i].name, name, sizeof(from[i].name)) == 0) {
            int fd = from[i].fd;
            from[i].fd = -1;
            return fd;
        }
    }
    return -1;
}

/* Move the first descriptor of @from that is the socket @sp describes. */
static int take_matching(struct afdt_named_fd *from, uint32_t n, const struct spec *sp) {
    for (uint32_t i = 0; i < n; i++) {
        if (from[i].fd >= 0 && check_parsed(from[i].fd, sp, NULL) == 0) {
            int fd = from[i].fd;
            from[i].fd = -1;
            return fd;
        }
    }
    return -1;
}

/* Fill the still-empty entries of @set from @from, checking each: by name,
 * then (with @by_spec) by matching the spec where no name fits. */
static int take_from(struct afdt_named_fd *set, const struct spec *specs, uint32_t n,
                     struct afdt_named_fd *from, uint32_t nfrom, bool by_spec, uint32_t source,
                     uint32_t *sources, struct afdt_error_t *err) {
    for (int pass = 0; pass < (by_spec ? 2 : 1); pass++) {
        for (uint32_t i = 0; i < n; i++) {
            if (set[i].fd >= 0)
                continue;
            int fd = pass == 0 ? take_named(from, nfrom, set[i].name)
                               : take_matching(from, nfrom, &specs[i]);
            if (fd < 0)
                continue;
            set[i].fd = fd; /* now the set's */
            *sources |= source;
            if (check_parsed(fd, &specs[i], err) < 0)
                return -1;
        }
    }
    return 0;
}

AFDT_EXPORT int afdt_get_listeners_ex(const char *const *names, const char *const *specs,
                                      uint32_t n, const char *predecessor,
                                      const struct timeval *timeout,
                                      const struct afdt_client_options *opts,
                                      struct afdt_named_fd **ret_set, uint32_t *ret_sources,
                                      struct afdt_error_t *err) {
    struct afdt__fail f = {AFDT_NO_OPERATION, 0, ""};
    struct afdt_named_fd *set = NULL, *passed = NULL, *sent = NULL;
    struct spec *parsed = NULL;
    struct afdt__trust trust;
    uint32_t npassed = 0, nsent = 0, sources = 0;
    int r = -1;

    if (n == 0 || names == NULL || specs == NULL || ret_set == NULL || ret_sources == NULL) {
        afdt__fail(&f, AFDT_PATHNAME, EINVAL, "no names or specs, or a NULL output");
        goto report;
    }
    if (afdt__trust_parse(opts, &trust, &f) < 0) /* checked now, used by the sync client */
        goto report;
    set = calloc(n, sizeof(*set));
    parsed = calloc(n, sizeof(*parsed));
    if (set)
        for (uint32_t i = 0; i < n; i++)
            set[i].fd = -1;
    if (set == NULL || parsed == NULL) {
        afdt__fail(&f, AFDT_MALLOC, ENOMEM, "");
        goto report;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t len = names[i] ? strnlen(names[i], AFDT_NAME_MAX + 1) : 0;
        if (len == 0 || len > AFDT_NAME_MAX) {
            afdt__fail(&f, AFDT_PATHNAME, EINVAL, "a listener name is empty or too long");
            goto report;
        }
        memcpy(set[i].name, names[i], len);
        if (parse_spec(specs[i], &parsed[i], &f) < 0)
            goto report;
    }
    int got = afdt_listen_fds(1, &passed, err);
    if (got < 0)
        goto out;
    npassed = (uint32_t)got;
    if (take_from(set, parsed, n, passed, npassed, true, AFDT_FROM_LISTEN_FDS, &sources, err) < 0)
        goto out;
    if (predecessor) {
        bool missing = false;
        for (uint32_t i = 0; i < n; i++)
            missing |= set[i].fd < 0;
        uint8_t resp[AFDT_MSGLEN];
        uint32_t resp_len = sizeof(resp), nfds = 0;
        struct afdt_error_t e = AFDT_ERROR_T_INIT;
        if (missing && afdt_sync_client_opts(predecessor, (const uint8_t *)AFDT_LISTENERS_REQUEST,
                                             sizeof(AFDT_LISTENERS_REQUEST) - 1, resp, &resp_len,
                                             NULL, &nfds, &sent, &nsent, timeout, opts, &e) < 0) {
            /* Nobody there is the usual first start; anything else (another user answering
             * included) is an answer we must not paper over by binding in its place. */
            int e_errno = errno;
            if (e.operation != AFDT_CONNECT || (e_errno != ENOENT && e_errno != ECONNREFUSED)) {
                afdt__fail(&f, e.operation, e_errno, e.message);
                goto report;
            }
        }
        if (take_from(set, parsed, n, sent, nsent, false, AFDT_FROM_PREDECESSOR, &sources, err) < 0)
            goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (set[i].fd >= 0)
            continue;
        set[i].fd = open_parsed(&parsed[i], &f);
        if (set[i].fd < 0)
            goto report;
        sources |= AFDT_FROM_BIND;
    }
    *ret_set = set; /* the caller's */
    *ret_sources = sources;
    set = NULL;
    r = (int)n;
    goto out;
report:
    afdt__report(err, AFDT__KEEP_PHASE, &f);
out:
    if (set) {
        for (uint32_t i = 0; i < n; i++)
            afdt__close(set[i].fd);
        free(set);
    }
    afdt_named_fds_free(passed, npassed, 1); /* what no name asked for */
    afdt_named_fds_free(sent, nsent, 1);
    free(parsed);
    if (r < 0 && errno == 0 && f.errnum)
        errno = f.errnum;
    return r;
}

AFDT_EXPORT int afdt_get_listeners(const char *const *names, const char *const *specs, uint32_t n,
                                   const char *predecessor, const struct timeval *timeout,
                                   struct afdt_named_fd **ret_set, uint32_t *ret_sources,
                                   struct afdt_error_t *err) {
    return afdt_get_listeners_ex(names, specs, n, predecessor, timeout, NULL, ret_set, ret_sources,
                                 err);
}
