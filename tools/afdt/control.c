/* SPDX-License-Identifier: BSD-3-Clause */
/* The supervisor's control channel, a libafdt server: its requests, and the status report. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <event2/event.h>

#include "supervisor.h"

static const char *sup_state_str(enum sup_state st) {
    switch (st) {
    case SUP_STARTING: return "starting";
    case SUP_RUNNING: return "running";
    default: return "stopping";
    }
}

const struct outcome *control_outcome(const struct sup *s, int id) {
    const struct outcome *o = &s->outcomes[id % SUP_OUTCOMES];
    return id > 0 && o->id == id ? o : NULL;
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
        fputc('}', f);
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
    fprintf(f, "],\"restarts\":%u,\"rollbacks\":%u,\"restart_in_progress\":", s->restarts,
            s->rollbacks);
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
    fprintf(f, "\nrestarts     %u (rollbacks %u)%s\n", s->restarts, s->rollbacks,
            s->starting && s->restart_id ? ", one in progress" : "");
    fprintf(f, "generations  %-4s %-8s %-9s %-7s %s\n", "GEN", "PID", "STATE", "AGE", "STATUS");
    for (const struct gen *g = s->gens; g; g = g->next) {
        format_age(now - g->started_ms, age, sizeof(age));
        fprintf(f, "             %-4d %-8d %-9s %-7s %s\n", g->id, (int)g->pid,
                gen_state_str(g->state), age, g->status);
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
static int status_fd(const struct sup *s, bool json) {
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

static int on_request(const struct afdt_peer *peer, const uint8_t *request, uint32_t length,
                      struct afdt_reply *reply, void *userdata) {
    struct sup *s = userdata;
    char req[AFDT_MSGLEN + 1], *out = (char *)reply->content, msg[320];
    size_t cap = AFDT_MSGLEN;
    int n;
    memcpy(req, request, length);
    req[length] = '\0';
    if (strcmp(req, "hello") == 0) {
        n = snprintf(out, cap,
                     "%s pid=%d gen=%d notify=%d restarts=%u rollbacks=%u restart=%d state=%s",
                     TOOL_PROTOCOL, (int)getpid(), s->next_gen - 1, s->uses_notify, s->restarts,
                     s->rollbacks, s->last_restart_id, sup_state_str(s->state));
    } else if (strcmp(req, "status") == 0 || strcmp(req, "status json") == 0) {
        int fd = status_fd(s, req[6] != '\0');
        if (fd < 0) {
            n = snprintf(out, cap, "error cannot write the status: %s", strerror(errno));
        } else {
            reply->fds[0] = fd; /* closed by on_post */
            reply->nfds = 1;
            n = snprintf(out, cap, "ok");
        }
    } else if (strcmp(req, "restart") == 0) {
        char origin[64];
        snprintf(origin, sizeof(origin), "asked by pid %d", (int)peer->pid);
        int id = sup_restart(s, origin, msg, sizeof(msg));
        n = id < 0 ? snprintf(out, cap, "error %s", msg) : snprintf(out, cap, "started %d", id);
    } else if (strncmp(req, "result ", 7) == 0) {
        const struct outcome *o = control_outcome(s, atoi(req + 7));
        if (o == NULL)
            n = snprintf(out, cap, "error no such restart");
        else if (o->state == OUTCOME_PENDING)
            n = snprintf(out, cap, "pending");
        else
            n = snprintf(out, cap, "%s %s", o->state == OUTCOME_OK ? "ok" : "failed", o->text);
    } else if (strcmp(req, "stop") == 0) {
        n = snprintf(out, cap, "stopping pid=%d", (int)getpid());
        snprintf(msg, sizeof(msg), "asked by pid %d", (int)peer->pid);
        sup_stop(s, 0, msg);
    } else if (strcmp(req, AFDT_LISTENERS_REQUEST) == 0) {
        reply->named = s->named; /* the supervisor's own, kept open */
        reply->nnamed = s->args->nls;
        n = snprintf(out, cap, "%s", TOOL_PROTOCOL);
    } else if (strcmp(req, "retire") == 0) {
        n = snprintf(out, cap, "retiring pid=%d", (int)getpid());
        sup_retire(s, (int)peer->pid);
    } else {
        n = snprintf(out, cap, "error unknown request \"%.60s\"", req);
    }
    reply->content_length = n < 0 ? 0 : (uint32_t)n < cap ? (uint32_t)n : (uint32_t)cap;
    return 0;
}

static void on_post(const struct afdt_peer *peer, const uint8_t *request, uint32_t length,
                    const struct afdt_reply *reply, int error, void *userdata) {
    (void)peer;
    (void)request;
    (void)length;
    (void)error;
    (void)userdata;
    for (uint32_t i = 0; i < reply->nfds; i++)
        close(reply->fds[i]);
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

static int try_open(struct sup *s, const struct afdt_server_options *o) {
    if (afdt_create_server_ex(s->args->control, s->eb, o, &s->server) >= 0)
        return 0;
    s->server = NULL;
    return -1;
}

int control_open(struct sup *s, bool replacing) {
    static uint32_t uid;
    uid = (uint32_t)getuid();
    struct afdt_server_options o;
    memset(&o, 0, sizeof(o));
    o.size = sizeof(o);
    o.flags = AFDT_SERVER_REPLACE_STALE;
    o.socket_mode = s->args->control_mode;
    o.n_allowed_uids = 1;
    o.allowed_uids = &uid;
    o.request_handler = on_request;
    o.post_handler = on_post;
    o.error_handler = on_error;
    o.userdata = s;
    /* A predecessor's file may take a moment to go. */
    int tries = replacing ? 30 : 1, r = -1;
    opening = true;
    for (int i = 0; i < tries && r < 0; i++) {
        if (i)
            sleep_ms_tool(100);
        r = try_open(s, &o);
    }
    opening = false;
    if (r < 0) {
        say("cannot serve the control channel at %s: %s%s%s", s->args->control,
            strerror(open_errno), open_message[0] ? " - " : "", open_message);
        return -1;
    }
    say("control channel at %s", s->args->control);
    return 0;
}

void control_close(struct sup *s) {
    if (s->server)
        afdt_close_server(s->server);
    s->server = NULL;
}
