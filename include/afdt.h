/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * afdt.h - pass open file descriptors between processes over Unix domain sockets.
 *
 * The first part of this header is the interface of libafdt 0.1 (2009): the same
 * names, values, signatures and wire format, so programs written for it build and
 * run unchanged.  The second part, after "Extensions", is new in libafdt 1.x.
 *
 * Wire format: one frame is a uint32_t payload length in host byte order, then
 * the payload (0 to AFDT_MSGLEN bytes), written by one sendmsg(2), with the
 * descriptors it carries attached as SCM_RIGHTS ancillary data.
 *
 * Every descriptor the library creates or receives is close-on-exec.  No call
 * raises SIGPIPE.  The only process-wide state is the closer thread's queue
 * (below), which is locked: the low-level and synchronous calls may run on
 * many threads at once; an event_base and the servers and clients on it
 * belong to the thread that runs its loop.  afdt_listen_fds() (with
 * unset_env) and afdt_get_listeners() change the environment, which no other
 * thread may use meanwhile.
 *
 * Descriptors from a peer that the library drops (beyond a receiver's room,
 * with a failed frame, sent with a request to a server) are closed without
 * changing them: their options belong to the sender's copy too.  A close that
 * could wait (a socket set to linger, a Unix socket, which may hold such a
 * socket in flight, a file on FUSE or a network file system, a device) is
 * made by one closer thread the library starts in the process on first need
 * (detached, every signal blocked; a child of fork() starts its own), so the
 * caller never waits for it; a descriptor may thus stay open a moment after
 * the call returns.  Should that thread fail to start, or 65,536 closes wait
 * for it, the close is made in the caller's thread.  A close that waits for a
 * FUSE server which never answers holds that thread (and the process's exit)
 * until the server ends.
 */
#ifndef AFDT_H
#define AFDT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(AFDT_BUILDING) && defined(__GNUC__)
#define AFDT_EXPORT __attribute__((visibility("default")))
#else
#define AFDT_EXPORT
#endif

/** The largest frame, its 4-byte length header included. */
#define AFDT_FULL_MSGLEN 0x200

/** The largest payload of one frame. */
#define AFDT_MSGLEN (AFDT_FULL_MSGLEN - sizeof(uint32_t))

/* Incomplete here: include <event2/event.h> (or <event.h>) and <sys/time.h>. */
struct event_base;
struct timeval;

/** The high-level step during which an error happened. */
enum afdt_phase {
    AFDT_NO_PHASE,
    AFDT_CREATE_SERVER,
    AFDT_ACCEPT_CLIENT,
    AFDT_HANDLE_REQUEST,
    AFDT_CREATE_CLIENT,
    AFDT_HANDLE_RESPONSE
};

/** The operation that failed.  New values are only ever appended. */
enum afdt_operation {
    AFDT_NO_OPERATION,
    AFDT_MALLOC,
    AFDT_SOCKET,
    AFDT_PATHNAME,
    AFDT_BIND,
    AFDT_LISTEN,
    AFDT_ACCEPT,
    AFDT_CONNECT,
    AFDT_FORMAT,
    AFDT_SENDMSG,
    AFDT_RECVMSG,
    AFDT_EVENT_BASE_SET,
    AFDT_EVENT_ADD,
    AFDT_POLL,
    AFDT_TIMEOUT,
    AFDT_PEER /* 1.1: the peer is not one the caller trusts (errno EPERM) */
};

/**
 * What went wrong.  @message is never NULL ("" when there is nothing to add)
 * and points to static storage (AFDT_PEER's, which names a uid, to storage of
 * the calling thread, valid until its next such refusal).  Every failing call
 * also leaves errno set: the failed system call's code, ETIMEDOUT for
 * AFDT_TIMEOUT, or 0 when no system error applies (a malformed frame, say).
 */
struct afdt_error_t {
    enum afdt_phase phase;
    enum afdt_operation operation;
    const char *message;
};

/** No phase, no operation, message "". */
AFDT_EXPORT extern const struct afdt_error_t AFDT_ERROR_T_INIT;

/** The enumerator's own name ("AFDT_CREATE_SERVER"), or "UNKNOWN". Never NULL. */
AFDT_EXPORT const char *afdt_phase_str(enum afdt_phase phase);

/** The enumerator's own name ("AFDT_BIND"), or "UNKNOWN". Never NULL. */
AFDT_EXPORT const char *afdt_operation_str(enum afdt_operation operation);

/* ---------------------------------------------------------------------------
 * Low-level interface.  These calls block or not as the caller's socket does.
 * They return >= 0 on success and < 0 on failure, with errno set and @err's
 * operation and message filled in (@err may be NULL).  As in 2009 they leave
 * err->phase as the caller set it (AFDT_NO_PHASE after AFDT_ERROR_T_INIT);
 * the synchronous client does the same.  A NULL buffer with a non-zero size,
 * or a NULL length pointer, fails with EINVAL.  On failure *content_len is
 * never larger than on entry and *received_fd is -1.
 * ------------------------------------------------------------------------- */

/**
 * Create a Unix stream socket bound to @fname and listening (backlog
 * SOMAXCONN).  @fname must not exist.  A name starting with '@' is a Linux
 * abstract socket (the rest of the name, no trailing NUL).
 *
 * Returns the listening socket (close-on-exec, blocking, owned by the caller).
 * Fails with AFDT_PATHNAME (ENAMETOOLONG: too long for sun_path; EINVAL: NULL
 * or empty), AFDT_SOCKET, AFDT_BIND (EADDRINUSE when @fname exists) or
 * AFDT_LISTEN.
 */
AFDT_EXPORT int afdt_listen(const char *fname, struct afdt_error_t *err);

/**
 * Connect a new Unix stream socket to the server at @fname ('@' = abstract).
 * Like any blocking Unix connect, it waits while the server's backlog is full
 * (afdt_sync_client() and afdt_create_client() bound that wait).
 *
 * Returns the connected socket (close-on-exec, blocking, owned by the caller).
 * Fails with AFDT_PATHNAME, AFDT_SOCKET or AFDT_CONNECT (the system's errno:
 * ENOENT, ECONNREFUSED, ...).
 */
AFDT_EXPORT int afdt_connect(const char *fname, struct afdt_error_t *err);

/**
 * Send one frame: @content_len bytes of @content, and @fd_to_send if it is
 * >= 0.  The caller keeps its own copy of @fd_to_send.  @content may be NULL
 * when @content_len is 0.  On a non-blocking socket with no room at all it
 * fails with AFDT_SENDMSG and EAGAIN; a frame once begun is finished.
 *
 * Fails with AFDT_FORMAT (errno 0) when @content_len > AFDT_MSGLEN (EINVAL when
 * @content is NULL and @content_len is not 0), with AFDT_SENDMSG (EBADF for a
 * bad @fd_to_send, EPIPE when the peer is gone, ETOOMANYREFS when this user
 * has too many descriptors in flight, ...), or AFDT_POLL while finishing a
 * frame already begun.
 */
AFDT_EXPORT int afdt_send_fd_msg(int connfd, const uint8_t *content, uint32_t content_len,
                                 int fd_to_send, struct afdt_error_t *err);

/** afdt_send_fd_msg() without a descriptor. */
AFDT_EXPORT int afdt_send_plain_msg(int connfd, const uint8_t *content, uint32_t content_len,
                                    struct afdt_error_t *err);

/**
 * Receive exactly one frame, and never a byte after it.  *content_len is the
 * size of @content on entry and the payload length on return; @content may be
 * NULL when *content_len is 0.  *received_fd is the descriptor that came with
 * the frame (close-on-exec, now owned by the caller) or -1.  Further
 * descriptors in the same frame are closed.
 *
 * On a non-blocking socket with no frame begun it fails with AFDT_RECVMSG and
 * EAGAIN; a frame once begun is finished before it returns.
 *
 * Fails with AFDT_RECVMSG (the system's errno; 0 at end of file; EMFILE when
 * the kernel dropped descriptors the call asked for because this process has
 * no room for them; dropping only the ones a call would close is no error),
 * AFDT_POLL, or AFDT_FORMAT (errno 0: the length exceeds AFDT_MSGLEN or
 * *content_len, or the stream ends inside the frame).  Every descriptor that
 * came with a failed frame is closed.  A frame within AFDT_MSGLEN but too big
 * for the buffer is consumed, so the stream stays in step.
 */
AFDT_EXPORT int afdt_recv_fd_msg(int connfd, uint8_t *content, uint32_t *content_len,
                                 int *received_fd, struct afdt_error_t *err);

/** afdt_recv_fd_msg() that closes any descriptor that arrives. */
AFDT_EXPORT int afdt_recv_plain_msg(int connfd, uint8_t *content, uint32_t *content_len,
                                    struct afdt_error_t *err);

/* ---------------------------------------------------------------------------
 * Asynchronous interface, on a libevent 2.x event_base.  One exchange is one
 * request frame from the client (no descriptor) and one response frame from
 * the server (with a descriptor, or not); then the server closes the
 * connection.
 * ------------------------------------------------------------------------- */

/**
 * Server callback for one request.  @response has room for *response_length
 * (AFDT_MSGLEN) bytes: write the response there and set *response_length to
 * its length (0 for none).  Return the descriptor to send, or < 0 for none.
 * The library never closes the returned descriptor.
 */
typedef int (*afdt_request_handler_t)(const uint8_t *request, uint32_t request_length,
                                      uint8_t *response, uint32_t *response_length, void *userdata);

/**
 * Client callback with the server's response.  @received_fd is the descriptor
 * that came with it (owned by the callback from now on), or < 0 for none.
 */
typedef void (*afdt_response_handler_t)(const uint8_t *response, uint32_t response_length,
                                        int received_fd, void *userdata);

/**
 * Server callback run after a response was sent and before control returns to
 * the loop; @sent_fd is what the request handler returned (a typical post
 * handler closes it).  As in libafdt 0.1, it runs only once the response is
 * sent: when the exchange fails after the request handler ran (the client
 * went away, the send failed or waited past the connection's deadline, the
 * connection was dropped to make room), the error handler is told instead
 * and @sent_fd stays the program's, unclosed.  A program that hands out a
 * descriptor made for one exchange, and must release it whatever happens,
 * uses afdt_create_server_ex(), whose post handler runs in every case with
 * the outcome.  (Calling this one on a failure would tell a server that its
 * descriptor was handed over when it was not.)
 */
typedef void (*afdt_post_handler_t)(const uint8_t *request, uint32_t request_length,
                                    const uint8_t *response, uint32_t response_length, int sent_fd,
                                    void *userdata);

/** Callback for errors.  The struct @err points to is valid during the call;
 * its message is static and outlives it; errno is set as described above. */
typedef void (*afdt_error_handler_t)(const struct afdt_error_t *err, void *userdata);

/** A post handler that does nothing. */
AFDT_EXPORT void afdt_no_post(const uint8_t *request, uint32_t request_length,
                              const uint8_t *response, uint32_t response_length, int sent_fd,
                              void *userdata);

/**
 * Serve descriptors at @fname (which must not exist) on the loop @eb.
 *
 * For each client the request handler, then (once the response is sent) the
 * post handler, are called; errors on one connection go to @error_handler
 * (phase AFDT_ACCEPT_CLIENT or AFDT_HANDLE_REQUEST) and never stop the server.
 * A bad client cannot hurt it: descriptors sent with a request are closed
 * (the request is answered as usual, and the error handler is told); each
 * connection has 10 seconds for its whole exchange; at most 1,024 connections are open, and when
 * full the oldest connection still waiting for its request is dropped (failing that, the oldest
 * whose response waits on its client); when out of descriptors, such a connection gives its
 * place to the next one waiting, and with none the server pauses accepting for at most 100 ms
 * at a time.
 *
 * @post_handler may be NULL (as afdt_no_post).  @out_close_handle, if not
 * NULL, receives the handle for afdt_close_server().  Returns >= 0 on
 * success.  On failure calls @error_handler (phase AFDT_CREATE_SERVER;
 * operation AFDT_PATHNAME, AFDT_SOCKET, AFDT_BIND, AFDT_LISTEN, AFDT_MALLOC or
 * AFDT_EVENT_ADD; AFDT_EVENT_BASE_SET with EINVAL when @eb or @request_handler
 * is NULL, or with ENOMEM when libevent cannot make its events) and returns
 * < 0 with errno set.  With a NULL @error_handler it
 * returns -1 and EINVAL.
 */
AFDT_EXPORT int afdt_create_server(const char *fname, struct event_base *eb,
                                   afdt_request_handler_t request_handler,
                                   afdt_post_handler_t post_handler,
                                   afdt_error_handler_t error_handler, void **out_close_handle,
                                   void *userdata);

/**
 * Stop accepting and close the listening socket.  Exchanges in progress finish
 * normally, including the one whose callback is calling this: its response is
 * still sent.  Once none is left the server holds no event in the loop and its
 * memory is freed.  May be called from inside any of the server's callbacks.
 * The handle must not be used again.  Returns 0, or -1 with EINVAL for NULL.
 */
AFDT_EXPORT int afdt_close_server(void *close_handle);

/**
 * Ask the server at @fname for a descriptor, without blocking the loop:
 * connect (retried while the server's backlog is full), send @request, and
 * wait for the response.  Exactly one of @response_handler and
 * @error_handler is called, once, from the loop, unless @timeout is NULL and
 * the server never answers.  @timeout covers the whole exchange, connect
 * included; it reports AFDT_TIMEOUT (ETIMEDOUT) in phase AFDT_HANDLE_RESPONSE.
 * Every failure reported from the loop has phase AFDT_HANDLE_RESPONSE (a
 * connect still being retried, the send, the receive); the request is
 * copied, so @request need not outlive the call.  The connection is the
 * library's: it closes it as soon as the handler returns.
 *
 * Returns >= 0 when the exchange is under way.  A failure here (bad arguments,
 * AFDT_PATHNAME, AFDT_SOCKET, AFDT_CONNECT, AFDT_SENDMSG, AFDT_FORMAT for a
 * request longer than AFDT_MSGLEN, AFDT_MALLOC, AFDT_EVENT_ADD) calls
 * @error_handler with phase AFDT_CREATE_CLIENT before returning < 0.
 */
AFDT_EXPORT int afdt_create_client(const char *fname, struct event_base *eb, const uint8_t *request,
                                   uint32_t request_length,
                                   afdt_response_handler_t response_handler,
                                   afdt_error_handler_t error_handler,
                                   const struct timeval *timeout, void *userdata);

/* ---------------------------------------------------------------------------
 * Synchronous client.
 * ------------------------------------------------------------------------- */

/**
 * One blocking exchange with the server at @fname.  @timeout (NULL: wait
 * forever; a tv_usec of a million or more counts in full) covers the whole
 * exchange.  *response_length is the size of @response on entry and the
 * payload length on return; @response may be NULL when it is 0.
 * *received_fd is the descriptor received (owned by the caller) or -1.
 *
 * Returns >= 0 on success; < 0 on failure with errno set and @err's
 * operation and message filled in (its phase left as the caller set it, as
 * in 2009): the operations of afdt_connect(), afdt_send_fd_msg() and
 * afdt_recv_fd_msg(), AFDT_POLL, or AFDT_TIMEOUT with ETIMEDOUT.
 * The connection is closed on every path.
 */
AFDT_EXPORT int afdt_sync_client(const char *fname, const uint8_t *request, uint32_t request_length,
                                 uint8_t *response, uint32_t *response_length, int *received_fd,
                                 const struct timeval *timeout, struct afdt_error_t *err);

/* ===========================================================================
 * Extensions (libafdt 1.x).  Nothing above changes meaning.
 * ========================================================================= */

/** The most descriptors one frame can carry (the kernel's SCM_MAX_FD). */
#define AFDT_MAX_FDS 253

/**
 * Send one frame carrying @nfds (0 to AFDT_MAX_FDS) descriptors from @fds.
 * The caller keeps its copies.  A 2009 receiver (control room for
 * one descriptor) gets the first descriptor of such a frame and its kernel
 * drops the rest.  Fails as afdt_send_fd_msg(), and
 * with AFDT_FORMAT (EINVAL) when @nfds > AFDT_MAX_FDS or @fds is NULL while
 * @nfds > 0.
 */
AFDT_EXPORT int afdt_send_fds_msg(int connfd, const uint8_t *content, uint32_t content_len,
                                  const int *fds, uint32_t nfds, struct afdt_error_t *err);

/**
 * Receive one frame and up to *nfds descriptors into @fds.  *nfds is the
 * capacity of @fds on entry (at most AFDT_MAX_FDS is used) and the count
 * received on return; the caller owns them.  More descriptors than the
 * capacity is an AFDT_FORMAT error (errno EMSGSIZE) with every received
 * descriptor closed.  Otherwise fails as afdt_recv_fd_msg(); on failure *nfds
 * is 0.
 */
AFDT_EXPORT int afdt_recv_fds_msg(int connfd, uint8_t *content, uint32_t *content_len, int *fds,
                                  uint32_t *nfds, struct afdt_error_t *err);

/* ---------------------------------------------------------------------------
 * The extended server: who is asking, policy, limits, many descriptors.
 * ------------------------------------------------------------------------- */

/** The peer of a connection, from SO_PEERCRED when it connected. */
struct afdt_peer {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
};

/** The longest descriptor name in a named set (as systemd's FDNAME). */
#define AFDT_NAME_MAX 255

/** One descriptor of a named set, and its name (1 to AFDT_NAME_MAX printable
 * ASCII bytes, no ':', NUL-terminated, as LISTEN_FDNAMES can carry it). */
struct afdt_named_fd {
    int fd;
    char name[AFDT_NAME_MAX + 1];
};

/**
 * What the extended request handler answers.  On entry @content has room for
 * AFDT_MSGLEN bytes and @content_length is 0; @fds has room for AFDT_MAX_FDS
 * and @nfds is 0; @named is NULL.  Set @content_length and @nfds for a single
 * response frame carrying up to AFDT_MAX_FDS descriptors (a 2009 client gets
 * the first).  Or point @named at @nnamed named descriptors (any number): the
 * response is then sent as a named set, in as many frames as it takes, and the
 * post handler runs only once the client has acknowledged all of it.  The
 * library never closes these descriptors; @named must stay valid until the
 * post handler has run for this connection (it always runs, on failure too).
 * @content and @fds may also be pointed at the handler's own buffers, which
 * must then stay valid until the post handler runs.  Only the extended
 * clients of 1.1 understand a named set: one is sent only to a client that
 * asks for it after the offer (a 2009 or 1.0 client takes the offer for the
 * whole answer and is sent no descriptor; the post handler then runs with an
 * error).
 */
struct afdt_reply {
    uint8_t *content;
    uint32_t content_length;
    int *fds;
    uint32_t nfds;
    const struct afdt_named_fd *named;
    uint32_t nnamed;
};

/** Return non-zero to let @peer in.  A refused peer is sent
 * AFDT_REFUSED_RESPONSE with no descriptor, and the error handler is told
 * (AFDT_HANDLE_REQUEST, AFDT_NO_OPERATION, EACCES). */
typedef int (*afdt_authorize_t)(const struct afdt_peer *peer, void *userdata);

/** The payload a refused peer receives (without its NUL). */
#define AFDT_REFUSED_RESPONSE "afdt:refused"

/** Extended request handler: fill @reply and return 0, or return < 0 to close
 * the connection without an answer. */
typedef int (*afdt_request_ex_handler_t)(const struct afdt_peer *peer, const uint8_t *request,
                                         uint32_t request_length, struct afdt_reply *reply,
                                         void *userdata);

/**
 * Extended post handler: runs once for every reply the request handler
 * filled, with that reply, when the exchange is over: @error is 0 once the
 * reply was sent (for a named set: once the client acknowledged all of it),
 * or the errno of the failure (EPROTO when none applies) after the error
 * handler was told.  Either way the server may now release what the reply
 * refers to (its descriptors, its named set).
 */
typedef void (*afdt_post_ex_handler_t)(const struct afdt_peer *peer, const uint8_t *request,
                                       uint32_t request_length, const struct afdt_reply *reply,
                                       int error, void *userdata);

/** Replace a stale socket file (one nobody listens on: connecting is refused
 * twice, 20 ms apart).  Servers replacing at once take turns on an flock(2)
 * of "<name>.lock" beside it, which exists only while one is replacing, so a
 * live server's file is never removed. */
#define AFDT_SERVER_REPLACE_STALE 0x1u
/** Leave the socket file in place on afdt_close_server() (by default it is
 * removed if it is still the one this server bound). */
#define AFDT_SERVER_KEEP_FILE 0x2u

/**
 * Options of afdt_create_server_ex().  Zero everything, set @size to
 * sizeof(struct afdt_server_options), then set what you need: a zero field
 * means its default.  Later versions only append fields; the library reads
 * only the first @size bytes.
 */
struct afdt_server_options {
    uint32_t size;
    uint32_t flags;           /* AFDT_SERVER_* */
    uint32_t socket_mode;     /* permission bits of the socket file; 0: from the umask */
    uint32_t conn_timeout_ms; /* time a connection has for its exchange; 0: 10,000 */
    uint32_t max_conns;       /* open connections at most; 0: 1,024 */
    uint32_t n_allowed_uids;  /* if not 0, only these uids are let in */
    const uint32_t *allowed_uids;
    afdt_authorize_t authorize;                /* then this decides, if set */
    afdt_request_ex_handler_t request_handler; /* required */
    afdt_post_ex_handler_t post_handler;       /* may be NULL */
    afdt_error_handler_t error_handler;        /* required */
    void *userdata;
};

/**
 * afdt_create_server() with options.  Returns >= 0 and sets
 * *out_close_handle (if not NULL) for afdt_close_server().  Fails as
 * afdt_create_server() does, and with AFDT_NO_OPERATION and EINVAL for a
 * NULL request handler; with a NULL @opts or error handler, or a @size too
 * small to hold them, it returns -1 and EINVAL without a callback.
 */
AFDT_EXPORT int afdt_create_server_ex(const char *fname, struct event_base *eb,
                                      const struct afdt_server_options *opts,
                                      void **out_close_handle);

/** afdt_close_server_ex() flag: end the exchanges in flight now instead of
 * letting them finish. */
#define AFDT_CLOSE_ABORT 0x1u

/** Called once a closed server has nothing left in its loop. */
typedef void (*afdt_close_done_t)(void *userdata);

/**
 * afdt_close_server() that also says when the server is gone.  Stops
 * accepting and closes the listening socket; with AFDT_CLOSE_ABORT, every
 * exchange in flight ends at the loop's next turn (its client's connection is
 * closed; the error handler is told, phase AFDT_HANDLE_REQUEST, operation
 * AFDT_NO_OPERATION, ECANCELED; an extended post handler runs with
 * ECANCELED; a 2009 post handler does not run, its descriptor stays the
 * program's), else they finish as with afdt_close_server().  Then, once the
 * server holds no event in the loop and its memory is freed, @done (if not
 * NULL) is called once with @userdata: from inside this call when nothing was
 * in flight, else from the loop.  It may free what the handlers used; free the
 * event_base itself only after its loop returned.  May be called from inside
 * any of the server's callbacks.  Returns 0, or -1 with EINVAL for a NULL or
 * closed handle or an unknown flag (then nothing is done).
 */
AFDT_EXPORT int afdt_close_server_ex(void *close_handle, unsigned flags, afdt_close_done_t done,
                                     void *userdata);

/* ---------------------------------------------------------------------------
 * Named descriptor sets: any number of descriptors, each with a name, sent as
 * a sequence of frames: offered, asked for by the receiver, sent a few
 * frames at a time and acknowledged (protocol version 2, "AFDTNAMED2",
 * documented in afdt_named_fds(3); version 1 is still received).
 * ------------------------------------------------------------------------- */

/**
 * Send @n named descriptors from @set (and @content_len <= AFDT_MSGLEN - 14
 * bytes of @content) on the connected socket @connfd, then wait for the
 * receiver to acknowledge that it has all of them.  The caller keeps its
 * descriptors.  Blocks until done (even on a non-blocking socket).  At most
 * 505 descriptors of the set are in flight at a time, and ETOOMANYREFS (this
 * user has too many in flight) is waited out for up to 10 s in a row.
 *
 * Returns 0 once acknowledged.  Fails with AFDT_FORMAT (EINVAL: a bad name,
 * NULL @set, too long @content; 0: a bad acknowledgement), AFDT_SENDMSG,
 * AFDT_RECVMSG (0: the receiver hung up without asking for the set, and got
 * none of it, or before acknowledging all of it) or AFDT_POLL; the receiver
 * may then have some of them.
 */
AFDT_EXPORT int afdt_send_named_fds(int connfd, const uint8_t *content, uint32_t content_len,
                                    const struct afdt_named_fd *set, uint32_t n,
                                    struct afdt_error_t *err);

/**
 * Receive a named set sent by afdt_send_named_fds() (or by an extended
 * server), and acknowledge it.  *content_len is the size of @content on entry
 * and the length of the set's content on return.  On success *ret_set is a
 * malloc'd array of *ret_n entries whose descriptors (close-on-exec) the
 * caller owns: release it with afdt_named_fds_free().  Before taking
 * descriptors it checks that the process has room for them under
 * RLIMIT_NOFILE.
 *
 * Fails with AFDT_FORMAT (errno 0: not a named set, a malformed frame, a bad
 * name, a count that disagrees), AFDT_RECVMSG (EMFILE: no room for the
 * descriptors, before any arrives, or the kernel dropped some; 0: end of
 * file), AFDT_MALLOC, AFDT_SENDMSG or AFDT_POLL; every descriptor received is
 * closed and *ret_set, *ret_n are left as they were.
 */
AFDT_EXPORT int afdt_recv_named_fds(int connfd, uint8_t *content, uint32_t *content_len,
                                    struct afdt_named_fd **ret_set, uint32_t *ret_n,
                                    struct afdt_error_t *err);

/** Free a set from afdt_recv_named_fds() or an extended client, closing its
 * descriptors first if @close_fds is non-zero.  NULL is fine. */
AFDT_EXPORT void afdt_named_fds_free(struct afdt_named_fd *set, uint32_t n, int close_fds);

/** The descriptor named @name in @set, or -1. */
AFDT_EXPORT int afdt_named_fds_find(const struct afdt_named_fd *set, uint32_t n, const char *name);

/* ---------------------------------------------------------------------------
 * Extended clients: many descriptors, or a named set, in the response.
 * ------------------------------------------------------------------------- */

/**
 * What an extended client received.  @fds/@nfds: the descriptors of a single
 * response frame.  @named/@nnamed: a named set, if the server sent one (then
 * @nfds is 0).  The receiver owns every descriptor; free @named with
 * afdt_named_fds_free().
 */
struct afdt_response {
    uint8_t *content;
    uint32_t content_length;
    int *fds;
    uint32_t nfds;
    struct afdt_named_fd *named;
    uint32_t nnamed;
};

/**
 * afdt_sync_client() that takes a single frame of up to *nfds descriptors
 * (capacity on entry, count on return) or a named set (when @ret_named is not
 * NULL; then *ret_named and *ret_nnamed are set, or NULL and 0 for a plain
 * response).  Fails as afdt_sync_client() and afdt_recv_named_fds(); more
 * descriptors than *nfds is AFDT_FORMAT (EMSGSIZE); a named set while
 * @ret_named is NULL is AFDT_FORMAT.  On failure no descriptor is left open
 * and *nfds is 0.
 */
AFDT_EXPORT int afdt_sync_client_ex(const char *fname, const uint8_t *request,
                                    uint32_t request_length, uint8_t *response,
                                    uint32_t *response_length, int *fds, uint32_t *nfds,
                                    struct afdt_named_fd **ret_named, uint32_t *ret_nnamed,
                                    const struct timeval *timeout, struct afdt_error_t *err);

/** Extended response handler: owns every descriptor in @resp, and @resp->named. */
typedef void (*afdt_response_ex_handler_t)(struct afdt_response *resp, void *userdata);

/**
 * afdt_create_client() whose response may carry up to AFDT_MAX_FDS
 * descriptors, or a named set of any size (acknowledged to the server once
 * all of it is in).  Same callbacks rules and errors as afdt_create_client().
 */
AFDT_EXPORT int afdt_create_client_ex(const char *fname, struct event_base *eb,
                                      const uint8_t *request, uint32_t request_length,
                                      afdt_response_ex_handler_t response_handler,
                                      afdt_error_handler_t error_handler,
                                      const struct timeval *timeout, void *userdata);

/* ---------------------------------------------------------------------------
 * Whom a client takes descriptors from (libafdt 1.1).
 * ------------------------------------------------------------------------- */

/** Trust whoever answers: no check (what the 2009 calls and the 1.0 extended clients do). */
#define AFDT_CLIENT_TRUST_ANY 0x1u

/**
 * Options of the clients that check who answers before asking for anything.
 * Zero everything, set @size to sizeof(struct afdt_client_options), then set
 * what you need; a NULL options pointer means all defaults.  Later versions
 * only append fields; the library reads only the first @size bytes.
 *
 * The check, made before a single byte of the request is sent: for a path,
 * the name must be a socket file (not a symbolic link, not another kind of
 * file) whose owner is trusted; for any name, the uid of the process that
 * listens there (SO_PEERCRED of the connected socket) must be trusted.
 * Abstract names (@name) have no owner, so only the second applies.  A
 * refusal fails with AFDT_PEER and EPERM, and a message naming the uid; the
 * peer sees a connection and nothing else.
 */
struct afdt_client_options {
    uint32_t size;
    uint32_t flags;               /* AFDT_CLIENT_TRUST_ANY, or 0 */
    uint32_t n_trusted_uids;      /* 0: the caller's effective uid and root (0) */
    const uint32_t *trusted_uids; /* else exactly these uids (list your own if you trust it) */
};

/**
 * afdt_sync_client_ex() that checks who answers first, as @opts says (NULL:
 * the caller's own effective uid and root are trusted).  Fails as
 * afdt_sync_client_ex(), with AFDT_PEER (EPERM; or getsockopt's errno when
 * the peer cannot be known) for a server it does not trust, and with
 * AFDT_NO_OPERATION (EINVAL) for malformed options.  afdt_sync_client() and
 * afdt_sync_client_ex() make no such check.
 */
AFDT_EXPORT int afdt_sync_client_opts(const char *fname, const uint8_t *request,
                                      uint32_t request_length, uint8_t *response,
                                      uint32_t *response_length, int *fds, uint32_t *nfds,
                                      struct afdt_named_fd **ret_named, uint32_t *ret_nnamed,
                                      const struct timeval *timeout,
                                      const struct afdt_client_options *opts,
                                      struct afdt_error_t *err);

/**
 * afdt_create_client_ex() that checks who answers first, as @opts says
 * (NULL: the caller's own effective uid and root are trusted).  A refusal is
 * reported as any other failure: AFDT_PEER (EPERM) in phase
 * AFDT_CREATE_CLIENT when the connection was made inside this call (the
 * usual case; it then returns < 0), else in AFDT_HANDLE_RESPONSE from the
 * loop.  Malformed options fail here with AFDT_NO_OPERATION (EINVAL).
 * afdt_create_client() and afdt_create_client_ex() make no such check.
 */
AFDT_EXPORT int afdt_create_client_opts(const char *fname, struct event_base *eb,
                                        const uint8_t *request, uint32_t request_length,
                                        afdt_response_ex_handler_t response_handler,
                                        afdt_error_handler_t error_handler,
                                        const struct timeval *timeout,
                                        const struct afdt_client_options *opts, void *userdata);

/* ---------------------------------------------------------------------------
 * Checking what arrived.
 * ------------------------------------------------------------------------- */

/**
 * What afdt_check_socket() expects.  Zero it, set @size to
 * sizeof(struct afdt_socket_expect), then set what matters; zero fields
 * match anything.  Later versions only append fields.
 */
struct afdt_socket_expect {
    uint32_t size;
    int type;          /* SOCK_STREAM, SOCK_DGRAM, ...; 0: any */
    int family;        /* AF_INET, AF_INET6, AF_UNIX, ...; 0: any */
    int listening;     /* 1: must be listening, -1: must not be, 0: either */
    const void *addr;  /* a struct sockaddr the local address must equal; NULL: any */
    uint32_t addr_len; /* its length */
};

/**
 * Check that @fd is a socket as @want describes, before trusting it.
 * Addresses compare by family: IPv4 and IPv6 by address and port, Unix
 * sockets by path or abstract name.  Returns 0 when it matches; otherwise
 * -1 with AFDT_NO_OPERATION and errno ENOTSOCK (not a socket, or closed:
 * EBADF), EPROTOTYPE (type), EAFNOSUPPORT (family), EINVAL (listening or
 * not), EADDRNOTAVAIL (local address), and a message saying which.
 */
AFDT_EXPORT int afdt_check_socket(int fd, const struct afdt_socket_expect *want,
                                  struct afdt_error_t *err);

/* ---------------------------------------------------------------------------
 * "My listening sockets, by name": from systemd-style socket activation, from
 * a running predecessor, or by binding them.
 * ------------------------------------------------------------------------- */

/**
 * Open a socket as @spec says: "tcp:HOST:PORT" or "udp:HOST:PORT" (HOST a
 * name or a numeric address, "[::1]" for IPv6, empty or "*" for any IPv4
 * address), or "unix:PATH" ("unix:@NAME" for an abstract name; a stale file
 * at PATH is replaced, under a lock).  TCP and Unix sockets listen (backlog
 * SOMAXCONN, TCP with SO_REUSEADDR).  Returns the socket (close-on-exec,
 * owned by the caller), or < 0 with AFDT_PATHNAME (EINVAL: malformed spec;
 * EADDRNOTAVAIL: HOST does not resolve), AFDT_SOCKET, AFDT_BIND or
 * AFDT_LISTEN.
 */
AFDT_EXPORT int afdt_open_spec(const char *spec, struct afdt_error_t *err);

/** Whether @spec is well formed and its HOST resolves: 0, or < 0 with
 * AFDT_PATHNAME (EINVAL or EADDRNOTAVAIL).  Opens nothing. */
AFDT_EXPORT int afdt_parse_spec(const char *spec, struct afdt_error_t *err);

/**
 * Check that @fd is the socket @spec describes (type, family, listening,
 * and address; a port of 0 matches any port).  Returns 0, or < 0 as
 * afdt_check_socket() (or AFDT_PATHNAME for a malformed spec).
 */
AFDT_EXPORT int afdt_check_spec(int fd, const char *spec, struct afdt_error_t *err);

/**
 * The descriptors passed by socket activation: when LISTEN_PID is this
 * process, LISTEN_FDS descriptors from 3 on, named by LISTEN_FDNAMES (or
 * "unknown").  They are made close-on-exec.  With @unset_env the three
 * variables are removed, so children do not see them.
 *
 * Returns the count (0 when the variables are absent or for another process;
 * then *ret_set is NULL) and sets *ret_set to a malloc'd array the caller
 * owns (afdt_named_fds_free()).  Fails with AFDT_FORMAT (EINVAL) for
 * malformed variables or a descriptor that is not open, closing none (which
 * of 3.. are the program's is then unknown, as with sd_listen_fds(3)), or
 * with AFDT_MALLOC, closing the descriptors passed (checked first).  With
 * @unset_env it modifies the environment: not to be called while another
 * thread may read or change it (getenv, setenv).
 */
AFDT_EXPORT int afdt_listen_fds(int unset_env, struct afdt_named_fd **ret_set,
                                struct afdt_error_t *err);

/** Where afdt_get_listeners() found sockets (bits of *ret_sources). */
#define AFDT_FROM_LISTEN_FDS 0x1u
#define AFDT_FROM_PREDECESSOR 0x2u
#define AFDT_FROM_BIND 0x4u

/** The request afdt_get_listeners() sends a predecessor, which answers with
 * a named set (as the `afdt` supervisor does). */
#define AFDT_LISTENERS_REQUEST "listeners"

/**
 * The program's listening sockets, one per @names[i], each described by
 * @specs[i]: taken from socket activation (LISTEN_FDS, matched by name, else
 * the first unclaimed one that matches the spec, since systemd names sockets
 * after their unit unless FileDescriptorName= is set; the variables are then
 * removed from the environment, so no other thread may read or change the
 * environment during the call), else from a running predecessor serving a
 * named set at @predecessor (if not NULL; asked AFDT_LISTENERS_REQUEST with
 * @timeout), else opened with afdt_open_spec().  Every socket taken over is
 * checked against its spec first.  Descriptors passed or sent that no name
 * asks for are closed.  The predecessor is asked only if it is trusted, as
 * afdt_sync_client_opts() checks with default options: it must run as the
 * caller's effective uid or as root (and for a path, the socket file must be
 * owned by one of them).  Another user answering there fails the call with
 * AFDT_PEER and EPERM, without asking it anything or binding in its place;
 * libafdt 1.0 asked whoever answered.
 *
 * On success returns @n, sets *ret_set to a malloc'd array in the order of
 * @names (the caller owns it: afdt_named_fds_free()) and *ret_sources to the
 * AFDT_FROM_* bits used.  On failure nothing is left open; the error is the
 * failing step's (afdt_check_spec(), afdt_open_spec(), ...).
 */
AFDT_EXPORT int afdt_get_listeners(const char *const *names, const char *const *specs, uint32_t n,
                                   const char *predecessor, const struct timeval *timeout,
                                   struct afdt_named_fd **ret_set, uint32_t *ret_sources,
                                   struct afdt_error_t *err);

/**
 * afdt_get_listeners() that asks the predecessor only if @opts trusts it
 * (NULL: the default, as afdt_get_listeners(); a list of trusted uids; or
 * AFDT_CLIENT_TRUST_ANY).  Fails as afdt_get_listeners(), and with
 * AFDT_NO_OPERATION (EINVAL) for malformed options.
 */
AFDT_EXPORT int afdt_get_listeners_ex(const char *const *names, const char *const *specs,
                                      uint32_t n, const char *predecessor,
                                      const struct timeval *timeout,
                                      const struct afdt_client_options *opts,
                                      struct afdt_named_fd **ret_set, uint32_t *ret_sources,
                                      struct afdt_error_t *err);

/* ---------------------------------------------------------------------------
 * Taking the listening sockets of a running process that never offered them
 * (Linux 5.6 or later: pidfd_getfd(2)).
 * ------------------------------------------------------------------------- */

/**
 * Copy the listening sockets of the running process @pid, one for each
 * @names[i], the first of its sockets that @specs[i] describes (as
 * afdt_check_spec() matches; a port of 0 matches any port), never one socket
 * for two names.  The process is not told and keeps its copies: it goes on
 * accepting until the caller signals it to stop.  It needs the same user as
 * the caller and must be dumpable, or the caller needs CAP_SYS_PTRACE (the
 * kernel's PTRACE_MODE_ATTACH check).
 *
 * On success returns @n and sets *ret_set to a malloc'd array in the order of
 * @names whose descriptors (close-on-exec) the caller owns:
 * afdt_named_fds_free().  On failure nothing is left open and *ret_set is
 * left as it was: AFDT_PATHNAME (EINVAL: @n is 0, a NULL argument, a bad
 * name; or a malformed spec, as afdt_parse_spec()), AFDT_MALLOC, or
 * AFDT_NO_OPERATION with ESRCH (no such process, or it exited), EPERM (no
 * access to its descriptors), ENOSYS (the kernel is older than 5.6),
 * EADDRNOTAVAIL (no socket of the process matches some spec), or another
 * errno of pidfd_open(2) or pidfd_getfd(2) (EMFILE...).
 */
AFDT_EXPORT int afdt_take_listeners(int32_t pid, const char *const *names, const char *const *specs,
                                    uint32_t n, struct afdt_named_fd **ret_set,
                                    struct afdt_error_t *err);

/**
 * afdt_take_listeners() from the process @pidfd refers to (pidfd_open(2)), so
 * a caller that checked who the process is can be sure it takes from that
 * one even if its pid is reused.  The caller keeps @pidfd.  Fails as
 * afdt_take_listeners(), and with EBADF when @pidfd is not a pidfd.
 */
AFDT_EXPORT int afdt_take_listeners_pidfd(int pidfd, const char *const *names,
                                          const char *const *specs, uint32_t n,
                                          struct afdt_named_fd **ret_set, struct afdt_error_t *err);

#ifdef __cplusplus
}
#endif

#endif /* AFDT_H */
