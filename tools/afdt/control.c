/* SPDX-License-Identifier: BSD-3-Clause */
/* The control protocol: requests, the greeting, the status report, and its libafdt server. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <event2/event.h>

#include "control.h"
#include "log.h"

enum control_verb control_parse(const char *req, int *arg) {
    *arg = 0;
    if (strcmp(req, "hello") == 0)
        return CTL_HELLO;
    if (strcmp(req, "status") == 0)
        return CTL_STATUS;
    if (strcmp(req, "status json") == 0) {
        *arg = 1;
        return CTL_STATUS;
    }
    if (strcmp(req, "restart") == 0)
        return CTL_RESTART;
    if (strncmp(req, "result ", 7) == 0) {
        *arg = atoi(req + 7);
        return CTL_RESULT;
    }
    if (strcmp(req, "stop") == 0)
        return CTL_STOP;
    if (strcmp(req, AFDT_LISTENERS_REQUEST) == 0)
        return CTL_LISTENERS;
    if (strcmp(req, "retire") == 0)
        return CTL_RETIRE;
    return CTL_UNKNOWN;
}

int control_hello(const struct sup *s, char *out, size_t cap) {
    return snprintf(out, cap,
                    "%s pid=%d gen=%d notify=%d restarts=%u rollbacks=%u restart=%d state=%s",
                    TOOL_PROTOCOL, (int)getpid(), s->next_gen - 1, s->uses_notify, s->restarts,
                    s->rollbacks, s->last_restart_id, sup_state_str(s->state));
}

int control_parse_hello(const char *resp, struct predecessor *p, char *state, size_t size) {
    size_t plen = strlen(TOOL_PROTOCOL);
    char word[16] = "";
    int notify = 0;
    if (strncmp(resp, TOOL_PROTOCOL, plen) != 0 || resp[plen] != ' ')
        return -1;
    sscanf(resp + plen, " pid=%d gen=%d notify=%d restarts=%u rollbacks=%u restart=%d state=%15s",
           &p->pid, &p->gen, &notify, &p->restarts, &p->rollbacks, &p->last_restart_id, word);
    p->uses_notify = notify != 0;
    snprintf(state, size, "%s", word);
    return 0;
}

static void json_str(FILE *f, const char *str) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void status_json(const struct sup *s, FILE *f) {
    int64_t now = now_ms();
    fprintf(f, "{\"supervisor\":{\"pid\":%d,\"state\":\"%s\",\"uptime_s\":%.1f,\"control\":",
            (int)getpid(), sup_state_str(s->state), (double)(now - s->started_ms) / 1000.0);
    json_str(f, s->args->control);
    fprintf(f, ",\"ready_timeout_s\":%.3f,\"drain_timeout_s\":%.3f,\"uses_notify\":%s},",
            (double)s->args->ready_timeout_ms / 1000.0, (double)s->args->drain_timeout_ms / 1000.0,
            s->uses_notify ? "true" : "false");
    fputs("\"command\":[", f);
    for (int i = 0; s->args->argv[i]; i++) {
        fputs(i ? "," : "", f);
        json_str(f, s->args->argv[i]);
    }
    fputs("],\"generations\":[", f);
    for (const struct gen *g = s->gens; g; g = g->next) {
        fprintf(f, "%s{\"id\":%d,\"pid\":%d,\"state\":\"%s\",\"age_s\":%.1f,\"status\":",
                g == s->gens ? "" : ",", g->id, (int)g->pid, gen_state_str(g->state),
                (double)(now - g->started_ms) / 1000.0);
        json_str(f, g->status);
        fputs(",\"ready\":", f);
        json_str(f, g->ready_how);
        fputs(",\"processes\":[", f);
        for (size_t i = 0; i < g->procs.n; i++)
            fprintf(f, "%s%d", i ? "," : "", (int)g->procs.list[i].pid);
        fputs("]}", f);
    }
    fputs("],\"sockets\":[", f);
    for (uint32_t i = 0; i < s->args->nls; i++) {
        const struct listener *l = &s->args->ls[i];
        char addr[160];
        int port;
        describe_socket(l->fd, addr, sizeof(addr), &port);
        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, l->name);
        fputs(",\"spec\":", f);
        json_str(f, l->spec);
        fputs(",\"address\":", f);
        json_str(f, addr);
        fprintf(f, ",\"port\":%d,\"source\":\"%s\"}", port, listener_source_str(l->source));
    }
    fprintf(f, "],\"restarts\":%u,\"rollbacks\":%u,\"respawns\":%u,\"restart_in_progress\":",
            s->restarts, s->rollbacks, s->respawns);
    if (s->starting && s->restart_id)
        fprintf(f, "{\"restart\":%d,\"generation\":%d}", s->restart_id, s->starting->id);
    else
        fputs("null", f);
    fputs("}\n", f);
}

static void status_text(const struct sup *s, FILE *f) {
    int64_t now = now_ms();
    char age[32];
    format_age(now - s->started_ms, age, sizeof(age));
    fprintf(f, "supervisor   pid %d, %s, up %s\n", (int)getpid(), sup_state_str(s->state), age);
    fprintf(f, "control      %s\n", s->args->control);
    fputs("command     ", f);
    for (int i = 0; s->args->argv[i]; i++)
        fprintf(f, " %s", s->args->argv[i]);
    fprintf(f, "\nrestarts     %u (rollbacks %u)%s, respawns %u\n", s->restarts, s->rollbacks,
            s->starting && s->restart_id ? ", one in progress" : "", s->respawns);
    fprintf(f, "generations  %-4s %-8s %-9s %-7s %s\n", "GEN", "PID", "STATE", "AGE", "STATUS");
    for (const struct gen *g = s->gens; g; g = g->next) {
        format_age(now - g->started_ms, age, sizeof(age));
        fprintf(f, "             %-4d %-8d %-9s %-7s %s\n", g->id, (int)g->pid,
                gen_state_str(g->state), age, g->status);
        if (g->ready_how[0])
            fprintf(f, "                  ready: %s\n", g->ready_how);
        fputs("                  processes", f);
        for (size_t i = 0; i < g->procs.n; i++)
            fprintf(f, " %d", (int)g->procs.list[i].pid);
        fputc('\n', f);
    }
    fprintf(f, "sockets      %-12s %-24s %-18s %s\n", "NAME", "ADDRESS", "SOURCE", "SPEC");
    for (uint32_t i = 0; i < s->args->nls; i++) {
        const struct listener *l = &s->args->ls[i];
        char addr[160];
        describe_socket(l->fd, addr, sizeof(addr), NULL);
        fprintf(f, "             %-12s %-24s %-18s %s\n", l->name, addr,
                listener_source_str(l->source), l->spec);
    }
}

/* The status report in a memory file, sent as a descriptor: it can outgrow a frame. */
int control_status_fd(const struct sup *s, bool json) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return -1;
    if (json)
        status_json(s, f);
    else
        status_text(s, f);
    if (fclose(f) != 0) {
        free(buf);
        return -1;
    }
    int fd = memfd_create("afdt-status", MFD_CLOEXEC);
    size_t off = 0;
    while (fd >= 0 && off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            fd = -1;
            break;
        }
        off += (size_t)n;
    }
    free(buf);
    return fd;
}

/* While the control channel is being opened, failures are kept for one message at the end. */
static bool opening;
static int open_errno;
static const char *open_message = "";

static void on_error(const struct afdt_error_t *e, void *userdata) {
    int err = errno;
    (void)userdata;
    if (opening) {
        open_errno = err;
        open_message = e->message;
        return;
    }
    say("control channel: %s %s: %s%s%s", afdt_phase_str(e->phase),
        afdt_operation_str(e->operation), err ? strerror(err) : "",
        err && e->message[0] ? ": " : "", e->message);
}

void *control_serve(struct event_base *eb, const char *path, unsigned mode, bool replacing,
                    afdt_request_ex_handler_t handler, afdt_post_ex_handler_t post,
                    void *userdata) {
    static uint32_t uid;
    uid = (uint32_t)getuid();
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.flags = AFDT_SERVER_REPLACE_STALE;
    o.socket_mode = mode;
    o.n_allowed_uids = 1;
    o.allowed_uids = &uid;
    o.request_handler = handler;
    o.post_handler = post;
    o.error_handler = on_error;
    o.userdata = userdata;
    /* A predecessor's file may take a moment to go. */
    int tries = replacing ? 30 : 1;
    void *server = NULL;
    opening = true;
    for (int i = 0; i < tries && server == NULL; i++) {
        if (i)
            sleep_ms_tool(100);
        if (afdt_create_server_ex(path, eb, &o, &server) < 0)
            server = NULL;
    }
    opening = false;
    if (server == NULL) {
        say("cannot serve the control channel at %s: %s%s%s", path, strerror(open_errno),
            open_message[0] ? " - " : "", open_message);
        return NULL;
    }
    say("control channel at %s", path);
    return server;
}
