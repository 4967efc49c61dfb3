/* SPDX-License-Identifier: BSD-3-Clause */
/* Run a fuzz target's LLVMFuzzerTestOneInput over files and corpus directories, so the normal
 * test suite replays the committed corpora without libFuzzer.
 *
 * Each input runs in its own forked process (with a 30 s alarm), so one failing input does not
 * hide the others: all failures are listed and the exit status is 1 if there was any.
 * `--no-fork` runs them in this process instead, for gdb.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz_util.h"

#define INPUT_TIMEOUT_S 30

static bool no_fork;
static int ran, failed;

/* Read all of @path; NULL if it cannot be read. */
static uint8_t *read_file(const char *path, size_t *ret_len) {
    FILE *f = fopen(path, "rbe");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (bigger == NULL)
            free(buf);
        buf = bigger;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *ret_len = len;
    return buf;
}

static int run_here(const char *path) {
    size_t len = 0;
    uint8_t *data = read_file(path, &len);
    if (data == NULL) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return 1;
    }
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

static void run_file(const char *path) {
    ran++;
    if (no_fork) {
        fprintf(stderr, "replay: %s\n", path);
        failed += run_here(path);
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("replay: fork");
        exit(1);
    }
    if (pid == 0) {
        alarm(INPUT_TIMEOUT_S); /* a hang is a failure too */
        _exit(run_here(path));
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        continue;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return;
    failed++;
    if (WIFSIGNALED(st))
        fprintf(stderr, "replay: FAILED %s (signal %d)\n", path, WTERMSIG(st));
    else
        fprintf(stderr, "replay: FAILED %s (exit %d)\n", path, WEXITSTATUS(st));
}

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int skip_dots(const struct dirent *e) {
    return e->d_name[0] != '.';
}

/* Every regular file of @dir, in name order. */
static void run_dir(const char *dir) {
    struct dirent **names;
    int n = scandir(dir, &names, skip_dots, by_name);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s\n", dir);
        failed++;
        return;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            run_file(path);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--no-fork") == 0) {
        no_fork = true;
        first = 2;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [--no-fork] CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = first; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            run_dir(argv[i]);
        else
            run_file(argv[i]);
    }
    printf("replay: %d inputs, %d failed\n", ran, failed);
    /* An empty corpus replays nothing: call that a failure, not a pass. */
    return ran == 0 || failed > 0 ? 1 : 0;
}
