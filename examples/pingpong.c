/* SPDX-License-Identifier: BSD-3-Clause */
/* The smallest complete use of libafdt: a server process hands a pipe to a client process. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <afdt.h>

static int pipe_fds[2];

/* Server side: answer "pipe?" with "ok" and the pipe's write end. */
static int on_request(const uint8_t *req, uint32_t req_len, uint8_t *resp, uint32_t *resp_len,
                      void *userdata) {
    (void)userdata;
    if (req_len != 5 || memcmp(req, "pipe?", 5) != 0) {
        *resp_len = 0;
        return -1;
    }
    memcpy(resp, "ok", 2);
    *resp_len = 2;
    return pipe_fds[1];
}

/* After the handover this process no longer needs its copy. */
static void on_post(const uint8_t *req, uint32_t req_len, const uint8_t *resp, uint32_t resp_len,
                    int sent_fd, void *userdata) {
    (void)req, (void)req_len, (void)resp, (void)resp_len, (void)sent_fd;
    event_base_loopbreak(userdata);
}

static void on_error(const struct afdt_error_t *err, void *userdata) {
    (void)userdata;
    fprintf(stderr, "server: %s/%s: %s\n", afdt_phase_str(err->phase),
            afdt_operation_str(err->operation), err->message);
}

int main(void) {
    char path[] = "/tmp/afdt-pingpong-XXXXXX";
    if (mkdtemp(path) == NULL || pipe(pipe_fds) < 0)
        return 1;
    char sock[64];
    snprintf(sock, sizeof(sock), "%s/sock", path);

    struct event_base *eb = event_base_new();
    void *server = NULL;
    if (afdt_create_server(sock, eb, on_request, on_post, on_error, &server, eb) < 0)
        return 1;

    pid_t pid = fork();
    if (pid == 0) {
        /* Client: ask for the pipe and write through it. */
        uint8_t resp[16];
        uint32_t resp_len = sizeof(resp);
        int fd = -1;
        struct timeval timeout = {5, 0};
        struct afdt_error_t err = AFDT_ERROR_T_INIT;
        if (afdt_sync_client(sock, (const uint8_t *)"pipe?", 5, resp, &resp_len, &fd, &timeout,
                             &err) < 0) {
            fprintf(stderr, "client: %s: %s\n", afdt_operation_str(err.operation), err.message);
            _exit(1);
        }
        ssize_t n = write(fd, "hello", 5);
        close(fd);
        _exit(n == 5 ? 0 : 1);
    }

    event_base_dispatch(eb); /* until the post handler breaks the loop */
    afdt_close_server(server);
    event_base_free(eb);
    close(pipe_fds[1]);

    char buf[8] = {0};
    ssize_t n = read(pipe_fds[0], buf, sizeof(buf) - 1);
    int status = 0;
    waitpid(pid, &status, 0);
    close(pipe_fds[0]);
    rmdir(path);
    int ok = n == 5 && strcmp(buf, "hello") == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("pingpong: %s\n",
           ok ? "the client wrote \"hello\" through the pipe it was handed" : "FAILED");
    return ok ? 0 : 1;
}
