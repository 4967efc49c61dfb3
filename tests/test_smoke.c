/* SPDX-License-Identifier: BSD-3-Clause */
/* Smoke: one exchange through each interface. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include "afdt.h"
#include "harness.h"

static int devnull_fd = -1;

static int on_request(const uint8_t *req, uint32_t len, uint8_t *resp, uint32_t *resp_len,
                      void *ud) {
    (void)ud;
    memcpy(resp, req, len);
    *resp_len = len;
    return devnull_fd;
}

static void on_error(const struct afdt_error_t *e, void *ud) {
    (void)ud;
    fprintf(stderr, "error %s %s %s errno=%d\n", afdt_phase_str(e->phase),
            afdt_operation_str(e->operation), e->message, errno);
}

static int got_fd = -2;
static uint8_t got_buf[AFDT_MSGLEN];
static uint32_t got_len;
static void on_response(const uint8_t *r, uint32_t len, int fd, void *ud) {
    memcpy(got_buf, r, len);
    got_len = len;
    got_fd = fd;
    event_base_loopbreak(ud);
}

TEST(smoke_async_exchange_in_one_loop) {
    int before = fd_count();
    devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct event_base *eb = event_base_new();
    const char *p = tmp_path("s");
    void *h = NULL;
    CHECK_INT(afdt_create_server(p, eb, on_request, afdt_no_post, on_error, &h, NULL), >=, 0);
    struct timeval tv = {2, 0};
    CHECK_INT(afdt_create_client(p, eb, (const uint8_t *)"hi", 2, on_response, on_error, &tv, eb),
              >=, 0);
    event_base_dispatch(eb);
    CHECK_INT(got_len, ==, 2);
    CHECK_MEM(got_buf, "hi", 2);
    CHECK(got_fd >= 0);
    CHECK(same_file(got_fd, devnull_fd));
    CHECK(is_cloexec(got_fd));
    close(got_fd);
    CHECK_INT(afdt_close_server(h), ==, 0);
    event_base_dispatch(eb);
    event_base_free(eb);
    close(devnull_fd);
    CHECK_FD_COUNT(before);
}

struct forked_server {
    const char *path;
    int ready; /* written once the server listens */
};

static int server_proc(void *arg) {
    struct forked_server *fs = arg;
    struct event_base *eb = event_base_new();
    void *h = NULL;
    if (afdt_create_server(fs->path, eb, on_request, afdt_no_post, on_error, &h, NULL) < 0)
        return 3;
    if (write(fs->ready, "r", 1) != 1)
        return 4;
    event_base_dispatch(eb);
    return 0;
}

TEST(smoke_sync_client_against_forked_server) {
    int before = fd_count();
    devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int ready[2];
    CHECK_INT(pipe2(ready, O_CLOEXEC), ==, 0);
    struct forked_server fs = {tmp_path("s"), ready[1]};
    pid_t pid = spawn(server_proc, &fs);
    /* Wait for the server itself, not for a time: under valgrind it may take seconds. */
    char c;
    CHECK_INT(read(ready[0], &c, 1), ==, 1);
    uint8_t resp[3];
    uint32_t rlen = sizeof(resp);
    int fd = -5;
    struct afdt_error_t err = AFDT_ERROR_T_INIT;
    struct timeval tv = {10, 0};
    CHECK_INT(afdt_sync_client(fs.path, (const uint8_t *)"ab", 2, resp, &rlen, &fd, &tv, &err), ==,
              0);
    CHECK_INT(rlen, ==, 2);
    CHECK_MEM(resp, "ab", 2);
    CHECK(same_file(fd, devnull_fd));
    close(fd);
    kill(pid, SIGKILL);
    wait_exit(pid);
    close(ready[0]);
    close(ready[1]);
    close(devnull_fd);
    CHECK_FD_COUNT(before);
}
