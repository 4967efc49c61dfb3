/* SPDX-License-Identifier: BSD-3-Clause */
/* Who answers at a name: the client side's check before it asks a server for descriptors. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* The refusal names the uid, so its message cannot be a constant.  One buffer per thread keeps
 * the library free of shared mutable state; it lives until the next refusal on this thread. */
static _Thread_local char refusal[128];

int afdt__trust_parse(const struct afdt_client_options *o, struct afdt__trust *t,
                      struct afdt__fail *f) {
    memset(t, 0, sizeof(*t));
    t->check = true;
    if (o == NULL)
        return 0;
    struct afdt_client_options c = {0};
    if (o->size < offsetof(struct afdt_client_options, flags) + sizeof(c.flags))
        return afdt__fail(f, AFDT_NO_OPERATION, EINVAL, "client options: size is not set");
    memcpy(&c, o, o->size < sizeof(c) ? o->size : sizeof(c));
    if (c.flags & ~AFDT_CLIENT_TRUST_ANY)
        return afdt__fail(f, AFDT_NO_OPERATION, EINVAL, "client options: unknown flags");
    if (c.n_trusted_uids > 0 && c.trusted_uids == NULL)
        return afdt__fail(f, AFDT_NO_OPERATION, EINVAL,
                          "client options: trusted_uids is NULL with n_trusted_uids > 0");
    t->check = (c.flags & AFDT_CLIENT_TRUST_ANY) == 0;
    t->uids = c.trusted_uids;
    t->n = c.n_trusted_uids;
    return 0;
}

static bool trusted(const struct afdt__trust *t, uint32_t uid) {
    if (t->n == 0)
        return uid == 0 || uid == (uint32_t)geteuid();
    for (uint32_t i = 0; i < t->n; i++)
        if (t->uids[i] == uid)
            return true;
    return false;
}

static int refuse(struct afdt__fail *f, const char *who, uint32_t uid) {
    snprintf(refusal, sizeof(refusal), "%s uid %u, which is not trusted: nothing was sent", who,
             (unsigned)uid);
    return afdt__fail(f, AFDT_PEER, EPERM, refusal);
}

int afdt__trust_name(const struct afdt__addr *a, const struct afdt__trust *t,
                     struct afdt__fail *f) {
    if (!t->check || a->abstract)
        return 0;
    struct stat st;
    if (lstat(a->sun.sun_path, &st) < 0) /* nothing there is for connect to report, as ever */
        return errno == ENOENT ? 0
                               : afdt__fail(f, AFDT_PEER, errno, "could not check the socket file");
    if (!S_ISSOCK(st.st_mode))
        return afdt__fail(f, AFDT_PEER, EPERM,
                          S_ISLNK(st.st_mode)
                              ? "the name is a symbolic link, not a socket: nothing was sent"
                              : "the name is not a socket: nothing was sent");
    if (!trusted(t, (uint32_t)st.st_uid))
        return refuse(f, "the socket file is owned by", (uint32_t)st.st_uid);
    return 0;
}

int afdt__trust_peer(int sock, const struct afdt__trust *t, struct afdt__fail *f) {
    if (!t->check)
        return 0;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return afdt__fail(f, AFDT_PEER, errno, "could not learn who the server is (SO_PEERCRED)");
    if (!trusted(t, (uint32_t)cred.uid))
        return refuse(f, "the server answering is", (uint32_t)cred.uid);
    return 0;
}
