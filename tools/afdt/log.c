/* SPDX-License-Identifier: BSD-3-Clause */
/* The tool's messages and clocks. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static char tag[32] = "afdt";
static bool stamped;

/* Whether stderr is the journal's stream (systemd sets JOURNAL_STREAM to its "DEV:INODE"). */
static bool stderr_is_journal(void) {
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_as_supervisor(void) {
    snprintf(tag, sizeof(tag), "afdt[%d]", (int)getpid());
    stamped = !stderr_is_journal();
}

size_t log_stamp(char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    if (stamped) {
        struct timeval tv;
        struct tm tm;
        gettimeofday(&tv, NULL);
        localtime_r(&tv.tv_sec, &tm);
        n = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
        n += (size_t)snprintf(buf + n, size - n, ".%03d ", (int)(tv.tv_usec / 1000));
    }
    return n;
}

static void say_v(const char *fmt, va_list ap, const char *suffix) {
    char line[1024];
    size_t n = log_stamp(line, sizeof(line));
    n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", tag);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    size_t len = n + (m < 0 ? 0 : (size_t)m);
    if (len < sizeof(line) - 1)
        len += (size_t)snprintf(line + len, sizeof(line) - len - 1, "%s", suffix);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line, so lines from several supervisors sharing a terminal never mix. */
    while (write(STDERR_FILENO, line, len) < 0 && errno == EINTR) {
    }
}

void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    say_v(fmt, ap, "");
    va_end(ap);
}

void say_limited(struct say_limit *l, const char *fmt, ...) {
    int64_t now = now_ms();
    if (l->window_end_ms && now < l->window_end_ms) {
        l->held++;
        return;
    }
    char more[96] = "";
    if (l->held)
        snprintf(more, sizeof(more), " (and %u more like it since the last such line)", l->held);
    l->held = 0;
    l->window_end_ms = now + SAY_LIMIT_INTERVAL_MS;
    va_list ap;
    va_start(ap, fmt);
    say_v(fmt, ap, more);
    va_end(ap);
}

const char *resource_hint(int err) {
    switch (err) {
    case EMFILE: return " (raise the descriptor limit: ulimit -n, or LimitNOFILE= under systemd)";
    case ENFILE: return " (the system is out of descriptors: raise fs.file-max)";
    case ENOMEM: return " (out of memory)";
    case E2BIG:
        return " (the environment and arguments are too big for exec: use shorter --listen "
               "names or fewer sockets)";
    case EAGAIN: return " (a process limit: check ulimit -u, or TasksMax= under systemd)";
    default: return "";
    }
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms_tool(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

void format_age(int64_t ms, char *buf, size_t size) {
    int64_t s = ms / 1000;
    if (ms < 10000)
        snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
    else if (s < 60)
        snprintf(buf, size, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(buf, size, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(buf, size, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(buf, size, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}
