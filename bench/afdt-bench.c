/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt-bench: measure libafdt against hand-written descriptor passing; prints TSV lines. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

_Noreturn static void usage(void) {
    fprintf(stderr,
            "usage: afdt-bench MODE [--conc N,N,...] [--reps N] [--dur SECONDS] "
            "[--warmup SECONDS] [--place same|apart]\n"
            "modes:\n"
            "  floor   hand-written code, no library: (a) ping-pong of one descriptor on a\n"
            "          socketpair, (b) one connection per exchange, over the concurrency sweep\n"
            "  sync    afdt_sync_client against afdt_create_server, over the sweep\n"
            "  async   afdt_create_client from a libevent loop against afdt_create_server\n"
            "  sweep   floor (b), sync and async interleaved at each point (ratios are fair)\n"
            "  bulk    10,000 descriptors: exchanges, multi-descriptor frames, a named set\n"
            "  idle    the server's memory for 10,000 idle connections\n"
            "  all     floor (a), sweep, bulk and idle\n"
            "--place pins the sweep's server to the first CPU it may use and its clients to\n"
            "that one too (same) or to the second (apart) instead of leaving them to the\n"
            "scheduler\n");
    exit(2);
}

static void parse_conc(const char *s, struct bench_opts *o) {
    o->nconc = 0;
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0 || v > 4096 || o->nconc == sizeof(o->conc) / sizeof(o->conc[0]))
            usage();
        o->conc[o->nconc++] = (unsigned)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            usage();
    }
}

static int parse_place(const char *s) {
    if (strcmp(s, "same") == 0)
        return PLACE_SAME;
    if (strcmp(s, "apart") == 0)
        return PLACE_APART;
    usage();
}

static void parse_args(int argc, char **argv, struct bench_opts *o) {
    static const unsigned conc[] = {1, 4, 16, 64, 256};
    memcpy(o->conc, conc, sizeof(conc));
    o->nconc = sizeof(conc) / sizeof(conc[0]);
    o->reps = 3;
    o->dur_s = 0.6;
    o->warmup_s = 0.1;
    o->place = PLACE_ANY;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--conc") == 0)
            parse_conc(argv[++i], o);
        else if (strcmp(argv[i], "--reps") == 0)
            o->reps = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dur") == 0)
            o->dur_s = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--warmup") == 0)
            o->warmup_s = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--place") == 0)
            o->place = parse_place(argv[++i]);
        else
            usage();
    }
    if (o->reps == 0 || o->dur_s <= 0 || o->warmup_s < 0)
        usage();
}

/* A placed point's mode is prefixed with its placement: "same/sync". */
static void print_point(const struct bench_opts *o, const char *mode, unsigned conc, unsigned rep,
                        const struct point *p) {
    static const char *const prefix[] = {"", "same/", "apart/"};
    printf("point\t%s%s\t%u\t%u\t%llu\t%llu\t%.0f\t%.2f\t%.2f\t%.2f\t%ld\t%ld\t%.2f\t%.2f\n",
           prefix[o->place], mode, conc, rep, (unsigned long long)p->exchanges,
           (unsigned long long)p->errors, p->per_s, p->p50_us, p->p99_us, p->p999_us, p->hwm_kib,
           p->peak_fds, p->client_cpu_us, p->server_cpu_us);
    fflush(stdout);
}

enum { FLOOR = 1, SYNC = 2, ASYNC = 4 };

/* Every repetition visits every concurrency, and at each the chosen modes
 * run back to back, so slow drift on a shared machine hits them alike. */
static void sweep(const struct bench_opts *o, int modes) {
    for (unsigned rep = 0; rep < o->reps; rep++) {
        for (unsigned i = 0; i < o->nconc; i++) {
            struct point p;
            if (modes & FLOOR) {
                run_floor_point(o, o->conc[i], &p);
                print_point(o, "floor", o->conc[i], rep, &p);
            }
            if (modes & SYNC) {
                run_sync_point(o, o->conc[i], &p);
                print_point(o, "sync", o->conc[i], rep, &p);
            }
            if (modes & ASYNC) {
                run_async_point(o, o->conc[i], &p);
                print_point(o, "async", o->conc[i], rep, &p);
            }
        }
    }
}

void server_main(const char *kind, const char *path, int ready_fd) {
    static const struct {
        const char *kind;
        void (*fn)(const char *path, int ready_fd);
    } servers[] = {{"floor", floor_server},
                   {"afdt", lib_server},
                   {"compat", compat_server},
                   {"named", named_server},
                   {"idle", idle_server}};
    for (size_t i = 0; i < sizeof(servers) / sizeof(servers[0]); i++)
        if (strcmp(kind, servers[i].kind) == 0)
            servers[i].fn(path, ready_fd);
}

int main(int argc, char **argv) {
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    if (strcmp(mode, "server") == 0 && argc == 5) {
        signal(SIGPIPE, SIG_IGN);
        server_main(argv[2], argv[3], atoi(argv[4]));
        fprintf(stderr, "afdt-bench: no server %s\n", argv[2]);
        return 2;
    }
    static const char *const modes[] = {"floor", "sync", "async", "sweep", "bulk", "idle", "all"};
    size_t m = 0;
    while (m < sizeof(modes) / sizeof(modes[0]) && strcmp(mode, modes[m]) != 0)
        m++;
    if (m == sizeof(modes) / sizeof(modes[0]))
        usage();
    struct bench_opts o;
    parse_args(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    unsigned long nofile = raise_nofile();

    printf("# afdt-bench %s: reps %u, %.2f s per point after %.2f s warm-up, RLIMIT_NOFILE %lu\n",
           mode, o.reps, o.dur_s, o.warmup_s, nofile);
    printf("# pingpong rep transfers errors transfers_per_s rtt_p50_us rtt_p99_us rtt_p999_us\n");
    printf("# point mode clients rep exchanges errors per_s p50_us p99_us p999_us "
           "server_hwm_kib server_peak_fds client_cpu_us server_cpu_us\n");
    printf("# bulk method rep ms descriptors messages\n");
    printf("# idle rep conns base_rss_kib after_rss_kib diff_mib\n");
    fflush(stdout);

    int all = strcmp(mode, "all") == 0;
    if (all || strcmp(mode, "floor") == 0) {
        for (unsigned rep = 0; rep < o.reps; rep++)
            run_pingpong(&o, rep);
        fflush(stdout);
    }
    if (strcmp(mode, "floor") == 0)
        sweep(&o, FLOOR);
    else if (strcmp(mode, "sync") == 0)
        sweep(&o, SYNC);
    else if (strcmp(mode, "async") == 0)
        sweep(&o, ASYNC);
    else if (all || strcmp(mode, "sweep") == 0)
        sweep(&o, FLOOR | SYNC | ASYNC);
    if (all || strcmp(mode, "bulk") == 0) {
        for (unsigned rep = 0; rep < o.reps; rep++) {
            run_bulk(rep);
            fflush(stdout);
        }
    }
    if (all || strcmp(mode, "idle") == 0) {
        for (unsigned rep = 0; rep < o.reps; rep++) {
            run_idle(rep);
            fflush(stdout);
        }
    }
    sock_dir_remove();
    return 0;
}
