// SPDX-License-Identifier: BSD-3-Clause
// afdt.h from C++: it compiles, links (extern "C") and serves one exchange.
#include <afdt.h>
#include <dirent.h>
#include <event2/event.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

static int on_request(const uint8_t *, uint32_t, uint8_t *response, uint32_t *length, void *) {
    std::memcpy(response, "c++", 3);
    *length = 3;
    return -1;
}

static void on_error(const afdt_error_t *err, void *) {
    std::fprintf(stderr, "%s\n", afdt_operation_str(err->operation));
}

static int open_descriptors() {
    int n = 0;
    if (DIR *d = opendir("/proc/self/fd")) {
        while (dirent *e = readdir(d))
            n += e->d_name[0] != '.';
        closedir(d);
    }
    return n;
}

int main() {
    int before = open_descriptors();
    std::string path = "/tmp/afdt-cplusplus-" + std::to_string(getpid()) + ".sock";
    event_base *eb = event_base_new();
    void *handle = nullptr;
    if (afdt_create_server(path.c_str(), eb, on_request, afdt_no_post, on_error, &handle, nullptr) <
        0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        uint8_t response[8];
        uint32_t length = sizeof(response);
        int fd = -1;
        timeval timeout = {5, 0};
        afdt_error_t err = AFDT_ERROR_T_INIT;
        int r = afdt_sync_client(path.c_str(), reinterpret_cast<const uint8_t *>("q"), 1, response,
                                 &length, &fd, &timeout, &err);
        _exit(r == 0 && length == 3 && std::memcmp(response, "c++", 3) == 0 && fd == -1 ? 0 : 1);
    }
    int status = 1;
    while (waitpid(pid, &status, WNOHANG) == 0)
        event_base_loop(eb, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    afdt_close_server(handle);
    event_base_free(eb);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && open_descriptors() == before;
    std::printf("c++: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
