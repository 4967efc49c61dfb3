/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt(1): the command line, its checks, and the helpers every command uses. */
#include <errno.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "relay.h"
#include "spawn.h"
#include "tool.h"

#ifndef AFDT_TOOL_VERSION
#define AFDT_TOOL_VERSION "1.0.0"
#endif

static const char usage_text[] =
    "usage: afdt serve --control PATH --listen NAME=SPEC [--listen NAME=SPEC...]\n"
    "                  [--ready-timeout SECONDS] [--drain-timeout SECONDS]\n"
    "                  [--stop-signal SIG] [--convention systemd|nginx|einhorn]\n"
    "                  [--restart never|on-failure|always] [--user USER[:GROUP]]\n"
    "                  [--cgroup auto|no]\n"
    "                  [--control-mode MODE] [--adopt PID [--adopt-signal SIG]]\n"
    "                  [--trust-uid UID...] -- COMMAND [ARG...]\n"
    "       afdt restart --control PATH [--wait] [--trust-uid UID...]\n"
    "       afdt status  --control PATH [--json] [--trust-uid UID...]\n"
    "       afdt stop    --control PATH [--trust-uid UID...]\n"
    "       afdt exec    --from PATH [--name NAME...] [--request WORD] [--trust-uid UID...]\n"
    "                    -- COMMAND [ARG...]\n"
    "       afdt --help | --version\n"
    "\n"
    "SPEC is tcp:HOST:PORT, udp:HOST:PORT or unix:PATH (IPv6: tcp:[::1]:PORT;\n"
    "abstract: unix:@NAME).  A control PATH may be @NAME too.  COMMAND gets the sockets\n"
    "by systemd's socket-activation convention (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES)\n"
    "and may report READY=1 on NOTIFY_SOCKET.  Only sockets of our own uid, root or a\n"
    "--trust-uid are used.  See afdt(1) and SECURITY.md.\n";

__attribute__((noreturn, format(printf, 2, 3))) static void usage_error(const char *cmd,
                                                                        const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    say("%s%s%s", cmd ? cmd : "", cmd ? ": " : "", msg);
    fputs("Try 'afdt --help'.\n", stderr);
    exit(TOOL_EXIT_USAGE);
}

/* Walks one command's arguments: "--opt VALUE", "--opt=VALUE", flags, then "--" COMMAND. */
struct args {
    int argc;
    char **argv;
    int i;
    const char *cmd;
    char name[64];     /* the option being read, without any "=VALUE" */
    const char *value; /* its "=VALUE", or NULL */
};

/* Read the next argument.  Returns 1 for an option (in a->name), 0 at the start of COMMAND
 * (a->i indexes it; argc when none), -1 at the end. */
static int next_arg(struct args *a) {
    if (++a->i >= a->argc)
        return -1;
    const char *arg = a->argv[a->i];
    if (strcmp(arg, "--") == 0) {
        a->i++;
        return 0;
    }
    if (arg[0] != '-' || arg[1] == '\0')
        return 0;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= sizeof(a->name))
        usage_error(a->cmd, "unknown option '%s'", arg);
    memcpy(a->name, arg, len);
    a->name[len] = '\0';
    a->value = eq ? eq + 1 : NULL;
    if (strcmp(a->name, "--help") == 0 || strcmp(a->name, "-h") == 0) {
        fputs(usage_text, stdout);
        exit(0);
    }
    return 1;
}

static bool is_opt(const struct args *a, const char *name) {
    return strcmp(a->name, name) == 0;
}

static const char *opt_value(struct args *a) {
    if (a->value)
        return a->value;
    if (a->i + 1 >= a->argc)
        usage_error(a->cmd, "option %s needs a value", a->name);
    return a->argv[++a->i];
}

static void opt_flag(const struct args *a) {
    if (a->value)
        usage_error(a->cmd, "option %s takes no value", a->name);
}

__attribute__((noreturn)) static void unknown_option(const struct args *a) {
    usage_error(a->cmd, "unknown option '%s'", a->argv[a->i]);
}

static int64_t parse_seconds(const struct args *a, const char *s, bool zero_ok) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (s[0] == '\0' || *end != '\0' || errno || !isfinite(v) || v < 0 || (v == 0 && !zero_ok) ||
        v > 31536000.0)
        usage_error(a->cmd, "%s wants a number of seconds%s, not '%s'", a->name,
                    zero_ok ? "" : " above 0", s);
    return (int64_t)llround(v * 1000.0);
}

/* A signal by name (TERM, SIGTERM, term) or number. */
static int parse_signal(const struct args *a, const char *v) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (v[0] != '\0' && *end == '\0' && !errno && n > 0 && n < NSIG)
        return (int)n;
    if (strncasecmp(v, "SIG", 3) == 0)
        v += 3;
    for (int sig = 1; sig < NSIG; sig++) {
        const char *name = sigabbrev_np(sig);
        if (name && strcasecmp(name, v) == 0)
            return sig;
    }
    usage_error(a->cmd, "%s wants a signal name (TERM, QUIT, INT, USR1...) or number, not '%s'",
                a->name, v);
}

static enum convention parse_convention(const struct args *a, const char *v) {
    static const char *const names[] = {"systemd", "nginx", "einhorn"}; /* enum convention */
    for (int c = CONVENTION_SYSTEMD; c <= CONVENTION_EINHORN; c++)
        if (strcmp(v, names[c]) == 0)
            return (enum convention)c;
    usage_error(a->cmd, "%s wants systemd, nginx or einhorn, not '%s'", a->name, v);
}

/* --trust-uid UID (a number, or a user name): one more uid whose sockets and messages the tool
 * takes, besides its own and root's. */
static void add_trust(struct args *a, struct trust *t) {
    const char *v = opt_value(a);
    size_t n = strspn(v, "0123456789");
    unsigned long uid;
    if (n > 0 && v[n] == '\0' && n <= 10 && (uid = strtoul(v, NULL, 10)) < 0xffffffffUL) {
        /* a number */
    } else {
        struct passwd *pw = getpwnam(v);
        if (pw == NULL)
            usage_error(a->cmd, "--trust-uid wants a uid or a user name, not '%s'", v);
        uid = pw->pw_uid;
    }
    if (t->n == TOOL_TRUST_MAX)
        usage_error(a->cmd, "at most %d --trust-uid options", TOOL_TRUST_MAX);
    t->uids[t->n++] = (uint32_t)uid;
}

static const char *need_path(const struct args *a, const char *path, const char *opt) {
    if (path == NULL)
        usage_error(a->cmd, "%s PATH is required", opt);
    if (path[0] == '\0')
        usage_error(a->cmd, "%s PATH is empty", opt);
    return path;
}

static char **need_command(const struct args *a, int r) {
    if (r != 0 || a->i >= a->argc)
        usage_error(a->cmd, "no COMMAND given (put it after '--')");
    return &a->argv[a->i];
}

static int main_serve(struct args *a) {
    struct serve_args s = {.control_mode = 0600,
                           .ready_timeout_ms = 5000,
                           .drain_timeout_ms = 30000,
                           .stop_signal = SIGTERM,
                           .adopt_signal = SIGTERM};
    struct spawn_user user;
    s.ls = calloc((size_t)a->argc, sizeof(*s.ls));
    if (s.ls == NULL) {
        say("out of memory");
        return 1;
    }
    int r;
    while ((r = next_arg(a)) == 1) {
        if (is_opt(a, "--control")) {
            s.control = opt_value(a);
        } else if (is_opt(a, "--listen")) {
            char why[400];
            int pr = listener_parse(opt_value(a), &s.ls[s.nls], why, sizeof(why));
            if (pr == -2)
                usage_error(a->cmd, "--listen %s", why);
            if (pr < 0)
                usage_error(a->cmd,
                            "malformed --listen %s (want NAME=SPEC, SPEC tcp:HOST:PORT, "
                            "udp:HOST:PORT or unix:PATH)",
                            why);
            for (uint32_t i = 0; i < s.nls; i++)
                if (strcmp(s.ls[i].name, s.ls[s.nls].name) == 0)
                    usage_error(a->cmd, "two --listen options are named '%s'", s.ls[i].name);
            s.nls++;
        } else if (is_opt(a, "--ready-timeout")) {
            s.ready_timeout_ms = parse_seconds(a, opt_value(a), false);
        } else if (is_opt(a, "--drain-timeout")) {
            s.drain_timeout_ms = parse_seconds(a, opt_value(a), true);
        } else if (is_opt(a, "--stop-signal")) {
            s.stop_signal = parse_signal(a, opt_value(a));
        } else if (is_opt(a, "--convention")) {
            s.convention = parse_convention(a, opt_value(a));
        } else if (is_opt(a, "--adopt")) {
            const char *v = opt_value(a);
            char *end;
            errno = 0;
            long pid = strtol(v, &end, 10);
            if (v[0] == '\0' || *end != '\0' || errno || pid <= 1 || pid > 0x3fffffff)
                usage_error(a->cmd, "--adopt wants a process id, not '%s'", v);
            s.adopt_pid = (int)pid;
        } else if (is_opt(a, "--adopt-signal")) {
            s.adopt_signal = parse_signal(a, opt_value(a));
        } else if (is_opt(a, "--cgroup")) {
            const char *v = opt_value(a);
            if (strcmp(v, "auto") != 0 && strcmp(v, "no") != 0)
                usage_error(a->cmd, "--cgroup wants auto or no, not '%s'", v);
            s.no_cgroup = strcmp(v, "no") == 0;
        } else if (is_opt(a, "--restart")) {
            const char *v = opt_value(a);
            if (strcmp(v, "on-failure") == 0)
                s.restart = RESTART_ON_FAILURE;
            else if (strcmp(v, "never") == 0)
                s.restart = RESTART_NEVER;
            else if (strcmp(v, "always") == 0)
                s.restart = RESTART_ALWAYS;
            else
                usage_error(a->cmd, "--restart wants never, on-failure or always, not '%s'", v);
        } else if (is_opt(a, "--user")) {
            char why[200];
            if (spawn_user_parse(opt_value(a), &user, why, sizeof(why)) < 0)
                usage_error(a->cmd, "%s", why);
            s.user = &user;
        } else if (is_opt(a, "--trust-uid")) {
            add_trust(a, &s.trust);
        } else if (is_opt(a, "--control-mode")) {
            const char *v = opt_value(a);
            char *end;
            errno = 0;
            unsigned long m = strtoul(v, &end, 8);
            if (v[0] == '\0' || *end != '\0' || errno || m == 0 || m > 0777)
                usage_error(a->cmd, "--control-mode wants octal permission bits, like 0600");
            s.control_mode = (unsigned)m;
        } else {
            unknown_option(a);
        }
    }
    need_path(a, s.control, "--control");
    if (s.nls == 0)
        usage_error(a->cmd, "at least one --listen NAME=SPEC is required");
    s.argv = need_command(a, r);
    r = serve_main(&s);
    free(s.ls);
    return r;
}

static int main_control(struct args *a) {
    const char *control = NULL;
    bool json = false, wait = false;
    static struct trust trust;
    int r;
    while ((r = next_arg(a)) == 1) {
        if (is_opt(a, "--control")) {
            control = opt_value(a);
        } else if (is_opt(a, "--trust-uid")) {
            add_trust(a, &trust);
        } else if (is_opt(a, "--json") && strcmp(a->cmd, "status") == 0) {
            opt_flag(a);
            json = true;
        } else if (is_opt(a, "--wait") && strcmp(a->cmd, "restart") == 0) {
            opt_flag(a);
            wait = true;
        } else {
            unknown_option(a);
        }
    }
    if (r == 0)
        usage_error(a->cmd, "unexpected argument '%s'", a->argv[a->i]);
    need_path(a, control, "--control");
    trust_set(&trust);
    if (strcmp(a->cmd, "restart") == 0)
        return cmd_restart(control, wait);
    if (strcmp(a->cmd, "status") == 0)
        return cmd_status(control, json);
    return cmd_stop(control);
}

static int main_exec(struct args *a) {
    const char *from = NULL, *request = AFDT_LISTENERS_REQUEST;
    const char **names = calloc((size_t)a->argc, sizeof(*names));
    uint32_t nnames = 0;
    static struct trust trust;
    if (names == NULL) {
        say("out of memory");
        return 1;
    }
    int r;
    while ((r = next_arg(a)) == 1) {
        if (is_opt(a, "--from")) {
            from = opt_value(a);
        } else if (is_opt(a, "--name")) {
            const char *n = opt_value(a);
            if (n[0] == '\0' || strlen(n) > AFDT_NAME_MAX || strchr(n, ':'))
                usage_error(a->cmd, "--name wants 1 to %d characters without ':'", AFDT_NAME_MAX);
            names[nnames++] = n;
        } else if (is_opt(a, "--trust-uid")) {
            add_trust(a, &trust);
        } else if (is_opt(a, "--request")) {
            request = opt_value(a);
            if (request[0] == '\0' || strlen(request) > AFDT_MSGLEN)
                usage_error(a->cmd, "--request wants 1 to %d bytes", (int)AFDT_MSGLEN);
        } else {
            unknown_option(a);
        }
    }
    need_path(a, from, "--from");
    char **argv = need_command(a, r);
    trust_set(&trust);
    r = cmd_exec(from, request, names, nnames, argv);
    free(names);
    return r;
}

int main(int argc, char **argv) {
    struct args a = {.argc = argc, .argv = argv, .i = 1};
    if (argc < 2)
        usage_error(NULL, "no command given");
    const char *cmd = argv[1];
    a.cmd = cmd;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("afdt %s\n", AFDT_TOOL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0)
        return main_serve(&a);
    if (strcmp(cmd, "restart") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "stop") == 0)
        return main_control(&a);
    if (strcmp(cmd, "exec") == 0)
        return main_exec(&a);
    /* Not for users: a generation's output relay, started by afdt serve (relay.c). */
    if (strcmp(cmd, "relay") == 0 && argc == 3 && atoi(argv[2]) > 0) {
        log_as_supervisor();
        return relay_main(atoi(argv[2]));
    }
    if (cmd[0] == '-')
        usage_error(NULL, "unknown option '%s' (the command comes first: afdt serve ...)", cmd);
    usage_error(NULL, "unknown command '%s'", cmd);
}
