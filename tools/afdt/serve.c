/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt serve: find out what is at the control path, acquire the sockets, then hand over to
 * the state machine (sup.c) until the supervisor stops. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "sup.h"

/* What is at the control path: 0 nothing (or a stale socket), 1 a supervisor to take over
 * from (its greeting in *p, its sockets in *pred), -1 something not ours (said why). */
static int probe_control(const char *path, struct predecessor *p, struct afdt_named_fd **pred,
                         uint32_t *npred) {
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
    char resp[AFDT_MSGLEN + 1], state[16];
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
    p->path = path;
    return 1;
}

int serve_main(const struct serve_args *a) {
    struct sup s;
    struct predecessor p;
    struct afdt_named_fd *pred = NULL;
    uint32_t npred = 0;

    log_as_supervisor();
    signal(SIGPIPE, SIG_IGN);
    sup_init(&s, a);
    int e = find_command(a->argv[0]);
    if (e) {
        say("cannot run %s: %s", a->argv[0],
            e == ENOENT && !strchr(a->argv[0], '/') ? "command not found" : strerror(e));
        return 1;
    }
    memset(&p, 0, sizeof(p));
    int kind = probe_control(a->control, &p, &pred, &npred);
    if (kind < 0)
        return 1;
    int r = listeners_acquire(a->ls, a->nls, kind == 1, pred, npred);
    afdt_named_fds_free(pred, npred, 1);
    if (r < 0)
        return 1;
    if (kind == 1)
        sup_follow(&s, &p);
    int rc = sup_run(&s);
    listeners_release(a->ls, a->nls, !sup_retired(&s));
    return rc;
}
