/* SPDX-License-Identifier: BSD-3-Clause */
/* The control protocol: requests, the greeting, the status report, and its libafdt server. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

/* The length of the valid UTF-8 sequence at @p (1 to 4), or 0: an overlong form, a
 * surrogate, past U+10FFFF or a stray byte is not one.  *cp gets its code point. */
static size_t utf8_seq(const unsigned char *p, uint32_t *cp) {
    size_t n;
    uint32_t c = p[0], min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xe0) == 0xc0)
        n = 2, min = 0x80, c &= 0x1f;
    else if ((c & 0xf0) == 0xe0)
        n = 3, min = 0x800, c &= 0x0f;
    else if ((c & 0xf8) == 0xf0)
        n = 4, min = 0x10000, c &= 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0; /* also stops at the NUL */
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* @str as a JSON string, valid UTF-8 whatever it holds: a byte that is not UTF-8 becomes
 * U+FFFD. */
static void json_str(FILE *f, const char *str) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)str; *p;) {
        uint32_t cp;
        size_t n = utf8_seq(p, &cp);
        if (n == 0)
            fputs("\\ufffd", f);
        else if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (char)cp);
        else if (cp < 0x20 || cp == 0x7f)
            fprintf(f, "\\u%04x", (unsigned)cp);
        else
            fwrite(p, 1, n, f);
        p += n ? n : 1;
    }
    fputc('"', f);
}

/* @str for a terminal: what a peer chose (a STATUS=, a path) cannot move the cursor, retitle
 * the window or clear the screen.  Control characters (C0, DEL, C1) and bytes that are not
 * UTF-8 are written as \xHH or \uHHHH; a backslash as \\. */
static void text_str(FILE *f, const char *str) {
    for (const unsigned char *p = (const unsigned char *)str; *p;) {
        uint32_t cp;
        size_t n = utf8_seq(p, &cp);
        if (n == 0)
            fprintf(f, "\\x%02x", *p);
        else if (cp == '\\')
            fputs("\\\\", f);
        else if (cp < 0x20 || cp == 0x7f)
            fprintf(f, "\\x%02x", (unsigned)cp);
        else if (cp >= 0x80 && cp < 0xa0)
            fprintf(f, "\\u%04x", (unsigned)cp);
        else
            fwrite(p, 1, n, f);
        p += n ? n : 1;
    }
}

/* "%-*s" for text_str. */
static void text_col(FILE *f, const char *str, int width) {
    long before = ftell(f);
    text_str(f, str);
    for (long w = ftell(f) - before; w < width; w++)
        fputc(' ', f);
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
    fputs("control      ", f);
    text_str(f, s->args->control);
    fputs("\ncommand     ", f);
    for (int i = 0; s->args->argv[i]; i++) {
        fputc(' ', f);
        text_str(f, s->args->argv[i]);
    }
    fprintf(f, "\nrestarts     %u (rollbacks %u)%s, respawns %u\n", s->restarts, s->rollbacks,
            s->starting && s->restart_id ? ", one in progress" : "", s->respawns);
    fprintf(f, "generations  %-4s %-8s %-9s %-7s %s\n", "GEN", "PID", "STATE", "AGE", "STATUS");
    for (const struct gen *g = s->gens; g; g = g->next) {
        format_age(now - g->started_ms, age, sizeof(age));
        fprintf(f, "             %-4d %-8d %-9s %-7s ", g->id, (int)g->pid, gen_state_str(g->state),
                age);
        text_str(f, g->status);
        fputc('\n', f);
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
        fprintf(f, "             %-12s ", l->name);
        text_col(f, addr, 24);
        fprintf(f, " %-18s ", listener_source_str(l->source));
        text_str(f, l->spec);
        fputc('\n', f);
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

/* ---- a stale control socket, and the lock file beside it ---- */

/* Take @path's lock file (PATH.lock, the same one libafdt's AFDT_SERVER_REPLACE_STALE uses),
 * waiting at most CONTROL_LOCK_WAIT_MS.  Only a lock file of our own uid is used.  Returns it
 * locked, or -1 after saying why. */
static int take_lock(const char *lock) {
    int64_t end = now_ms() + CONTROL_LOCK_WAIT_MS;
    for (;;) {
        int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
        struct stat held, named;
        if (fd < 0 || fstat(fd, &held) < 0) {
            say("cannot open the lock file %s: %s", lock, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        if (held.st_uid != getuid()) {
            say("the lock file %s belongs to uid %u, not to us (uid %u): remove it, or use "
                "another --control",
                lock, (unsigned)held.st_uid, (unsigned)getuid());
            close(fd);
            return -1;
        }
        int r;
        while ((r = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EWOULDBLOCK && now_ms() < end)
            sleep_ms_tool(20);
        if (r < 0) {
            say("the lock file %s stayed locked for %d s (another afdt starting at the same "
                "--control?): giving up",
                lock, CONTROL_LOCK_WAIT_MS / 1000);
            close(fd);
            return -1;
        }
        /* Whoever held it may have removed it (as we do): then start again on the new one. */
        if (stat(lock, &named) == 0 && named.st_dev == held.st_dev && named.st_ino == held.st_ino)
            return fd;
        close(fd);
    }
}

/* Whether nothing listens at @path: a connect that is refused. */
static bool refused(const char *path) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    int fd = afdt_connect(path, &e);
    if (fd >= 0) {
        close(fd);
        return false;
    }
    return errno == ECONNREFUSED;
}

int control_claim(const char *path) {
    struct stat st;
    if (path[0] == '@' || lstat(path, &st) < 0)
        return 0; /* no file: nothing to remove */
    if (!S_ISSOCK(st.st_mode)) {
        say("--control %s exists and is not a socket: not ours to replace", path);
        return -1;
    }
    if (st.st_uid != getuid()) {
        say("--control %s is a socket file of uid %u: only our own (uid %u) are removed", path,
            (unsigned)st.st_uid, (unsigned)getuid());
        return -1;
    }
    char lock[4200];
    snprintf(lock, sizeof(lock), "%s.lock", path);
    int fd = take_lock(lock);
    if (fd < 0)
        return -1;
    /* Under the lock, look again: another supervisor may have replaced it meanwhile. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == getuid() && refused(path))
        (void)unlink(path);
    (void)unlink(lock); /* while still holding it, so a waiter sees it went */
    close(fd);
    return 0;
}

/* While the control channel is being opened, failures are kept for one message at the end. */
static bool opening;
static int open_errno;
static const char *open_message = "";

/* What clients do wrong (another user knocking, a connection closed mid-frame) is theirs to
 * repeat as often as they like: one line per interval says it. */
static struct say_limit refused_limit, client_limit;

static void on_error(const struct afdt_error_t *e, void *userdata) {
    int err = errno;
    (void)userdata;
    if (opening) {
        open_errno = err;
        open_message = e->message;
        return;
    }
    if (e->phase == AFDT_HANDLE_REQUEST && err == EACCES)
        say_limited(&refused_limit, "control channel: refused a client of another user");
    else
        say_limited(&client_limit, "control channel: %s %s: %s%s%s", afdt_phase_str(e->phase),
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
    /* No AFDT_SERVER_REPLACE_STALE: a stale file is removed by control_claim(), which does
     * not wait for ever on a lock file nor remove another user's file. */
    o.socket_mode = mode;
    o.n_allowed_uids = 1;
    o.allowed_uids = &uid;
    o.request_handler = handler;
    o.post_handler = post;
    o.error_handler = on_error;
    o.userdata = userdata;
    /* A predecessor's file may take a moment to go, or be left behind. */
    int tries = replacing ? 30 : 1;
    void *server = NULL;
    for (int i = 0; i < tries && server == NULL; i++) {
        if (i && control_claim(path) < 0)
            break;
        if (i)
            sleep_ms_tool(100);
        opening = true;
        if (afdt_create_server_ex(path, eb, &o, &server) < 0)
            server = NULL;
        opening = false;
    }
    if (server == NULL) {
        say("cannot serve the control channel at %s: %s%s%s%s", path, strerror(open_errno),
            resource_hint(open_errno), open_message[0] ? " - " : "", open_message);
        return NULL;
    }
    say("control channel at %s", path);
    return server;
}
