/* SPDX-License-Identifier: BSD-3-Clause */
/* A generation's output relay ("afdt relay N", started by the supervisor, not by users): copies
 * what the generation writes on its stdout and stderr to the supervisor's, each line prefixed
 * with the generation's number. It is a process of its own, in a process group of its own, so
 * it outlives the supervisor (killed or upgraded): the generation never writes into a pipe
 * nobody reads. It ends when every process of the generation has closed its output. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "relay.h"

/* One stream: what comes in on @in goes out on @out. */
struct stream {
    int in, out;
    bool at_line_start, out_broken;
};

/* Writes @len bytes of @buf out. A reader that went away (a closed terminal, a dead pipe) is no
 * reason to stop reading: the generation must never block on a full pipe. */
static void emit(struct stream *s, const char *buf, size_t len) {
    for (size_t off = 0; off < len && !s->out_broken;) {
        ssize_t w = write(s->out, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            s->out_broken = true;
        else
            off += (size_t)w;
    }
}

/* Copies one read's worth, prefixing each line; returns false at end of input. */
static bool pump(struct stream *s, const char *prefix) {
    /* Room for the longest prefix (a timestamp and "gen N: ") before each byte read. */
    enum { PREFIX_MAX = 96 };
    char in[4096], out[2 * sizeof(in)], stamp[64];
    ssize_t n;
    while ((n = read(s->in, in, sizeof(in))) < 0 && errno == EINTR) {
    }
    if (n <= 0)
        return false;
    size_t len = 0, plen = strlen(prefix);
    for (ssize_t i = 0; i < n; i++) {
        if (len + PREFIX_MAX + 1 > sizeof(out)) {
            emit(s, out, len);
            len = 0;
        }
        if (s->at_line_start) {
            size_t k = log_stamp(stamp, sizeof(stamp));
            memcpy(out + len, stamp, k);
            memcpy(out + len + k, prefix, plen);
            len += k + plen;
            s->at_line_start = false;
        }
        out[len++] = in[i];
        s->at_line_start = in[i] == '\n';
    }
    emit(s, out, len);
    return true;
}

int relay_main(int gen) {
    char prefix[32];
    struct stream st[2] = {{RELAY_STDOUT_FD, STDOUT_FILENO, true, false},
                           {RELAY_STDERR_FD, STDERR_FILENO, true, false}};
    struct pollfd pfd[2] = {{RELAY_STDOUT_FD, POLLIN, 0}, {RELAY_STDERR_FD, POLLIN, 0}};
    /* Signals meant for the supervisor or the generation are not for us: we end with the
     * generation's output. */
    static const int ignored[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE};
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        signal(ignored[i], SIG_IGN);
    snprintf(prefix, sizeof(prefix), "gen %d: ", gen);
    (void)prctl(PR_SET_NAME, "afdt-relay"); /* for ps, and for tests that find one orphaned */
    int open_streams = 2;
    while (open_streams > 0) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (!pump(&st[i], prefix)) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open_streams--;
            }
        }
    }
    return 0;
}
