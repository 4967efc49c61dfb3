/* SPDX-License-Identifier: BSD-3-Clause */
/* Fault injection: each call the library makes that can fail is made to fail at its first,
 * second, third... use during a scenario that drives every interface, and each failure must be
 * reported with the right operation and errno, leak nothing, and leave the servers serving.
 * The same wrappers also count what the library asks of the event loop (at the end). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"
#include "helpers.h"

/* ---------------------------------------------------------------------------
 * The wrapped calls.  This program is linked from the library's object files
 * with -Wl,--wrap=NAME for each call below, so the library's references to
 * NAME land in __wrap_NAME, which counts the use and fails it when armed.
 * The link wraps this file's references too: the scenario below therefore
 * makes its own sockets with socketpair() or accept() (not wrapped), never
 * calls malloc, and calls __real_NAME where it needs a wrapped call itself.
 * The second column is the errno each call fails with: one that nothing in
 * the scenario produces by itself, so a report carrying it can only come from
 * the injected fault.
 * ------------------------------------------------------------------------- */

#define CALLS(X)                                                                                   \
    X(socket, EMFILE)                                                                              \
    X(bind, EACCES)                                                                                \
    X(listen, EIO)                                                                                 \
    X(accept4, EMFILE)                                                                             \
    X(connect, EACCES)                                                                             \
    X(sendmsg, ENOBUFS)                                                                            \
    X(recvmsg, ENOMEM)                                                                             \
    X(poll, ENOMEM)                                                                                \
    X(malloc, ENOMEM)                                                                              \
    X(calloc, ENOMEM)                                                                              \
    X(event_new, ENOMEM)                                                                           \
    X(event_add, ENOMEM)                                                                           \
    X(getsockopt, ENOBUFS)                                                                         \
    X(setsockopt, ENOMEM)                                                                          \
    X(chmod, EPERM)                                                                                \
    X(open, EROFS)                                                                                 \
    X(flock, ENOLCK)                                                                               \
    X(stat, ELOOP)                                                                                 \
    X(lstat, ELOOP)                                                                                \
    X(unlink, EBUSY)                                                                               \
    X(opendir, EMFILE)                                                                             \
    X(getrlimit, EPERM)                                                                            \
    X(fcntl, EIO)                                                                                  \
    X(getsockname, ENOBUFS)                                                                        \
    X(getaddrinfo, ENOMEM)

enum call {
#define X(name, eno) CALL_##name,
    CALLS(X)
#undef X
        N_CALLS
};

static const char *const call_name[N_CALLS] = {
#define X(name, eno) #name,
    CALLS(X)
#undef X
};

static const int call_errno[N_CALLS] = {
#define X(name, eno) eno,
    CALLS(X)
#undef X
};

/* Where the scenario is when a fault hits: some calls are absorbed on purpose
 * in one place (a stale-socket probe) and reported everywhere else. */
enum stage { ST_NONE, ST_CREATE, ST_STALE, ST_ASYNC, ST_SYNC, ST_LOW, ST_FINAL, ST_CLOSE };
static const char *const stage_name[] = {"none", "create",    "stale", "async",
                                         "sync", "low-level", "final", "close"};

/* Each run is a forked child that inherits the arming and starts its counts at
 * zero; the scenario's two threads share the counters, hence the atomics. */
struct fault {
    int call; /* the armed call, or -1 */
    long nth; /* which of its uses fails (1 = the first) */
    int eno;  /* the errno it fails with */
};
static struct fault arm = {-1, 0, 0};
/* A fixed fault that sets the stage for the swept one (not judged itself). */
static struct fault also = {-1, 0, 0};
/* In the async and sync stages, each socket's first connect finds the
 * server's backlog full (EAGAIN), so the clients' waiting paths run too. */
static bool backlog_full;
#define MAX_TRACKED_FD 4096
static atomic_bool connect_tried[MAX_TRACKED_FD];
static atomic_bool counting; /* off outside the scenario and during the final check */
static atomic_long uses[N_CALLS];
static atomic_int fired;
static atomic_int fired_stage;
static atomic_int stage;
static atomic_long live_allocs; /* malloc + calloc - free, through the library's objects */
/* Set around the takeover calls, which absorb some failures on purpose (see
 * fault_reported); recorded with the fault by the thread it hits. */
static _Thread_local bool in_takeover;
static atomic_bool fired_in_takeover;

/* Whether this use of @c is the armed one; if it is, errno is set for the failure. */
static bool fault_now(enum call c) {
    if (!atomic_load(&counting))
        return false;
    long n = atomic_fetch_add(&uses[c], 1) + 1;
    if ((int)c == also.call && n == also.nth) {
        errno = also.eno;
        return true;
    }
    if ((int)c != arm.call || n != arm.nth)
        return false;
    atomic_store(&fired_stage, atomic_load(&stage));
    atomic_store(&fired_in_takeover, in_takeover);
    atomic_store(&fired, 1);
    errno = arm.eno;
    return true;
}

/* Declare __real_NAME and __wrap_NAME together: -Wmissing-prototypes wants
 * both declared, and the signatures must match the library's calls. */
#define WRAP(ret, name, params)                                                                    \
    ret __real_##name params;                                                                      \
    ret __wrap_##name params

WRAP(int, socket, (int domain, int type, int proto));
int __wrap_socket(int domain, int type, int proto) {
    return fault_now(CALL_socket) ? -1 : __real_socket(domain, type, proto);
}

WRAP(int, bind, (int fd, const struct sockaddr *addr, socklen_t len));
int __wrap_bind(int fd, const struct sockaddr *addr, socklen_t len) {
    return fault_now(CALL_bind) ? -1 : __real_bind(fd, addr, len);
}

WRAP(int, listen, (int fd, int backlog));
int __wrap_listen(int fd, int backlog) {
    return fault_now(CALL_listen) ? -1 : __real_listen(fd, backlog);
}

WRAP(int, accept4, (int fd, struct sockaddr *addr, socklen_t *len, int flags));
int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return fault_now(CALL_accept4) ? -1 : __real_accept4(fd, addr, len, flags);
}

WRAP(int, connect, (int fd, const struct sockaddr *addr, socklen_t len));
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len) {
    if (fault_now(CALL_connect))
        return -1;
    int st = atomic_load(&stage);
    if (backlog_full && (st == ST_ASYNC || st == ST_SYNC) && fd >= 0 && fd < MAX_TRACKED_FD &&
        !atomic_exchange(&connect_tried[fd], true)) {
        errno = EAGAIN;
        return -1;
    }
    if (fd >= 0 && fd < MAX_TRACKED_FD)
        atomic_store(&connect_tried[fd], false); /* for the next socket with this number */
    return __real_connect(fd, addr, len);
}

WRAP(ssize_t, sendmsg, (int fd, const struct msghdr *msg, int flags));
ssize_t __wrap_sendmsg(int fd, const struct msghdr *msg, int flags) {
    return fault_now(CALL_sendmsg) ? -1 : __real_sendmsg(fd, msg, flags);
}

WRAP(ssize_t, recvmsg, (int fd, struct msghdr *msg, int flags));
ssize_t __wrap_recvmsg(int fd, struct msghdr *msg, int flags) {
    return fault_now(CALL_recvmsg) ? -1 : __real_recvmsg(fd, msg, flags);
}

WRAP(int, poll, (struct pollfd * fds, nfds_t n, int timeout));
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout) {
    return fault_now(CALL_poll) ? -1 : __real_poll(fds, n, timeout);
}

WRAP(void *, malloc, (size_t size));
void *__wrap_malloc(size_t size) {
    if (fault_now(CALL_malloc))
        return NULL;
    void *p = __real_malloc(size);
    if (p)
        atomic_fetch_add(&live_allocs, 1);
    return p;
}

WRAP(void *, calloc, (size_t n, size_t size));
void *__wrap_calloc(size_t n, size_t size) {
    if (fault_now(CALL_calloc))
        return NULL;
    void *p = __real_calloc(n, size);
    if (p)
        atomic_fetch_add(&live_allocs, 1);
    return p;
}

WRAP(void, free, (void *p));
void __wrap_free(void *p) {
    if (p)
        atomic_fetch_sub(&live_allocs, 1);
    __real_free(p);
}

WRAP(struct event *, event_new,
     (struct event_base * eb, evutil_socket_t fd, short what, event_callback_fn cb, void *arg));
struct event *__wrap_event_new(struct event_base *eb, evutil_socket_t fd, short what,
                               event_callback_fn cb, void *arg) {
    return fault_now(CALL_event_new) ? NULL : __real_event_new(eb, fd, what, cb, arg);
}

WRAP(int, event_add, (struct event * ev, const struct timeval *tv));
int __wrap_event_add(struct event *ev, const struct timeval *tv) {
    return fault_now(CALL_event_add) ? -1 : __real_event_add(ev, tv);
}

WRAP(int, getsockopt, (int fd, int level, int name, void *val, socklen_t *len));
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
    return fault_now(CALL_getsockopt) ? -1 : __real_getsockopt(fd, level, name, val, len);
}

WRAP(int, setsockopt, (int fd, int level, int name, const void *val, socklen_t len));
int __wrap_setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
    return fault_now(CALL_setsockopt) ? -1 : __real_setsockopt(fd, level, name, val, len);
}

WRAP(int, chmod, (const char *path, mode_t mode));
int __wrap_chmod(const char *path, mode_t mode) {
    return fault_now(CALL_chmod) ? -1 : __real_chmod(path, mode);
}

WRAP(int, open, (const char *path, int flags, ...));
int __wrap_open(const char *path, int flags, ...) {
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, unsigned);
        va_end(ap);
    }
    return fault_now(CALL_open) ? -1 : __real_open(path, flags, mode);
}

WRAP(int, flock, (int fd, int op));
int __wrap_flock(int fd, int op) {
    return fault_now(CALL_flock) ? -1 : __real_flock(fd, op);
}

WRAP(int, stat, (const char *path, struct stat *st));
int __wrap_stat(const char *path, struct stat *st) {
    return fault_now(CALL_stat) ? -1 : __real_stat(path, st);
}

WRAP(int, lstat, (const char *path, struct stat *st));
int __wrap_lstat(const char *path, struct stat *st) {
    return fault_now(CALL_lstat) ? -1 : __real_lstat(path, st);
}

WRAP(int, unlink, (const char *path));
int __wrap_unlink(const char *path) {
    return fault_now(CALL_unlink) ? -1 : __real_unlink(path);
}

WRAP(DIR *, opendir, (const char *path));
DIR *__wrap_opendir(const char *path) {
    return fault_now(CALL_opendir) ? NULL : __real_opendir(path);
}

/* The library passes an int (F_SETFD); reading the variadic argument as a
 * long passes it on unchanged in the x86-64 and aarch64 calling conventions. */
WRAP(int, fcntl, (int fd, int cmd, ...));
int __wrap_fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return fault_now(CALL_fcntl) ? -1 : __real_fcntl(fd, cmd, arg);
}

WRAP(int, getsockname, (int fd, struct sockaddr *addr, socklen_t *len));
int __wrap_getsockname(int fd, struct sockaddr *addr, socklen_t *len) {
    return fault_now(CALL_getsockname) ? -1 : __real_getsockname(fd, addr, len);
}

/* getaddrinfo reports by its return value (EAI_*), not errno. */
WRAP(int, getaddrinfo,
     (const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res));
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res) {
    return fault_now(CALL_getaddrinfo) ? EAI_MEMORY : __real_getaddrinfo(node, service, hints, res);
}

/* The resource is an enum in glibc's prototype and an int in the ABI. */
WRAP(int, getrlimit, (int resource, struct rlimit *rl));
int __wrap_getrlimit(int resource, struct rlimit *rl) {
    return fault_now(CALL_getrlimit) ? -1 : __real_getrlimit(resource, rl);
}

/* ---------------------------------------------------------------------------
 * What the scenario saw: every error report, and how each exchange ended.
 * ------------------------------------------------------------------------- */

enum source { SRC_SERVER, SRC_CLIENT, SRC_SYNC, SRC_LOW, SRC_TAKEOVER };
static const char *const source_name[] = {"server", "async client", "sync client", "low-level",
                                          "takeover"};

struct report {
    int src, phase, op, eno;
};
#define MAX_REPORTS 256
static struct report reports[MAX_REPORTS];
static atomic_int nreports;

static atomic_int n_ok, n_refused, n_failed; /* exchanges, by how they ended */
static atomic_int problems;

__attribute__((format(printf, 1, 2))) static void problem(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (arm.call >= 0)
        fprintf(stderr, "  [%s#%ld %s, hit in stage %s] %s\n", call_name[arm.call], arm.nth,
                strerror(arm.eno),
                atomic_load(&fired) ? stage_name[atomic_load(&fired_stage)] : "(not reached)", msg);
    else
        fprintf(stderr, "  [no fault] %s\n", msg);
    atomic_fetch_add(&problems, 1);
}

static void record(enum source src, const struct afdt_error_t *e, int eno) {
    int i = atomic_fetch_add(&nreports, 1);
    if (i < MAX_REPORTS)
        reports[i] = (struct report){(int)src, (int)e->phase, (int)e->operation, eno};
    if (e->message == NULL)
        problem("%s reported a NULL message", source_name[src]);
    bool phase_ok;
    switch (src) {
    case SRC_SERVER:
        phase_ok = e->phase == AFDT_CREATE_SERVER || e->phase == AFDT_ACCEPT_CLIENT ||
                   e->phase == AFDT_HANDLE_REQUEST;
        break;
    case SRC_CLIENT:
        phase_ok = e->phase == AFDT_CREATE_CLIENT || e->phase == AFDT_HANDLE_RESPONSE;
        break;
    default: phase_ok = e->phase == AFDT_NO_PHASE; break;
    }
    if (!phase_ok)
        problem("%s reported phase %s", source_name[src], afdt_phase_str(e->phase));
    if (e->operation == AFDT_TIMEOUT)
        problem("%s timed out: something waited for an answer that never came (%s)",
                source_name[src], e->message ? e->message : "");
}

/* A low-level or sync call failed: log it and count the exchange as failed. */
static void failed(enum source src, const struct afdt_error_t *e, int eno) {
    record(src, e, eno);
    atomic_fetch_add(&n_failed, 1);
}

static bool reported(int op, int eno) {
    int n = atomic_load(&nreports);
    for (int i = 0; i < n && i < MAX_REPORTS; i++)
        if (reports[i].op == op && reports[i].eno == eno)
            return true;
    return false;
}

static void dump_reports(void) {
    int n = atomic_load(&nreports);
    for (int i = 0; i < n && i < MAX_REPORTS; i++)
        fprintf(stderr, "    report: %s %s %s errno=%s\n", source_name[reports[i].src],
                afdt_phase_str((enum afdt_phase)reports[i].phase),
                afdt_operation_str((enum afdt_operation)reports[i].op),
                reports[i].eno ? strerror(reports[i].eno) : "0");
}

/* ---------------------------------------------------------------------------
 * The scenario: two servers (2009-style and extended with a named-set reply,
 * replacing a stale socket file), async clients of both kinds in the same
 * loop, sync clients on a second thread while the loop runs, and low-level
 * frames and a 260-descriptor named set over socket pairs.
 * ------------------------------------------------------------------------- */

#define N_EXCHANGES 13 /* 3 async, 3 sync, 5 low-level, 2 takeovers */
#define SMALL_N 3
#define BIG_N 260 /* more than one frame of descriptors */
#define MANY_N 5

static struct {
    struct event_base *eb;
    char p1[108], p2[108], p3[108], lock2[120];
    bool lock2_left; /* the lock file outlived replacing the stale file */
    void *h1, *h2;
    int devnull;
    int async_left;
    atomic_int sync_done;
    uint32_t my_uid;
    char p4[100], p5[100], p6[100]; /* the predecessor's socket, one to bind, nobody's */
    int tcp_l, unix_l;              /* the predecessor's listeners, which server2 hands out */
    struct afdt_named_fd pred_set[2];
} S;

/* FD_CLOEXEC, asked without the wrapped fcntl (the harness's is_cloexec would count). */
static bool cloexec(int fd) {
    int fl = __real_fcntl(fd, F_GETFD, 0L);
    return fl >= 0 && (fl & FD_CLOEXEC);
}

/* A listening socket made without the library (and without counting): on
 * 127.0.0.1, any port, or at @unix_path. */
static int real_listener(const char *unix_path) {
    int fd;
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", unix_path);
        fd = __real_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        CHECK_INT(__real_bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = __real_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        CHECK_INT(__real_bind(fd, (struct sockaddr *)&sin, sizeof(sin)), ==, 0);
    }
    CHECK_INT(__real_listen(fd, 16), ==, 0);
    return fd;
}

static struct afdt_named_fd small_set[SMALL_N];
static struct afdt_named_fd big_set[BIG_N];

static void set_name(char *buf, size_t size, bool big, uint32_t i) {
    static const char *const small_names[SMALL_N] = {"alpha", "beta", "gamma"};
    if (big)
        snprintf(buf, size, "n%u", i);
    else
        snprintf(buf, size, "%s", small_names[i]);
}

/* A received single-frame answer: close what came, and say whether it is the
 * expected one (or the extended server's refusal, counted apart). */
static void judge_frame(const char *what, const uint8_t *r, uint32_t len, const int *fds,
                        uint32_t nfds, const char *want, uint32_t want_fds) {
    bool good = len == strlen(want) && memcmp(r, want, len) == 0 && nfds == want_fds;
    bool refused = len == strlen(AFDT_REFUSED_RESPONSE) &&
                   memcmp(r, AFDT_REFUSED_RESPONSE, len) == 0 && nfds == 0;
    for (uint32_t i = 0; i < nfds; i++) {
        if (!same_file(fds[i], S.devnull) || !cloexec(fds[i]))
            good = false;
        close(fds[i]);
    }
    if (refused)
        atomic_fetch_add(&n_refused, 1);
    else if (good)
        atomic_fetch_add(&n_ok, 1);
    else
        problem("%s: wrong answer (%u bytes, %u descriptors)", what, len, nfds);
}

/* A received named set: check it, close it, free it. */
static void judge_set(const char *what, const uint8_t *content, uint32_t len,
                      struct afdt_named_fd *set, uint32_t n, bool big) {
    bool good =
        n == (big ? BIG_N : SMALL_N) && len == 3 && memcmp(content, big ? "big" : "set", 3) == 0;
    for (uint32_t i = 0; i < n && good; i++) {
        char want[16];
        set_name(want, sizeof(want), big, i);
        good =
            strcmp(set[i].name, want) == 0 && same_file(set[i].fd, S.devnull) && cloexec(set[i].fd);
    }
    afdt_named_fds_free(set, n, 1);
    if (good)
        atomic_fetch_add(&n_ok, 1);
    else
        problem("%s: wrong named set (%u entries)", what, n);
}

/* --- The servers ----------------------------------------------------------- */

static int s1_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                      void *ud) {
    (void)ud;
    if (len == 4 && memcmp(req, "ping", 4) == 0) {
        memcpy(resp, "pong", 4);
        *resp_len = 4;
        return S.devnull; /* still ours: the library never closes it */
    }
    *resp_len = 0;
    return -1;
}

static int s2_request(const struct afdt_peer *peer, const uint8_t *req, uint32_t len,
                      struct afdt_reply *reply, void *ud) {
    (void)peer;
    (void)ud;
    if (len == 5 && memcmp(req, "named", 5) == 0) {
        memcpy(reply->content, "set", 3);
        reply->content_length = 3;
        reply->named = small_set;
        reply->nnamed = SMALL_N;
        return 0;
    }
    if (len == strlen(AFDT_LISTENERS_REQUEST) && memcmp(req, AFDT_LISTENERS_REQUEST, len) == 0) {
        reply->named = S.pred_set; /* as a predecessor hands over its listeners */
        reply->nnamed = 2;
        return 0;
    }
    if (len == 4 && memcmp(req, "many", 4) == 0) {
        memcpy(reply->content, "many", 4);
        reply->content_length = 4;
        for (uint32_t i = 0; i < MANY_N; i++)
            reply->fds[i] = S.devnull;
        reply->nfds = MANY_N;
        return 0;
    }
    return -1;
}

static void server_error(const struct afdt_error_t *e, void *ud) {
    int eno = errno;
    (void)ud;
    record(SRC_SERVER, e, eno);
}

static void *create_s1(void) {
    void *h = NULL;
    if (afdt_create_server(S.p1, S.eb, s1_request, NULL, server_error, &h, NULL) < 0)
        return NULL;
    return h;
}

static void *create_s2(void) {
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.flags = AFDT_SERVER_REPLACE_STALE;
    o.socket_mode = 0600;
    o.conn_timeout_ms = 3000;
    o.n_allowed_uids = 1;
    o.allowed_uids = &S.my_uid;
    o.request_handler = s2_request;
    o.error_handler = server_error;
    void *h = NULL;
    if (afdt_create_server_ex(S.p2, S.eb, &o, &h) < 0)
        return NULL;
    return h;
}

/* Create a server; a failure must have been reported, and with the fault
 * spent a second try must work. */
static void *create_server_retrying(void *(*create)(void), const char *what) {
    int before = atomic_load(&nreports);
    void *h = create();
    if (h == NULL) {
        int eno = errno;
        if (atomic_load(&nreports) == before)
            problem("%s failed without calling the error handler", what);
        else if (reports[before].eno != eno)
            problem("%s returned errno %d but reported %d", what, eno, reports[before].eno);
        h = create();
        if (h == NULL)
            problem("%s failed again once the fault was spent", what);
    }
    return h;
}

/* --- Async clients ----------------------------------------------------------- */

struct async_client {
    const char *what;
    int calls;
};

static void async_done(struct async_client *ac) {
    if (++ac->calls > 1)
        problem("%s: called back %d times", ac->what, ac->calls);
    if (--S.async_left == 0)
        event_base_loopbreak(S.eb);
}

static void on_ping_response(const uint8_t *r, uint32_t len, int fd, void *ud) {
    struct async_client *ac = ud;
    judge_frame(ac->what, r, len, &fd, fd >= 0, "pong", 1);
    async_done(ac);
}

static void on_ex_response(struct afdt_response *resp, void *ud) {
    struct async_client *ac = ud;
    if (resp->named)
        judge_set(ac->what, resp->content, resp->content_length, resp->named, resp->nnamed, false);
    else if (strcmp(ac->what, "async many") != 0) /* only a refusal may replace the set */
        judge_frame(ac->what, resp->content, resp->content_length, resp->fds, resp->nfds,
                    "(a named set)", 0);
    else
        judge_frame(ac->what, resp->content, resp->content_length, resp->fds, resp->nfds, "many",
                    MANY_N);
    async_done(ac);
}

static void on_async_error(const struct afdt_error_t *e, void *ud) {
    int eno = errno;
    record(SRC_CLIENT, e, eno);
    atomic_fetch_add(&n_failed, 1);
    async_done(ud);
}

static void start_async(struct async_client *ac, const char *path, const char *req, bool ex) {
    struct timeval tv = {3, 0};
    ac->calls = 0;
    S.async_left++;
    int r = ex ? afdt_create_client_ex(path, S.eb, (const uint8_t *)req, (uint32_t)strlen(req),
                                       on_ex_response, on_async_error, &tv, ac)
               : afdt_create_client(path, S.eb, (const uint8_t *)req, (uint32_t)strlen(req),
                                    on_ping_response, on_async_error, &tv, ac);
    if (r < 0 && ac->calls != 1)
        problem("%s: create failed without calling the error handler", ac->what);
}

/* Run the loop until every async client has called back. */
static void run_until_async_done(void) {
    while (S.async_left > 0) {
        if (event_base_loop(S.eb, EVLOOP_ONCE) != 0) {
            problem("%d async client(s) will never call back: no event left", S.async_left);
            return;
        }
    }
}

/* --- Takeover ------------------------------------------------------------------ */

/* Listeners taken over from a running predecessor (server2), on the sync thread. */
static void takeover_from_predecessor(void) {
    const char *const names[] = {"web", "unixl"};
    char unix_spec[112];
    snprintf(unix_spec, sizeof(unix_spec), "unix:%s", S.p4);
    const char *const specs[] = {"tcp:127.0.0.1:0", unix_spec};
    struct timeval tv = {3, 0};
    struct afdt_named_fd *set = NULL;
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    in_takeover = true;
    int r = afdt_get_listeners(names, specs, 2, S.p2, &tv, &set, &sources, &err);
    int eno = errno;
    in_takeover = false;
    if (r < 0) {
        failed(SRC_TAKEOVER, &err, eno);
        if (set != NULL)
            problem("takeover from predecessor: failed but set *ret_set");
        return;
    }
    bool good = r == 2 && sources == AFDT_FROM_PREDECESSOR && same_file(set[0].fd, S.tcp_l) &&
                same_file(set[1].fd, S.unix_l) && cloexec(set[0].fd) && cloexec(set[1].fd);
    afdt_named_fds_free(set, 2, 1);
    if (good)
        atomic_fetch_add(&n_ok, 1);
    else
        problem("takeover from predecessor: wrong listeners (sources %#x)", sources);
}

/* One listener from socket activation (LISTEN_FDS, at descriptor 3) and two
 * bound afresh, with a predecessor path where nobody listens. */
static void takeover_by_activation_and_binding(void) {
    int act = real_listener(NULL);
    int ref = __real_fcntl(act, F_DUPFD_CLOEXEC, 64L); /* ours, to recognise it by */
    int saved3 = -1;
    CHECK(ref >= 0);
    if (act != 3) {
        if (__real_fcntl(3, F_GETFD, 0L) >= 0)
            saved3 = __real_fcntl(3, F_DUPFD_CLOEXEC, 64L);
        CHECK_INT(dup2(act, 3), ==, 3);
        close(act);
    }
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "act", 1);

    const char *const names[] = {"act", "fresh", "local"};
    char unix_spec[112];
    snprintf(unix_spec, sizeof(unix_spec), "unix:%s", S.p5);
    const char *const specs[] = {"tcp:127.0.0.1:0", "tcp:127.0.0.1:0", unix_spec};
    struct timeval tv = {3, 0};
    struct afdt_named_fd *set = NULL;
    uint32_t sources = 0;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    in_takeover = true;
    int r = afdt_get_listeners(names, specs, 3, S.p6, &tv, &set, &sources, &err);
    int eno = errno;
    in_takeover = false;
    if (r < 0) {
        failed(SRC_TAKEOVER, &err, eno);
        /* Descriptor 3 is the library's once it has read LISTEN_FDS (and
         * removed it), and then a failure must have closed it; unless the
         * failure was fcntl(F_SETFD) on it, which really fails only for a
         * descriptor that is not open. */
        bool fcntl_hit = atomic_load(&fired) && arm.call == CALL_fcntl;
        if (getenv("LISTEN_FDS") != NULL || fcntl_hit) {
            close(3);
        } else if (__real_fcntl(3, F_GETFD, 0L) >= 0) {
            problem("takeover by activation: failed with the passed descriptor left open");
            close(3);
        }
    } else {
        bool good = r == 3 && sources == (AFDT_FROM_LISTEN_FDS | AFDT_FROM_BIND) &&
                    set[0].fd == 3 && same_file(set[0].fd, ref) && cloexec(set[0].fd) &&
                    cloexec(set[1].fd) && cloexec(set[2].fd) && access(S.p5, F_OK) == 0;
        afdt_named_fds_free(set, 3, 1);
        if (good)
            atomic_fetch_add(&n_ok, 1);
        else
            problem("takeover by activation: wrong listeners (sources %#x)", sources);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (saved3 >= 0) {
        dup2(saved3, 3);
        close(saved3);
    }
    close(ref);
    char lock[112];
    snprintf(lock, sizeof(lock), "%s.lock", S.p5);
    __real_unlink(S.p5);
    __real_unlink(lock);
}

/* --- Sync clients, on a second thread --------------------------------------- */
static void *sync_thread(void *arg) {
    (void)arg;
    struct timeval tv = {3, 0};
    uint8_t buf[64];
    uint32_t len = sizeof(buf);
    int fd = -1;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_sync_client(S.p1, (const uint8_t *)"ping", 4, buf, &len, &fd, &tv, &err) < 0) {
        int eno = errno;
        failed(SRC_SYNC, &err, eno);
        if (fd != -1)
            problem("sync ping: failed with *received_fd %d", fd);
    } else {
        judge_frame("sync ping", buf, len, &fd, fd >= 0, "pong", 1);
    }

    int fds[8];
    uint32_t nfds = 8;
    struct afdt_named_fd *named = NULL;
    uint32_t nnamed = 0;
    len = sizeof(buf);
    err = AFDT_ERROR_T_INIT;
    if (afdt_sync_client_ex(S.p2, (const uint8_t *)"many", 4, buf, &len, fds, &nfds, &named,
                            &nnamed, &tv, &err) < 0) {
        int eno = errno;
        failed(SRC_SYNC, &err, eno);
    } else {
        judge_frame("sync many", buf, len, fds, nfds, "many", MANY_N);
    }

    nfds = 8;
    len = sizeof(buf);
    named = NULL;
    err = AFDT_ERROR_T_INIT;
    if (afdt_sync_client_ex(S.p2, (const uint8_t *)"named", 5, buf, &len, fds, &nfds, &named,
                            &nnamed, &tv, &err) < 0) {
        int eno = errno;
        failed(SRC_SYNC, &err, eno);
    } else if (named) {
        judge_set("sync named", buf, len, named, nnamed, false);
    } else {
        judge_frame("sync named", buf, len, fds, nfds, "(a named set)", 0);
    }
    takeover_from_predecessor();
    atomic_store(&S.sync_done, 1);
    return NULL;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
    if (atomic_load(&S.sync_done))
        event_base_loopbreak(S.eb);
}

/* The loop serves the sync clients while they run; a timer checks for the end. */
static void sync_stage(void) {
    struct event *tick = __real_event_new(S.eb, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 2000};
    CHECK(tick != NULL);
    CHECK_INT(__real_event_add(tick, &tv), ==, 0);
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, sync_thread, NULL), ==, 0);
    event_base_dispatch(S.eb);
    pthread_join(t, NULL);
    event_free(tick);
}

/* --- Low-level frames --------------------------------------------------------- */

static void pair(int sv[2]) {
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
}

/* One frame from sv[0] to sv[1] with @nsend descriptors, received by the call
 * that matches @nsend (0: plain, 1: fd, more: fds). */
static void low_frame(const char *what, int s, int r, uint32_t nsend) {
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int fds[8];
    for (uint32_t i = 0; i < nsend; i++)
        fds[i] = S.devnull;
    int rc = nsend == 0   ? afdt_send_plain_msg(s, (const uint8_t *)"low", 3, &err)
             : nsend == 1 ? afdt_send_fd_msg(s, (const uint8_t *)"low", 3, S.devnull, &err)
                          : afdt_send_fds_msg(s, (const uint8_t *)"low", 3, fds, nsend, &err);
    if (rc < 0) {
        int eno = errno;
        failed(SRC_LOW, &err, eno);
        return;
    }
    uint8_t buf[16];
    uint32_t len = sizeof(buf), nrecv = 8;
    int got[8] = {-1};
    err = AFDT_ERROR_T_INIT;
    rc = nsend == 0   ? afdt_recv_plain_msg(r, buf, &len, &err)
         : nsend == 1 ? afdt_recv_fd_msg(r, buf, &len, &got[0], &err)
                      : afdt_recv_fds_msg(r, buf, &len, got, &nrecv, &err);
    if (rc < 0) {
        int eno = errno;
        failed(SRC_LOW, &err, eno);
        if (len > sizeof(buf) || (nsend == 1 && got[0] != -1) || (nsend > 1 && nrecv != 0))
            problem("%s: a failed receive left *content_len %u, fd %d, nfds %u", what, len, got[0],
                    nrecv);
        return;
    }
    judge_frame(what, buf, len, got,
                nsend == 0   ? 0
                : nsend == 1 ? (got[0] >= 0)
                             : nrecv,
                "low", nsend);
}

static void *named_peer(void *arg) {
    int sock = *(int *)arg;
    uint8_t content[16];
    uint32_t len = sizeof(content), n = 0;
    struct afdt_named_fd *set = NULL;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_recv_named_fds(sock, content, &len, &set, &n, &err) < 0) {
        int eno = errno;
        record(SRC_LOW, &err, eno);
        if (set != NULL || n != 0)
            problem("low-level named: a failed receive set *ret_set or *ret_n");
    } else {
        judge_set("low-level named", content, len, set, n, true);
    }
    close(sock); /* so a sender still waiting learns the receiver is gone */
    return NULL;
}

static void low_level_stage(void) {
    int sv[2];
    pair(sv);
    low_frame("low plain", sv[0], sv[1], 0);
    close(sv[0]);
    close(sv[1]);
    pair(sv);
    low_frame("low fd", sv[0], sv[1], 1);
    close(sv[0]);
    close(sv[1]);
    pair(sv);
    low_frame("low fds", sv[0], sv[1], MANY_N);
    close(sv[0]);
    close(sv[1]);

    /* afdt_listen and afdt_connect, and a frame over what they made. */
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int l = afdt_listen(S.p3, &err);
    if (l < 0) {
        int eno = errno;
        failed(SRC_LOW, &err, eno);
    } else {
        int c = afdt_connect(S.p3, &err);
        if (c < 0) {
            int eno = errno;
            failed(SRC_LOW, &err, eno);
        } else {
            int a = accept(l, NULL, NULL);
            CHECK(a >= 0);
            low_frame("low listen/connect", c, a, 1);
            close(a);
            close(c);
        }
        close(l);
        __real_unlink(S.p3);
    }

    takeover_by_activation_and_binding();

    /* A named set too big for one frame, to a receiver on another thread. */
    pair(sv);
    int peer_sock = sv[1]; /* the peer thread's, it closes it */
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, named_peer, &peer_sock), ==, 0);
    err = AFDT_ERROR_T_INIT;
    int before_ok = atomic_load(&n_ok);
    bool sent = afdt_send_named_fds(sv[0], (const uint8_t *)"big", 3, big_set, BIG_N, &err) == 0;
    if (!sent) {
        int eno = errno;
        record(SRC_LOW, &err, eno);
    }
    close(sv[0]);
    pthread_join(t, NULL);
    /* The exchange counts once: good only if the receiver judged it so and
     * the sender saw it acknowledged. */
    if (atomic_load(&n_ok) == before_ok) {
        atomic_fetch_add(&n_failed, 1);
    } else if (!sent) {
        atomic_fetch_sub(&n_ok, 1);
        atomic_fetch_add(&n_failed, 1);
    }
}

/* --- The whole run ----------------------------------------------------------- */

static int count_fds(void) {
    DIR *d = __real_opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

static void scenario(const char *base, long run) {
    snprintf(S.p1, sizeof(S.p1), "%s.%ld.a", base, run);
    snprintf(S.p2, sizeof(S.p2), "%s.%ld.b", base, run);
    snprintf(S.p3, sizeof(S.p3), "%s.%ld.c", base, run);
    snprintf(S.lock2, sizeof(S.lock2), "%s.lock", S.p2);
    snprintf(S.p4, sizeof(S.p4), "%s.%ld.d", base, run);
    snprintf(S.p5, sizeof(S.p5), "%s.%ld.e", base, run);
    snprintf(S.p6, sizeof(S.p6), "%s.%ld.f", base, run);
    S.my_uid = (uint32_t)getuid();
    int fds_before = count_fds();
    S.devnull = __real_open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(S.devnull >= 0);
    for (uint32_t i = 0; i < SMALL_N; i++) {
        small_set[i].fd = S.devnull;
        set_name(small_set[i].name, sizeof(small_set[i].name), false, i);
    }
    for (uint32_t i = 0; i < BIG_N; i++) {
        big_set[i].fd = S.devnull;
        set_name(big_set[i].name, sizeof(big_set[i].name), true, i);
    }
    S.tcp_l = real_listener(NULL);
    S.unix_l = real_listener(S.p4);
    S.pred_set[0].fd = S.tcp_l;
    snprintf(S.pred_set[0].name, sizeof(S.pred_set[0].name), "web");
    S.pred_set[1].fd = S.unix_l;
    snprintf(S.pred_set[1].name, sizeof(S.pred_set[1].name), "unixl");
    S.eb = event_base_new();
    CHECK(S.eb != NULL);
    atomic_store(&counting, true);

    atomic_store(&stage, ST_CREATE);
    S.h1 = create_server_retrying(create_s1, "afdt_create_server");

    /* A stale socket file for the extended server to replace. */
    atomic_store(&stage, ST_STALE);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    int l = afdt_listen(S.p2, &err);
    if (l < 0) {
        int eno = errno;
        record(SRC_LOW, &err, eno);
        l = afdt_listen(S.p2, &err);
    }
    CHECK(l >= 0);
    close(l);
    S.h2 = create_server_retrying(create_s2, "afdt_create_server_ex");
    S.lock2_left = access(S.lock2, F_OK) == 0;
    if (S.h1 == NULL || S.h2 == NULL)
        return;

    atomic_store(&stage, ST_ASYNC);
    struct async_client a1 = {"async ping", 0}, a2 = {"async named", 0}, a3 = {"async many", 0};
    start_async(&a1, S.p1, "ping", false);
    start_async(&a2, S.p2, "named", true);
    start_async(&a3, S.p2, "many", true);
    run_until_async_done();

    atomic_store(&stage, ST_SYNC);
    sync_stage();

    atomic_store(&stage, ST_LOW);
    low_level_stage();

    /* With the fault out of the way, the same servers must still answer. */
    atomic_store(&counting, false);
    atomic_store(&stage, ST_FINAL);
    /* (The servers may still report on an earlier stage's connection here,
     * when the loop stopped before they saw its end.) */
    int ok_before = atomic_load(&n_ok), failed_before = atomic_load(&n_failed);
    struct async_client f1 = {"final ping", 0}, f2 = {"final named", 0};
    start_async(&f1, S.p1, "ping", false);
    start_async(&f2, S.p2, "named", true);
    run_until_async_done();
    if (atomic_load(&n_ok) != ok_before + 2 || atomic_load(&n_failed) != failed_before) {
        problem("the servers no longer answer a good exchange");
        dump_reports();
    }
    atomic_fetch_sub(&n_ok, 2);

    atomic_store(&counting, true);
    atomic_store(&stage, ST_CLOSE);
    CHECK_INT(afdt_close_server(S.h1), ==, 0);
    CHECK_INT(afdt_close_server(S.h2), ==, 0);
    event_base_dispatch(S.eb); /* returns once the servers hold no event */
    atomic_store(&counting, false);
    atomic_store(&stage, ST_NONE);
    event_base_free(S.eb);

    /* A server removes its socket file unless it could not tell it is its own. */
    bool file_kept = arm.call == CALL_stat || arm.call == CALL_unlink;
    for (int i = 0; i < 2; i++) {
        const char *p = i ? S.p2 : S.p1;
        if (access(p, F_OK) == 0) {
            if (!(atomic_load(&fired) && file_kept))
                problem("socket file %s left behind", p);
            __real_unlink(p);
        }
    }
    __real_unlink(S.lock2);
    char lock4[112];
    snprintf(lock4, sizeof(lock4), "%s.lock", S.p4);
    __real_unlink(lock4); /* made when a failed takeover fell back to binding */
    __real_unlink(S.p4);
    close(S.tcp_l);
    close(S.unix_l);
    close(S.devnull);

    /* Descriptors from a peer may still be with the library's closer thread. */
    int fds_after;
    for (int ms = 0; (fds_after = count_fds()) != fds_before && ms < 5000; ms += 10)
        sleep_ms(10);
    if (fds_after != fds_before)
        problem("descriptor leak: %d open before, %d after", fds_before, fds_after);
    long allocs = atomic_load(&live_allocs);
    if (allocs != 0)
        problem("memory leak: %ld allocation(s) by the library not freed", allocs);
}

/* Whether the armed fault came out in a report with its operation and errno,
 * or was absorbed in one of the ways the library is meant to absorb it. */
static bool fault_reported(void) {
    int e = arm.eno;
    bool stale = atomic_load(&fired_stage) == ST_STALE;
    /* Takeover treats any AFDT_CONNECT failure towards the predecessor as "no
     * predecessor" and binds instead, which succeeds or meets the live
     * predecessor's socket (EADDRINUSE); and it ignores SO_REUSEADDR failing. */
    bool takeover = atomic_load(&fired_in_takeover);
    switch ((enum call)arm.call) {
    case CALL_socket: /* the stale probe's socket: no answer means "alive" */
        return reported(AFDT_SOCKET, e) || (stale && reported(AFDT_BIND, EADDRINUSE));
    case CALL_bind: return reported(AFDT_BIND, e);
    case CALL_listen: return reported(AFDT_LISTEN, e);
    case CALL_accept4: return reported(AFDT_ACCEPT, e);
    case CALL_connect: /* likewise the stale probe's connect */
        return reported(AFDT_CONNECT, e) || (stale && reported(AFDT_BIND, EADDRINUSE)) || takeover;
    case CALL_sendmsg: return reported(AFDT_SENDMSG, e);
    case CALL_recvmsg: return reported(AFDT_RECVMSG, e);
    case CALL_poll: return reported(AFDT_POLL, e);
    case CALL_malloc:
    case CALL_calloc: return reported(AFDT_MALLOC, e);
    case CALL_event_new: return reported(AFDT_EVENT_BASE_SET, e);
    case CALL_event_add: return reported(AFDT_EVENT_ADD, e);
    case CALL_getsockopt:
        /* SO_PEERCRED unknown: the peer matches no allowed uid.  SO_TYPE failing
         * in afdt_check_socket is reported as "not a socket".
         * Taking over, the predecessor's SO_PEERCRED unknown: not trusted. */
        return reported(AFDT_NO_OPERATION, EACCES) ||
               (takeover && (reported(AFDT_NO_OPERATION, ENOTSOCK) ||
                             reported(AFDT_NO_OPERATION, e) || reported(AFDT_PEER, e)));
    case CALL_setsockopt: /* the sync client's connect or receive timeout */
        return reported(AFDT_CONNECT, e) || reported(AFDT_RECVMSG, e) || takeover;
    case CALL_chmod:
    case CALL_open:
    case CALL_flock: return reported(AFDT_BIND, e);
    case CALL_lstat: /* a stale file that cannot be checked is not removed, a predecessor's
                        socket file that cannot be checked is not trusted */
        return reported(AFDT_BIND, EADDRINUSE) || (takeover && reported(AFDT_PEER, e));
    case CALL_unlink:
        /* The stale file cannot be removed: not replaced (EADDRINUSE).  The
         * lock file, once the replacement is done, or the socket file on
         * close: merely left behind. */
        return stale ? reported(AFDT_BIND, EADDRINUSE) || S.lock2_left : true;
    case CALL_stat: /* the server loses track of its file, and keeps it */
    case CALL_getrlimit: /* headroom unknown: the kernel's own limit still applies */ return true;
    case CALL_opendir: /* EMFILE from opendir means no headroom at all */
        return reported(AFDT_RECVMSG, EMFILE);
    case CALL_fcntl: /* a LISTEN_FDS descriptor, or the sync client's socket made blocking */
        return reported(AFDT_FORMAT, e) || reported(AFDT_CONNECT, e) || reported(AFDT_RECVMSG, e) ||
               takeover;
    case CALL_getsockname: /* afdt_check_socket's, or the port a spec's port 0 got */
        return reported(AFDT_NO_OPERATION, e) || reported(AFDT_NO_OPERATION, EADDRNOTAVAIL);
    case CALL_getaddrinfo: /* reported by its own codes, not errno */
        return reported(AFDT_PATHNAME, EADDRNOTAVAIL);
    case N_CALLS: break;
    }
    return false;
}

/* One run in a forked child: 0 the fault hit and all was well, 3 the fault
 * was never reached and all was well, 1 or 4 likewise but something was wrong. */
static int run_child(const char *base, long run, bool transparent) {
    alarm(30);
    signal(SIGPIPE, SIG_DFL); /* the library must never raise it */
    for (int i = 0; i < N_CALLS; i++)
        atomic_store(&uses[i], 0);
    scenario(base, run);
    bool hit = atomic_load(&fired);
    int nrep = atomic_load(&nreports);
    int ended = atomic_load(&n_ok) + atomic_load(&n_refused) + atomic_load(&n_failed);
    if (ended != N_EXCHANGES)
        problem("%d exchanges ended, %d expected", ended, N_EXCHANGES);
    if (atomic_load(&n_refused) && !(hit && arm.call == CALL_getsockopt))
        problem("a peer was refused");
    for (int i = 0; i < nrep && i < MAX_REPORTS && also.call >= 0; i++)
        if (reports[i].eno == also.eno)
            nrep--; /* the fixed first fault's own report */
    if (!hit || transparent) {
        if (nrep != 0 || atomic_load(&n_ok) != N_EXCHANGES)
            problem("%s run: %d report(s), %d of %d exchanges good",
                    transparent ? "a retried-fault" : "a fault-free", nrep, atomic_load(&n_ok),
                    N_EXCHANGES);
    } else if (!fault_reported()) {
        problem("the fault was not reported as %s", call_name[arm.call]);
    }
    if (atomic_load(&problems)) {
        dump_reports();
        return hit ? 1 : 4;
    }
    if (getenv("AFDT_FAULT_VERBOSE")) {
        fprintf(stderr, "  [%s#%ld] ok, hit in stage %s\n",
                arm.call >= 0 ? call_name[arm.call] : "-", arm.nth,
                hit ? stage_name[atomic_load(&fired_stage)] : "-");
        dump_reports();
    }
    if (arm.call < 0 && !backlog_full) {
        for (int i = 0; i < N_CALLS; i++)
            printf("uses of %-11s in one clean run: %ld\n", call_name[i], atomic_load(&uses[i]));
    }
    fflush(NULL);
    return hit ? 0 : 3;
}

/* Fail @call with @eno at its 1st, 2nd, ... use until a run never reaches it. */
static void sweep_with(enum call c, int eno, bool transparent, struct fault first, bool backlog) {
    const char *base = tmp_path("f");
    also = first;
    backlog_full = backlog;
    long injected = 0, failures = 0;
    for (long n = 1; n <= 5000; n++) {
        arm.call = (int)c;
        arm.nth = n;
        arm.eno = eno;
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            _exit(run_child(base, n, transparent));
        int code = wait_exit(pid);
        if (code == 3)
            break;
        if (code == 4) {
            failures++;
            break;
        }
        injected++;
        if (code != 0) {
            failures++;
            if (code > 128)
                fprintf(stderr, "  [%s#%ld %s] crashed: signal %d\n", call_name[c], n,
                        strerror(eno), code - 128);
        }
    }
    printf("fault %-11s %-24s %4ld faults injected, %ld failures%s%s%s\n", call_name[c],
           strerror(eno), injected, failures, first.call >= 0 ? ", after a failed " : "",
           first.call >= 0 ? call_name[first.call] : "", backlog ? ", backlog full" : "");
    fflush(stdout);
    CHECK_INT(injected, >, 0);
    CHECK_INT(failures, ==, 0);
}

static void sweep(enum call c, int eno, bool transparent) {
    sweep_with(c, eno, transparent, (struct fault){-1, 0, 0}, false);
}

/* ---------------------------------------------------------------------------
 * The tests.
 * ------------------------------------------------------------------------- */

TEST(scenario_without_faults_is_clean) {
    const char *base = tmp_path("f");
    arm.call = -1;
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(run_child(base, 0, false));
    CHECK_INT(wait_exit(pid), ==, 3);
}

/* One test per call: every use fails in turn with the call's errno (see CALLS).  A
 * failing stat or getrlimit is absorbed by design (see fault_reported). */
TEST(socket_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_socket, call_errno[CALL_socket], false);
}

TEST(bind_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_bind, call_errno[CALL_bind], false);
}

TEST(listen_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_listen, call_errno[CALL_listen], false);
}

TEST(accept4_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_accept4, call_errno[CALL_accept4], false);
}

TEST(connect_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_connect, call_errno[CALL_connect], false);
}

TEST(sendmsg_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_sendmsg, call_errno[CALL_sendmsg], false);
}

TEST(recvmsg_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_recvmsg, call_errno[CALL_recvmsg], false);
}

TEST(poll_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_poll, call_errno[CALL_poll], false);
}

TEST(malloc_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_malloc, call_errno[CALL_malloc], false);
}

TEST(calloc_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_calloc, call_errno[CALL_calloc], false);
}

TEST(event_new_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_event_new, call_errno[CALL_event_new], false);
}

TEST(event_add_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_event_add, call_errno[CALL_event_add], false);
}

TEST(getsockopt_failure_at_each_use_is_refuses_the_peer_cleanly) {
    sweep(CALL_getsockopt, call_errno[CALL_getsockopt], false);
}

TEST(setsockopt_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_setsockopt, call_errno[CALL_setsockopt], false);
}

TEST(chmod_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_chmod, call_errno[CALL_chmod], false);
}

TEST(open_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_open, call_errno[CALL_open], false);
}

TEST(flock_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_flock, call_errno[CALL_flock], false);
}

TEST(stat_failure_at_each_use_is_absorbed_cleanly) {
    sweep(CALL_stat, call_errno[CALL_stat], false);
}

TEST(lstat_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_lstat, call_errno[CALL_lstat], false);
}

TEST(unlink_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_unlink, call_errno[CALL_unlink], false);
}

TEST(opendir_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_opendir, call_errno[CALL_opendir], false);
}

TEST(getrlimit_failure_at_each_use_is_absorbed_cleanly) {
    sweep(CALL_getrlimit, call_errno[CALL_getrlimit], false);
}

TEST(fcntl_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_fcntl, call_errno[CALL_fcntl], false);
}

TEST(getsockname_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_getsockname, call_errno[CALL_getsockname], false);
}

TEST(getaddrinfo_failure_at_each_use_is_reported_cleanly) {
    sweep(CALL_getaddrinfo, call_errno[CALL_getaddrinfo], false);
}

/* Out of descriptors on accept, the server pauses and resumes; other accept
 * errors are reported with no pause. */
TEST(accept4_eperm_at_each_use_is_reported_cleanly) {
    sweep(CALL_accept4, EPERM, false);
}

/* Out of descriptors at the first accept, the server pauses accepting: each
 * event_add after that (the resume timer's, then the accept event's) fails in
 * turn, and the server must still report it and come back to serve. */
TEST(event_add_failure_while_accept_is_paused_is_reported_and_recovered) {
    sweep_with(CALL_event_add, ENOMEM, false, (struct fault){CALL_accept4, 1, EMFILE}, false);
}

/* With every client's first connect finding the backlog full, the clients
 * wait (the async one on a retry timer, the sync one in a blocking connect
 * bounded by SO_SNDTIMEO) and every exchange still succeeds; each call of
 * those waiting paths then fails in turn. */
TEST(full_backlog_at_every_client_connect_is_waited_out_transparently) {
    const char *base = tmp_path("f");
    arm.call = -1;
    backlog_full = true;
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(run_child(base, 0, false));
    CHECK_INT(wait_exit(pid), ==, 3);
}

TEST(fcntl_failure_while_the_backlog_is_full_is_reported_cleanly) {
    sweep_with(CALL_fcntl, call_errno[CALL_fcntl], false, (struct fault){-1, 0, 0}, true);
}

TEST(setsockopt_failure_while_the_backlog_is_full_is_reported_cleanly) {
    sweep_with(CALL_setsockopt, call_errno[CALL_setsockopt], false, (struct fault){-1, 0, 0}, true);
}

TEST(connect_failure_while_the_backlog_is_full_is_reported_cleanly) {
    sweep_with(CALL_connect, call_errno[CALL_connect], false, (struct fault){-1, 0, 0}, true);
}

TEST(event_add_failure_while_the_backlog_is_full_is_reported_cleanly) {
    sweep_with(CALL_event_add, call_errno[CALL_event_add], false, (struct fault){-1, 0, 0}, true);
}

TEST(eintr_in_connect_while_the_backlog_is_full_is_retried_transparently) {
    sweep_with(CALL_connect, EINTR, true, (struct fault){-1, 0, 0}, true);
}

/* EINTR is never an error: each interrupted call is retried and the whole
 * scenario runs as if nothing happened. */
TEST(eintr_in_recvmsg_at_each_use_is_retried_transparently) {
    sweep(CALL_recvmsg, EINTR, true);
}

TEST(eintr_in_sendmsg_at_each_use_is_retried_transparently) {
    sweep(CALL_sendmsg, EINTR, true);
}

TEST(eintr_in_poll_at_each_use_is_retried_transparently) {
    sweep(CALL_poll, EINTR, true);
}

TEST(eintr_in_connect_at_each_use_is_retried_transparently) {
    sweep(CALL_connect, EINTR, true);
}

TEST(eintr_in_accept4_at_each_use_is_retried_transparently) {
    sweep(CALL_accept4, EINTR, true);
}

TEST(eintr_in_flock_at_each_use_is_retried_transparently) {
    sweep(CALL_flock, EINTR, true);
}

/* ---------------------------------------------------------------------------
 * Uses counted, none failed: what the library asks of the loop.
 * ------------------------------------------------------------------------- */

/* libevent's own epoll_ctl calls land here: this program defines the symbol,
 * and the dynamic linker binds libevent's reference to it. */
static atomic_long epoll_adds;
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
    if (op == EPOLL_CTL_ADD && atomic_load(&counting))
        atomic_fetch_add(&epoll_adds, 1);
    return (int)syscall(SYS_epoll_ctl, epfd, op, fd, ev);
}

struct answerer {
    int listener;
    int told; /* written once the answer is out */
    int delay_ms;
};

/* Answer one request with /dev/null after @delay_ms, say so, then wait for
 * the client to hang up. */
static int answer_one(void *arg) {
    struct answerer *a = arg;
    int c = accept(a->listener, NULL, NULL);
    uint8_t req[64];
    if (c < 0 || recv(c, req, sizeof(req), 0) <= 0)
        return 1;
    sleep_ms(a->delay_ms);
    int devnull = __real_open("/dev/null", O_RDONLY);
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    if (afdt_send_fd_msg(c, (const uint8_t *)"ok", 2, devnull, &err) < 0 ||
        write(a->told, "x", 1) != 1)
        return 2;
    while (recv(c, req, sizeof(req), 0) > 0) {
    }
    return 0;
}

static void on_answer(const uint8_t *resp, uint32_t len, int fd, void *ud) {
    CHECK_INT(len, ==, 2);
    CHECK_MEM(resp, "ok", 2);
    CHECK(fd >= 0);
    close(fd);
    *(int *)ud = 1;
}

static void on_answer_error(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    harness_fail(__FILE__, __LINE__, "exchange failed: %s %s %s", afdt_phase_str(e->phase),
                 afdt_operation_str(e->operation), e->message);
}

struct look_run {
    const char *path;
    struct timeval timeout;
    struct event_base *eb;
    struct queued_pair q;
    int told; /* the answerer's word that the answer is out, or -1 */
    int done;
};

static void look_start(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct look_run *r = arg;
    CHECK_INT(afdt_create_client(r->path, r->eb, (const uint8_t *)"hi", 2, on_answer,
                                 on_answer_error, &r->timeout, &r->done),
              ==, 0);
}

/* Other work the loop runs after the exchange starts: here, waiting until
 * the answer is out (when told is set). */
static void look_busy(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct look_run *r = arg;
    char x;
    if (r->told >= 0)
        CHECK_INT(read(r->told, &x, 1), ==, 1);
}

/* One async exchange, started from a callback with another one queued behind
 * it, against a server answering after @delay_ms.  Returns how many
 * descriptors the loop added to its epoll set meanwhile. */
static long async_exchange_counting_epoll_adds(int delay_ms, struct timeval timeout) {
    const char *path = tmp_path("look");
    int told[2];
    CHECK_INT(pipe(told), ==, 0);
    struct answerer a = {real_listener(path), told[1], delay_ms};
    pid_t pid = spawn(answer_one, &a);
    struct look_run r;
    memset(&r, 0, sizeof(r));
    r.path = path;
    r.timeout = timeout;
    r.eb = event_base_new();
    r.told = delay_ms ? -1 : told[0];
    atomic_store(&epoll_adds, 0);
    atomic_store(&counting, true);
    queue_pair(&r.q, r.eb, look_start, look_busy, &r);
    while (!r.done)
        CHECK_INT(event_base_loop(r.eb, EVLOOP_ONCE), >=, 0);
    atomic_store(&counting, false);
    long adds = atomic_load(&epoll_adds);
    event_base_free(r.eb);
    CHECK_INT(wait_exit(pid), ==, 0);
    close(told[0]);
    close(told[1]);
    close(a.listener);
    unlink(path);
    return adds;
}

/* Started while the loop has other callbacks to run, the async client looks
 * for its answer on the loop's next turn before registering its socket: an
 * answer already there costs no epoll add (nor remove); one not there yet is
 * waited for through epoll as usual. */
TEST(async_answer_already_there_is_taken_without_an_epoll_registration) {
    CHECK_INT(async_exchange_counting_epoll_adds(0, (struct timeval){5, 0}), ==, 0);
}

/* The look comes before the deadline check: even with no time at all, an
 * answer that is already there is taken. */
TEST(async_answer_already_there_is_taken_even_with_a_zero_timeout) {
    CHECK_INT(async_exchange_counting_epoll_adds(0, (struct timeval){0, 0}), ==, 0);
}

TEST(async_answer_not_there_yet_is_waited_for_through_epoll) {
    CHECK_INT(async_exchange_counting_epoll_adds(100, (struct timeval){5, 0}), ==, 1);
}

/* ---------------------------------------------------------------------------
 * Handlers that close the server at the worst moment.
 * ------------------------------------------------------------------------- */

static void *closing_handle;

/* Closes the server when told it cannot resume accepting. */
static void close_when_resume_fails(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    if (e->operation == AFDT_EVENT_ADD && closing_handle) {
        CHECK_INT(afdt_close_server(closing_handle), ==, 0);
        closing_handle = NULL;
    }
}

/* Out of descriptors with a client waiting, the server pauses accepting; the
 * timer that ends the pause cannot add the accept event back (the second
 * event_add: the first armed the timer) and tells the error handler, which
 * closes the server.  Nothing of the server may be touched after that (ASan
 * sees the use after free). */
TEST(error_handler_closing_the_server_when_accepting_cannot_resume) {
    struct event_base *eb = event_base_new();
    CHECK(eb != NULL);
    const char *path = tmp_path("resume");
    CHECK_INT(afdt_create_server(path, eb, s1_request, NULL, close_when_resume_fails,
                                 &closing_handle, NULL),
              >=, 0);
    int client = __real_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(client >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    CHECK_INT(__real_connect(client, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    also = (struct fault){CALL_accept4, 1, EMFILE};
    arm = (struct fault){CALL_event_add, 2, ENOMEM};
    atomic_store(&counting, true);
    struct timeval limit = {5, 0};
    event_base_loopexit(eb, &limit);
    CHECK_INT(event_base_dispatch(eb), ==, 0);
    atomic_store(&counting, false);
    CHECK(atomic_load(&fired));
    CHECK(closing_handle == NULL);
    close(client);
    event_base_free(eb);
}
