/* SPDX-License-Identifier: BSD-3-Clause */
/* What the afdt(1) test programs share: running the tool, reading its log, a supervisor under
 * test with the socket-activated test server, and asking that server over TCP, UDP and Unix. */
#ifndef AFDT_TOOL_FIXTURE_H
#define AFDT_TOOL_FIXTURE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "harness.h"

/* Generous, for sanitizer builds; a healthy run never comes near. */
#define WAIT_MS 15000

/* A supervisor under test, with its control path, log and behaviour file. */
struct sv {
    pid_t pid;
    char ctl[128], log[128], behaviour[128];
};

/* Orphans come to the test process, so "no process left behind" can be checked. */
void become_subreaper(void);
/* Wait for @pid at most @ms; past that it is killed and -1 returned. */
int reap(pid_t pid, int ms);
/* Every process started here has ended and been reaped, and none was orphaned to us. */
void check_no_children(void);
bool exists(const char *path);
void write_file(const char *path, const char *text);
void read_file(const char *path, char *buf, size_t size);
/* Start the tool with @argv (argv[0] is ignored); its output goes to @log, or to @out_fd. */
pid_t start_tool(const char *log, int out_fd, const char *const *argv);
/* Run the tool to the end; its output (stdout and stderr) in @out. Returns its status. */
int run_tool_v(char *out, size_t size, const char *const *argv);
/* Whether @log contains @text within @ms. */
bool wait_log(const char *log, const char *text, int ms);
void sv_init(struct sv *s);
/* "afdt serve --control CTL OPTS... -- activated_server --behaviour-file B", logged. */
pid_t sv_spawn(struct sv *s, const char *const *opts);
/* "afdt stop", and the supervisor must exit 0 with its control path gone. */
void sv_stop(struct sv *s);
/* The port of the socket named @name, from "afdt status --json". */
int sv_port(struct sv *s, const char *name);
/* One line exchange with the test server over a new connection; @sa is its address. Returns 0,
 * -2 when the connection is refused, or -1. */
int ask_stream(int family, const struct sockaddr *sa, socklen_t len, char *buf, size_t size);
struct sockaddr_in loopback(int port);
/* The generation that answers on 127.0.0.1:@port, or -1. */
int tcp_gen(int port);
int unix_ask(const char *path, char *buf, size_t size);
int udp_ask(int port, char *buf, size_t size);
/* How many times @text is in the file @log. */
int count_in_log(const char *log, const char *text);
/* The NOTIFY_SOCKET of process @pid, from its environment (the test fails without one). */
void notify_socket_of(pid_t pid, char *buf, size_t size);

/* A load: a process sending requests to 127.0.0.1:PORT, one new connection each, counting
 * answers and failures, until load_stop(). */
struct load {
    pid_t pid;
    int stop_fd, result_fd;
    unsigned long refused; /* of the failed requests, those refused at connect (load_stop) */
};
void load_start(struct load *l, int port);
/* Stop the load and collect its counts (a load that does not report fails the test). */
void load_stop(struct load *l, unsigned long *ok, unsigned long *failed);

#define RUN_TOOL(out, ...)                                                                         \
    run_tool_v(out, sizeof(out), (const char *const[]){"afdt", __VA_ARGS__, NULL})
#define SV_START(s, ...)                                                                           \
    do {                                                                                           \
        (s)->pid = sv_spawn((s), (const char *const[]){__VA_ARGS__, NULL});                        \
        CHECK(wait_log((s)->log, "control channel at", WAIT_MS));                                  \
        CHECK(wait_log((s)->log, "is ready", WAIT_MS));                                            \
    } while (0)

#endif
