/* SPDX-License-Identifier: BSD-3-Clause */
/* The library's sync and async clients against its server, one sweep point at a time. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>

#include "afdt.h"
#include "bench.h"

/* Every exchange gets this long; a run that needs it has gone wrong. */
static const struct timeval exchange_timeout = {10, 0};

static int answer_devnull(const uint8_t *request, uint32_t request_length, uint8_t *response,
                          uint32_t *response_length, void *userdata) {
    (void)request;
    (void)request_length;
    memcpy(response, BENCH_RESPONSE, BENCH_RESPONSE_LEN);
    *response_length = BENCH_RESPONSE_LEN;
    return *(const int *)userdata; /* the library does not close it */
}

static void quiet_error(const struct afdt_error_t *err, void *userdata) {
    (void)err;
    (void)userdata;
}

void lib_server(const char *path, int ready_fd) {
    struct event_base *eb = event_base_new();
    if (eb == NULL)
        die("event_base_new");
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0)
        die("open /dev/null");
    if (afdt_create_server(path, eb, answer_devnull, NULL, quiet_error, NULL, &devnull) < 0)
        die("afdt_create_server");
    if (write(ready_fd, "r", 1) != 1)
        die("write");
    close(ready_fd);
    event_base_dispatch(eb);
    _exit(0);
}

static int sync_exchange(const char *path) {
    uint8_t resp[AFDT_MSGLEN];
    uint32_t len = sizeof(resp);
    int fd = -1;
    if (afdt_sync_client(path, (const uint8_t *)BENCH_REQUEST, BENCH_REQUEST_LEN, resp, &len, &fd,
                         &exchange_timeout, NULL) < 0)
        return -1;
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static void sync_clients(unsigned conc, const char *path, int64_t start, int64_t end,
                         struct point *p) {
    run_threads(conc, path, start, end, sync_exchange, p);
}

void run_sync_point(const struct bench_opts *o, unsigned conc, struct point *p) {
    run_point(o, conc, "afdt", sync_clients, p);
}

/* --- async: one loop keeping @conc exchanges in flight ---------------------- */

struct async_run {
    struct event_base *eb;
    const char *path;
    int64_t start, end;
    struct lat lat;
    uint64_t errors;
    int64_t cpu0; /* this thread's CPU time at the first exchange counted */
    uint64_t cpu_n;
};

struct slot {
    struct async_run *run;
    int64_t t0;
};

static void issue(struct slot *s);

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    issue(arg);
}

/* One exchange ended: count it if it ended in the window, then start the
 * next one while there is time. */
static void slot_done(struct slot *s, int ok) {
    struct async_run *run = s->run;
    int64_t t1 = now_ns();
    if (run->cpu0 >= 0)
        run->cpu_n++;
    if (t1 >= run->start && t1 < run->end) {
        if (ok)
            lat_add(&run->lat, t1 - s->t0);
        else
            run->errors++;
        if (run->cpu0 < 0)
            run->cpu0 = thread_cpu_ns();
    }
    if (t1 >= run->end)
        return;
    if (ok) {
        issue(s);
    } else {
        /* Not from inside the failing call: it may still be on the stack. */
        struct timeval tv = {0, 1000};
        event_base_once(run->eb, -1, EV_TIMEOUT, on_retry, s, &tv);
    }
}

static void on_response(const uint8_t *response, uint32_t response_length, int received_fd,
                        void *userdata) {
    (void)response;
    (void)response_length;
    if (received_fd >= 0)
        close(received_fd);
    slot_done(userdata, received_fd >= 0);
}

static void on_error(const struct afdt_error_t *err, void *userdata) {
    (void)err;
    slot_done(userdata, 0);
}

static void issue(struct slot *s) {
    s->t0 = now_ns();
    afdt_create_client(s->run->path, s->run->eb, (const uint8_t *)BENCH_REQUEST, BENCH_REQUEST_LEN,
                       on_response, on_error, &exchange_timeout, s);
}

static void async_clients(unsigned conc, const char *path, int64_t start, int64_t end,
                          struct point *p) {
    struct async_run run = {.path = path, .start = start, .end = end, .cpu0 = -1};
    run.eb = event_base_new();
    struct slot *slots = calloc(conc, sizeof(*slots));
    if (run.eb == NULL || slots == NULL)
        die("event_base_new");
    for (unsigned i = 0; i < conc; i++) {
        slots[i].run = &run;
        issue(&slots[i]);
    }
    /* Returns once the last exchange has ended and nothing is pending. */
    event_base_dispatch(run.eb);
    int64_t cpu = run.cpu0 >= 0 ? thread_cpu_ns() - run.cpu0 : 0;
    event_base_free(run.eb);
    free(slots);
    p->errors = run.errors;
    point_stats(p, &run.lat, start, end, cpu, run.cpu_n);
    lat_free(&run.lat);
}

void run_async_point(const struct bench_opts *o, unsigned conc, struct point *p) {
    run_point(o, conc, "afdt", async_clients, p);
}
