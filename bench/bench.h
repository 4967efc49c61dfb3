/* SPDX-License-Identifier: BSD-3-Clause */
/* Declarations shared by the parts of afdt-bench. */
#ifndef AFDT_BENCH_H
#define AFDT_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What every exchange asks for and what every server answers, the same for
 * the hand-written floor and for the library, so both move the same bytes. */
#define BENCH_REQUEST "fd"
#define BENCH_REQUEST_LEN 2u
#define BENCH_RESPONSE "ok"
#define BENCH_RESPONSE_LEN 2u

/* Descriptors handed over by the bulk mode. */
#define BULK_FDS 10000u
/* Silent connections held open by the idle mode. */
#define IDLE_CONNS 10000u

/* How a run is shaped, from the command line. */
struct bench_opts {
    unsigned conc[16]; /* concurrency sweep */
    unsigned nconc;
    unsigned reps;
    double dur_s;    /* measured time of one sweep point */
    double warmup_s; /* time before it whose exchanges are not counted */
    int place;       /* where the server and the clients run: one of enum place */
};

enum place {
    PLACE_ANY,   /* wherever the scheduler puts them */
    PLACE_SAME,  /* server and clients on the first CPU this process may use */
    PLACE_APART, /* server on the first, clients on the second */
};

/* --- util.c: clocks, samples, processes ------------------------------------ */

/* Monotonic clock in nanoseconds. */
int64_t now_ns(void);

/* Sleep for @ms milliseconds. */
void sleep_ms(unsigned ms);

/* A growing array of latencies in nanoseconds. */
struct lat {
    int64_t *v;
    size_t n, cap;
};

/* Append one latency; exits on out of memory (a benchmark has no way on). */
void lat_add(struct lat *l, int64_t ns);
/* Move all of @src into @dst and empty @src. */
void lat_merge(struct lat *dst, struct lat *src);
/* Sort, then the @q quantile (0..1) in microseconds by nearest rank; 0 when empty. */
double lat_quantile_us(struct lat *l, double q);
void lat_free(struct lat *l);

/* Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit. */
unsigned long raise_nofile(void);

/* A fresh socket path in the run's private directory (fixed at the first call). */
const char *sock_path(char *buf, size_t size, const char *tag);
/* Remove the run's private directory (it must be empty). */
void sock_dir_remove(void);

/* Start the server @kind (see server_main) at @path in a fresh process: this
 * program run again, so the server's memory figures owe nothing to the
 * parent's.  Waits until it listens; returns its pid, or -1. */
pid_t spawn_server(const char *kind, const char *path);
/* The server side of "afdt-bench server KIND PATH READY_FD": listen at @path,
 * write one byte to @ready_fd, serve until killed.  Returns only for an
 * unknown @kind. */
void server_main(const char *kind, const char *path, int ready_fd);
/* SIGTERM the server and reap it. */
void stop_server(pid_t pid);

/* A field of /proc/@pid/status in KiB ("VmRSS", "VmHWM"), or -1. */
long proc_status_kib(pid_t pid, const char *field);
/* Open descriptors of @pid, or -1. */
long proc_fd_count(pid_t pid);

/* This thread's CPU time in nanoseconds. */
int64_t thread_cpu_ns(void);

/* Watches a server from a thread until stopped: its peak descriptor count,
 * and its CPU time over the measured window [start_ns, end_ns). */
struct fd_sampler {
    pid_t pid;
    int64_t start_ns, end_ns;
    atomic_int stop;
    long peak;
    int64_t t0, t1, cpu0, cpu1; /* first and last sample in the window */
    pthread_t thread;
};
void fd_sampler_start(struct fd_sampler *s, pid_t pid);
/* The server's CPU seconds per second of the window, or -1 if not sampled. */
double fd_sampler_cpu_load(const struct fd_sampler *s);
/* Stop sampling; returns the peak seen. */
long fd_sampler_stop(struct fd_sampler *s);

/* Fail the whole run: print @what with errno's text and exit 1. */
_Noreturn void die(const char *what);

/* --- floor.c: hand-written code, no library -------------------------------- */

/* Results of one measured sweep point, as printed. */
struct point {
    uint64_t exchanges; /* completed in the measured window */
    uint64_t errors;
    double per_s;
    double p50_us, p99_us, p999_us;
    double client_cpu_us; /* client CPU per exchange */
    double server_cpu_us; /* server CPU per exchange */
    long hwm_kib;         /* server's VmHWM at the end */
    long peak_fds;        /* server's open descriptors, at most, sampled */
};

/* floor (a): one descriptor ping-ponged over a socketpair between two processes. */
void run_pingpong(const struct bench_opts *o, unsigned rep);

/* floor (b): one connection per exchange against a blocking accept/read/sendmsg server. */
void run_floor_point(const struct bench_opts *o, unsigned conc, struct point *p);

/* Blocking accept, read, sendmsg, close; never returns. */
_Noreturn void floor_server(const char *path, int ready_fd);

/* One blocking exchange with the hand-written protocol code; returns 0 or -1. */
int floor_exchange(const char *path);

/* Clients of one sweep point: run exchanges against @path until @end, count
 * those that end in [@start, @end), and fill in @p's client figures. */
typedef void (*clients_fn)(unsigned conc, const char *path, int64_t start, int64_t end,
                           struct point *p);

/* One sweep point: a fresh server of @kind (see server_main), @clients
 * against it, and the server's figures. */
void run_point(const struct bench_opts *o, unsigned conc, const char *kind, clients_fn clients,
               struct point *p);

/* @conc threads calling @exchange(@path) in a loop; a clients_fn body. */
void run_threads(unsigned conc, const char *path, int64_t start, int64_t end,
                 int (*exchange)(const char *path), struct point *p);

/* Fill in @p's per_s and quantiles from @lat; client CPU from @cpu_ns over @cpu_n exchanges. */
void point_stats(struct point *p, struct lat *lat, int64_t start, int64_t end, int64_t cpu_ns,
                 uint64_t cpu_n);

/* --- modes.c: the library's sync and async clients against its server -------- */

/* The library's server answering every request with /dev/null; never returns. */
_Noreturn void lib_server(const char *path, int ready_fd);

void run_sync_point(const struct bench_opts *o, unsigned conc, struct point *p);
void run_async_point(const struct bench_opts *o, unsigned conc, struct point *p);

/* --- bulk.c: many descriptors, many idle connections ----------------------- */

/* The servers of the bulk and idle modes; they never return. */
_Noreturn void compat_server(const char *path, int ready_fd);
_Noreturn void named_server(const char *path, int ready_fd);
_Noreturn void idle_server(const char *path, int ready_fd);

void run_bulk(unsigned rep);
void run_idle(unsigned rep);

#endif /* AFDT_BENCH_H */
