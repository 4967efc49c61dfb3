/* SPDX-License-Identifier: BSD-3-Clause */
/* Error values, their names, and the one helper that makes a failure public. */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

AFDT_EXPORT const struct afdt_error_t AFDT_ERROR_T_INIT = {AFDT_NO_PHASE, AFDT_NO_OPERATION, ""};

AFDT_EXPORT const char *afdt_phase_str(enum afdt_phase phase) {
    switch (phase) {
    case AFDT_NO_PHASE: return "AFDT_NO_PHASE";
    case AFDT_CREATE_SERVER: return "AFDT_CREATE_SERVER";
    case AFDT_ACCEPT_CLIENT: return "AFDT_ACCEPT_CLIENT";
    case AFDT_HANDLE_REQUEST: return "AFDT_HANDLE_REQUEST";
    case AFDT_CREATE_CLIENT: return "AFDT_CREATE_CLIENT";
    case AFDT_HANDLE_RESPONSE: return "AFDT_HANDLE_RESPONSE";
    }
    return "UNKNOWN";
}

AFDT_EXPORT const char *afdt_operation_str(enum afdt_operation operation) {
    switch (operation) {
    case AFDT_NO_OPERATION: return "AFDT_NO_OPERATION";
    case AFDT_MALLOC: return "AFDT_MALLOC";
    case AFDT_SOCKET: return "AFDT_SOCKET";
    case AFDT_PATHNAME: return "AFDT_PATHNAME";
    case AFDT_BIND: return "AFDT_BIND";
    case AFDT_LISTEN: return "AFDT_LISTEN";
    case AFDT_ACCEPT: return "AFDT_ACCEPT";
    case AFDT_CONNECT: return "AFDT_CONNECT";
    case AFDT_FORMAT: return "AFDT_FORMAT";
    case AFDT_SENDMSG: return "AFDT_SENDMSG";
    case AFDT_RECVMSG: return "AFDT_RECVMSG";
    case AFDT_EVENT_BASE_SET: return "AFDT_EVENT_BASE_SET";
    case AFDT_EVENT_ADD: return "AFDT_EVENT_ADD";
    case AFDT_POLL: return "AFDT_POLL";
    case AFDT_TIMEOUT: return "AFDT_TIMEOUT";
    case AFDT_PEER: return "AFDT_PEER";
    }
    return "UNKNOWN";
}

int afdt__fail(struct afdt__fail *f, enum afdt_operation op, int errnum, const char *msg) {
    f->op = op;
    f->errnum = errnum;
    f->msg = msg ? msg : "";
    return -1;
}

int afdt__report(struct afdt_error_t *err, enum afdt_phase phase, const struct afdt__fail *f) {
    if (err) {
        if (phase != AFDT__KEEP_PHASE)
            err->phase = phase;
        err->operation = f->op;
        err->message = f->msg ? f->msg : "";
    }
    errno = f->errnum;
    return -1;
}

void afdt__close(int fd) {
    int saved = errno;
    if (fd >= 0)
        (void)close(fd);
    errno = saved;
}

int64_t afdt__now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Far enough to mean "never" (about 146,000 years), small enough that adding
 * it to the clock cannot overflow. */
#define FOREVER_US ((int64_t)1 << 62)

int64_t afdt__deadline(const struct timeval *tv) {
    if (tv == NULL)
        return -1;
    /* Saturate instead of overflowing: any total past FOREVER_US is forever. */
    int64_t sec = (int64_t)tv->tv_sec, usec = (int64_t)tv->tv_usec;
    int64_t us;
    if (sec > FOREVER_US / 1000000 || usec > FOREVER_US)
        us = FOREVER_US;
    else if (sec < -(FOREVER_US / 1000000) || usec < -FOREVER_US)
        us = 0;
    else
        us = sec * 1000000 + usec;
    if (us < 0)
        us = 0;
    if (us > FOREVER_US)
        us = FOREVER_US;
    return afdt__now_us() + us;
}

int afdt__poll_until(int fd, short events, int64_t deadline_us) {
    for (;;) {
        int ms = -1;
        int64_t left = 1;
        if (deadline_us >= 0) {
            left = deadline_us - afdt__now_us();
            /* Round up so a short remainder waits instead of spinning; at
             * the deadline one last look (0 ms) still sees a ready socket. */
            int64_t left_ms = left > 0 ? (left + 999) / 1000 : 0;
            ms = left_ms > 0x7fffffff ? 0x7fffffff : (int)left_ms;
        }
        struct pollfd p = {.fd = fd, .events = events, .revents = 0};
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r == 0 && left <= 0)
            return 0;
    }
}
