/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt restart, status, stop and exec: clients of a supervisor (or of any libafdt server). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "tool.h"

/* How often a waiting client asks again. */
#define POLL_MS 100

static const struct trust *trust;

void trust_set(const struct trust *t) {
    trust = t;
}

void trust_options(struct afdt_client_options *o, uint32_t *uids) {
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    uint32_t n = 0;
    uids[n++] = (uint32_t)geteuid();
    uids[n++] = 0;
    for (uint32_t i = 0; trust && i < trust->n && i < TOOL_TRUST_MAX; i++)
        uids[n++] = trust->uids[i];
    o->n_trusted_uids = n;
    o->trusted_uids = uids;
}

int exchange(const char *path, const char *request, char *resp, size_t size, int *fd,
             struct afdt_named_fd **named, uint32_t *nnamed, struct afdt_error_t *e) {
    uint8_t buf[AFDT_MSGLEN];
    uint32_t len = sizeof(buf), nfds = 1, uids[TOOL_TRUST_MAX + 2];
    int fds[1] = {-1};
    struct timeval tv = {TOOL_ASK_TIMEOUT_S, 0};
    struct afdt_client_options o;
    trust_options(&o, uids);
    if (fd)
        *fd = -1;
    /* Who answers is checked before anything is sent: another user's socket at our path is
     * asked nothing, and nothing it sends is taken. */
    if (afdt_sync_client_opts(path, (const uint8_t *)request, (uint32_t)strlen(request), buf, &len,
                              fds, &nfds, named, nnamed, &tv, &o, e) < 0)
        return -1;
    if (nfds && fd)
        *fd = fds[0]; /* now the caller's */
    else if (nfds)
        close(fds[0]);
    if (len > size - 1)
        len = (uint32_t)(size - 1);
    memcpy(resp, buf, len);
    resp[len] = '\0';
    return 0;
}

static bool is_gone(const struct afdt_error_t *e) {
    return e->operation == AFDT_CONNECT || e->operation == AFDT_PATHNAME;
}

int ask(const char *path, const char *request, char *resp, size_t size, int *fd,
        struct afdt_named_fd **named, uint32_t *nnamed) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    if (exchange(path, request, resp, size, fd, named, nnamed, &e) < 0) {
        int err = errno;
        if (e.operation == AFDT_PEER) {
            say("%s: %s (--trust-uid UID trusts another user)", path, e.message);
            return -1;
        }
        if (is_gone(&e)) {
            say("nothing answers at %s: %s", path, strerror(err));
            return -2;
        }
        if (e.operation == AFDT_TIMEOUT)
            say("%s did not answer within %d s", path, TOOL_ASK_TIMEOUT_S);
        else
            say("the exchange with %s failed: %s%s%s", path, err ? strerror(err) : "",
                err && e.message[0] ? ": " : "", e.message);
        return -1;
    }
    if (strcmp(resp, AFDT_REFUSED_RESPONSE) == 0) {
        say("%s refused us: it serves only the user who started it", path);
        if (fd && *fd >= 0)
            close(*fd);
        return -1;
    }
    return 0;
}

/* The exit status for a failed ask(). */
static int ask_failed(int r) {
    return r == -2 ? TOOL_EXIT_NO_SUPERVISOR : TOOL_EXIT_FAILED;
}

/* One line from @fd (the supervisor's end may take its time), without its newline; false at end
 * of file before a whole line. */
static bool read_line(int fd, char *buf, size_t size) {
    size_t n = 0;
    while (n < size - 1) {
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return true;
        }
        n++;
    }
    buf[n] = '\0';
    return false;
}

/* An older supervisor sends no descriptor with "started": ask for the outcome until it is known. */
static int poll_outcome(const char *control, int id, char *resp, size_t size) {
    char req[32];
    snprintf(req, sizeof(req), "result %d", id);
    for (;;) {
        sleep_ms_tool(POLL_MS);
        int r = ask(control, req, resp, size, NULL, NULL, NULL);
        if (r < 0) {
            say("lost the supervisor before restart %d finished", id);
            return ask_failed(r);
        }
        if (strcmp(resp, "pending") != 0)
            return 0;
    }
}

int cmd_restart(const char *control, bool wait) {
    char resp[AFDT_MSGLEN + 1], line[AFDT_MSGLEN + 64];
    int id, fd = -1, rc;
    int r = ask(control, "restart", resp, sizeof(resp), &fd, NULL, NULL);
    if (r < 0)
        return ask_failed(r);
    if (sscanf(resp, "started %d", &id) != 1) {
        if (fd >= 0)
            close(fd);
        if (strncmp(resp, "error ", 6) == 0) {
            say("no restart: %s", resp + 6);
            return strncmp(resp + 6, "busy", 4) == 0 || strncmp(resp + 6, "stopping", 8) == 0
                       ? TOOL_EXIT_BUSY
                       : TOOL_EXIT_FAILED;
        }
        say("unexpected answer from %s: \"%s\"", control, resp);
        return TOOL_EXIT_FAILED;
    }
    /* The supervisor answers at once, with a pipe it writes the outcome into when the new
     * generation is ready, fails or runs out of time ("ok TEXT" or "failed TEXT"), then, with
     * "gone", when the generation it replaced has exited. */
    if (fd < 0) {
        if (wait)
            say("this supervisor cannot tell when the old generation is gone: not waiting");
        if ((rc = poll_outcome(control, id, line, sizeof(line))) != 0)
            return rc;
    } else if (!read_line(fd, line, sizeof(line))) {
        say("the supervisor went away before restart %d finished", id);
        close(fd);
        return TOOL_EXIT_NO_SUPERVISOR;
    }
    rc = TOOL_EXIT_FAILED;
    if (strncmp(line, "ok ", 3) == 0) {
        printf("restart %d succeeded: %s\n", id, line + 3);
        rc = 0;
    } else if (strncmp(line, "failed ", 7) == 0) {
        printf("restart %d failed: %s\n", id, line + 7);
    } else {
        say("unexpected outcome from %s: \"%s\"", control, line);
    }
    if (rc == 0 && wait && fd >= 0) {
        fflush(stdout);
        if (read_line(fd, line, sizeof(line)) && strcmp(line, "gone") == 0) {
            printf("restart %d: the old generation is gone\n", id);
        } else {
            say("the supervisor went away before the old generation was gone");
            rc = TOOL_EXIT_NO_SUPERVISOR;
        }
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

int cmd_status(const char *control, bool json) {
    char resp[AFDT_MSGLEN + 1], buf[4096];
    int fd;
    int r = ask(control, json ? "status json" : "status", resp, sizeof(resp), &fd, NULL, NULL);
    if (r < 0)
        return ask_failed(r);
    if (strcmp(resp, "ok") != 0 || fd < 0) {
        say("no status from %s: \"%s\"", control, resp);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    /* The report is a memory file written by the supervisor: read it from the start. */
    off_t off = 0;
    ssize_t n;
    while ((n = pread(fd, buf, sizeof(buf), off)) > 0 || (n < 0 && errno == EINTR)) {
        if (n > 0) {
            fwrite(buf, 1, (size_t)n, stdout);
            off += n;
        }
    }
    close(fd);
    return fflush(stdout) == 0 && n == 0 ? 0 : 1;
}

int cmd_stop(const char *control) {
    char resp[AFDT_MSGLEN + 1];
    int pid;
    int r = ask(control, "stop", resp, sizeof(resp), NULL, NULL, NULL);
    if (r < 0)
        return ask_failed(r);
    if (sscanf(resp, "stopping pid=%d", &pid) != 1) {
        say("unexpected answer from %s: \"%s\"", control, resp);
        return 1;
    }
    /* It answers until its generations are gone, then closes the control channel and exits. */
    for (;;) {
        struct afdt_error_t e = AFDT_ERROR_T_INIT;
        int other;
        sleep_ms_tool(POLL_MS);
        if (exchange(control, "hello", resp, sizeof(resp), NULL, NULL, NULL, &e) < 0) {
            if (is_gone(&e))
                break;
            continue; /* busy, or between two states: ask again */
        }
        if (sscanf(resp, TOOL_PROTOCOL " pid=%d", &other) == 1 && other != pid)
            break; /* another supervisor has the path now */
    }
    printf("supervisor %d stopped\n", pid);
    return 0;
}

int cmd_exec(const char *from, const char *request, const char *const *names, uint32_t nnames,
             char **argv) {
    char resp[AFDT_MSGLEN + 1], list[1024] = "";
    struct afdt_named_fd *set = NULL;
    uint32_t n = 0, k = 0;
    int fd = -1, rc = 1;
    int *sel = NULL, *scratch = NULL;
    char *fdnames = NULL;

    int e = find_command(argv[0]);
    if (e) {
        say("cannot run %s: %s", argv[0],
            e == ENOENT && !strchr(argv[0], '/') ? "command not found" : strerror(e));
        return 127;
    }
    if (ask(from, request, resp, sizeof(resp), &fd, &set, &n) < 0)
        return 1;
    if (set == NULL) {
        say("%s answered \"%.60s\" with %s, not a named set of sockets", from, resp,
            fd >= 0 ? "one descriptor" : "no descriptor");
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                 set[i].name);
    uint32_t want = nnames ? nnames : n;
    sel = calloc(want + 1, sizeof(int));
    scratch = calloc(want + 1, sizeof(int));
    fdnames = calloc(want + 1, AFDT_NAME_MAX + 1);
    if (!sel || !scratch || !fdnames) {
        say("out of memory");
        goto out;
    }
    for (k = 0; k < want; k++) {
        const char *name = nnames ? names[k] : set[k].name;
        sel[k] = afdt_named_fds_find(set, n, name);
        if (sel[k] < 0) {
            say("%s has no socket named '%s' (it has: %s)", from, name, n ? list : "none");
            goto out;
        }
        strcat(strcat(fdnames, k ? ":" : ""), name);
    }
    if (k == 0) {
        say("%s sent no sockets", from);
        goto out;
    }
    if (place_listen_fds(sel, scratch, k) < 0 || set_listen_env(k, fdnames) < 0) {
        say("cannot pass the sockets on: %s", strerror(errno));
        goto out;
    }
    execvp(argv[0], argv);
    say("cannot run %s: %s", argv[0], strerror(errno));
    rc = 127;
out:
    if (fd >= 0)
        close(fd);
    afdt_named_fds_free(set, n, 1);
    free(sel);
    free(scratch);
    free(fdnames);
    return rc;
}
