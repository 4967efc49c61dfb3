/* SPDX-License-Identifier: BSD-3-Clause */
/* The compatible header's constants, enums, error struct and name functions. */

/* afdt.h comes first, alone, to prove it compiles with nothing before it. */
#include "afdt.h"

/* The contract says afdt.h includes only <stdint.h>: a program must include
 * <sys/time.h> and libevent itself.  These are glibc's and libevent's include
 * guards; if one is already defined, the header pulled in more than it may. */
#if defined(_SYS_TIME_H) || defined(_SYS_SOCKET_H) || defined(_STDIO_H) ||                         \
    defined(EVENT2_EVENT_H_INCLUDED_) || defined(EVENT1_EVENT_H_INCLUDED_)
#error "afdt.h includes more than <stdint.h>"
#endif

/* Only pointers to these may appear in the header, so it must compile with
 * them incomplete: this declaration would fail if the header used them by
 * value. */
static struct timeval *incomplete_timeval_is_enough;
static struct event_base *incomplete_event_base_is_enough;

#include <errno.h>
#include <stddef.h>

#include "harness.h"

/* The enum values are wire- and ABI-visible (2009 programs compare them), so
 * they are also checked at compile time. */
_Static_assert(AFDT_NO_PHASE == 0, "phase order");
_Static_assert(AFDT_HANDLE_RESPONSE == 5, "phase order");
_Static_assert(AFDT_NO_OPERATION == 0, "operation order");
_Static_assert(AFDT_TIMEOUT == 14, "operation order");
_Static_assert(AFDT_PEER == 15, "operations are only appended");
_Static_assert(AFDT_FULL_MSGLEN == 0x200, "frame size");
_Static_assert(AFDT_MSGLEN == 508, "payload size");

/* Every compatible function and callback type keeps its exact 2009 type:
 * _Generic selects by type compatibility, so a drifted parameter or return
 * type fails the build instead of surfacing as an ABI break. */
#define HAS_TYPE(expr, type) _Generic((expr), type : 1, default : 0)
_Static_assert(HAS_TYPE(&afdt_phase_str, const char *(*)(enum afdt_phase)), "phase_str");
_Static_assert(HAS_TYPE(&afdt_operation_str, const char *(*)(enum afdt_operation)),
               "operation_str");
_Static_assert(HAS_TYPE(&afdt_listen, int (*)(const char *, struct afdt_error_t *)), "listen");
_Static_assert(HAS_TYPE(&afdt_connect, int (*)(const char *, struct afdt_error_t *)), "connect");
_Static_assert(HAS_TYPE(&afdt_send_fd_msg,
                        int (*)(int, const uint8_t *, uint32_t, int, struct afdt_error_t *)),
               "send_fd_msg");
_Static_assert(HAS_TYPE(&afdt_send_plain_msg,
                        int (*)(int, const uint8_t *, uint32_t, struct afdt_error_t *)),
               "send_plain_msg");
_Static_assert(HAS_TYPE(&afdt_recv_fd_msg,
                        int (*)(int, uint8_t *, uint32_t *, int *, struct afdt_error_t *)),
               "recv_fd_msg");
_Static_assert(HAS_TYPE(&afdt_recv_plain_msg,
                        int (*)(int, uint8_t *, uint32_t *, struct afdt_error_t *)),
               "recv_plain_msg");
_Static_assert(HAS_TYPE((afdt_request_handler_t)0,
                        int (*)(const uint8_t *, uint32_t, uint8_t *, uint32_t *, void *)),
               "request handler");
_Static_assert(HAS_TYPE((afdt_response_handler_t)0,
                        void (*)(const uint8_t *, uint32_t, int, void *)),
               "response handler");
_Static_assert(HAS_TYPE((afdt_post_handler_t)0, void (*)(const uint8_t *, uint32_t, const uint8_t *,
                                                         uint32_t, int, void *)),
               "post handler");
_Static_assert(HAS_TYPE((afdt_error_handler_t)0, void (*)(const struct afdt_error_t *, void *)),
               "error handler");
_Static_assert(HAS_TYPE(&afdt_no_post, afdt_post_handler_t), "no_post");
_Static_assert(HAS_TYPE(&afdt_create_server,
                        int (*)(const char *, struct event_base *, afdt_request_handler_t,
                                afdt_post_handler_t, afdt_error_handler_t, void **, void *)),
               "create_server");
_Static_assert(HAS_TYPE(&afdt_close_server, int (*)(void *)), "close_server");
_Static_assert(HAS_TYPE(&afdt_create_client,
                        int (*)(const char *, struct event_base *, const uint8_t *, uint32_t,
                                afdt_response_handler_t, afdt_error_handler_t,
                                const struct timeval *, void *)),
               "create_client");
_Static_assert(HAS_TYPE(&afdt_sync_client,
                        int (*)(const char *, const uint8_t *, uint32_t, uint8_t *, uint32_t *,
                                int *, const struct timeval *, struct afdt_error_t *)),
               "sync_client");
_Static_assert(HAS_TYPE(&AFDT_ERROR_T_INIT, const struct afdt_error_t *), "AFDT_ERROR_T_INIT");

TEST(header_declares_every_2009_symbol_callable) {
    /* The types were checked at compile time; this proves each name links
     * to a symbol the library exports. */
    typedef void (*any_fn)(void);
    const any_fn fns[] = {
        (any_fn)afdt_phase_str,     (any_fn)afdt_operation_str,  (any_fn)afdt_listen,
        (any_fn)afdt_connect,       (any_fn)afdt_send_fd_msg,    (any_fn)afdt_send_plain_msg,
        (any_fn)afdt_recv_fd_msg,   (any_fn)afdt_recv_plain_msg, (any_fn)afdt_no_post,
        (any_fn)afdt_create_server, (any_fn)afdt_close_server,   (any_fn)afdt_create_client,
        (any_fn)afdt_sync_client,
    };
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
        CHECK(fns[i] != NULL);
    CHECK(&AFDT_ERROR_T_INIT != NULL);
    CHECK(incomplete_timeval_is_enough == NULL && incomplete_event_base_is_enough == NULL);
}

TEST(frame_size_constants_match_2009) {
    CHECK_INT(AFDT_FULL_MSGLEN, ==, 0x200);
    CHECK_INT(AFDT_FULL_MSGLEN, ==, 512);
    CHECK_INT(AFDT_MSGLEN, ==, 508);
    CHECK_INT(AFDT_MSGLEN, ==, AFDT_FULL_MSGLEN - sizeof(uint32_t));
    CHECK_INT(AFDT_MAX_FDS, ==, 253);
}

TEST(phase_enumerators_have_2009_values_in_order_from_zero) {
    const enum afdt_phase all[] = {AFDT_NO_PHASE,       AFDT_CREATE_SERVER, AFDT_ACCEPT_CLIENT,
                                   AFDT_HANDLE_REQUEST, AFDT_CREATE_CLIENT, AFDT_HANDLE_RESPONSE};
    CHECK_INT(sizeof(all) / sizeof(all[0]), ==, 6);
    for (int i = 0; i < 6; i++)
        CHECK_INT(all[i], ==, i);
    CHECK_INT(AFDT_NO_PHASE, ==, 0);
    CHECK_INT(AFDT_CREATE_SERVER, ==, 1);
    CHECK_INT(AFDT_ACCEPT_CLIENT, ==, 2);
    CHECK_INT(AFDT_HANDLE_REQUEST, ==, 3);
    CHECK_INT(AFDT_CREATE_CLIENT, ==, 4);
    CHECK_INT(AFDT_HANDLE_RESPONSE, ==, 5);
}

TEST(operation_enumerators_have_2009_values_in_order_from_zero) {
    CHECK_INT(AFDT_NO_OPERATION, ==, 0);
    CHECK_INT(AFDT_MALLOC, ==, 1);
    CHECK_INT(AFDT_SOCKET, ==, 2);
    CHECK_INT(AFDT_PATHNAME, ==, 3);
    CHECK_INT(AFDT_BIND, ==, 4);
    CHECK_INT(AFDT_LISTEN, ==, 5);
    CHECK_INT(AFDT_ACCEPT, ==, 6);
    CHECK_INT(AFDT_CONNECT, ==, 7);
    CHECK_INT(AFDT_FORMAT, ==, 8);
    CHECK_INT(AFDT_SENDMSG, ==, 9);
    CHECK_INT(AFDT_RECVMSG, ==, 10);
    CHECK_INT(AFDT_EVENT_BASE_SET, ==, 11);
    CHECK_INT(AFDT_EVENT_ADD, ==, 12);
    CHECK_INT(AFDT_POLL, ==, 13);
    CHECK_INT(AFDT_TIMEOUT, ==, 14);
}

TEST(error_struct_has_2009_layout) {
    /* A 2009 binary reads these fields at fixed offsets. */
    CHECK_INT(offsetof(struct afdt_error_t, phase), ==, 0);
    CHECK_INT(offsetof(struct afdt_error_t, operation), ==, sizeof(enum afdt_phase));
    CHECK_INT(offsetof(struct afdt_error_t, message), >=,
              sizeof(enum afdt_phase) + sizeof(enum afdt_operation));
    CHECK_INT(sizeof(enum afdt_phase), ==, sizeof(int));
    CHECK_INT(sizeof(enum afdt_operation), ==, sizeof(int));
}

TEST(error_init_has_no_phase_no_operation_and_empty_message) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    CHECK_INT(e.phase, ==, AFDT_NO_PHASE);
    CHECK_INT(e.operation, ==, AFDT_NO_OPERATION);
    CHECK(e.message != NULL);
    CHECK_STR(e.message, "");
    CHECK_INT(AFDT_ERROR_T_INIT.phase, ==, 0);
    CHECK_INT(AFDT_ERROR_T_INIT.operation, ==, 0);
    CHECK_STR(AFDT_ERROR_T_INIT.message, "");
}

TEST(phase_str_names_every_phase) {
    CHECK_STR(afdt_phase_str(AFDT_NO_PHASE), "AFDT_NO_PHASE");
    CHECK_STR(afdt_phase_str(AFDT_CREATE_SERVER), "AFDT_CREATE_SERVER");
    CHECK_STR(afdt_phase_str(AFDT_ACCEPT_CLIENT), "AFDT_ACCEPT_CLIENT");
    CHECK_STR(afdt_phase_str(AFDT_HANDLE_REQUEST), "AFDT_HANDLE_REQUEST");
    CHECK_STR(afdt_phase_str(AFDT_CREATE_CLIENT), "AFDT_CREATE_CLIENT");
    CHECK_STR(afdt_phase_str(AFDT_HANDLE_RESPONSE), "AFDT_HANDLE_RESPONSE");
}

TEST(operation_str_names_every_operation) {
    static const char *const names[] = {
        "AFDT_NO_OPERATION", "AFDT_MALLOC",  "AFDT_SOCKET",  "AFDT_PATHNAME",
        "AFDT_BIND",         "AFDT_LISTEN",  "AFDT_ACCEPT",  "AFDT_CONNECT",
        "AFDT_FORMAT",       "AFDT_SENDMSG", "AFDT_RECVMSG", "AFDT_EVENT_BASE_SET",
        "AFDT_EVENT_ADD",    "AFDT_POLL",    "AFDT_TIMEOUT", "AFDT_PEER",
    };
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
        CHECK_STR(afdt_operation_str((enum afdt_operation)i), names[i]);
    /* The same again by enumerator, so a reordered enum cannot hide behind
     * a reordered table. */
    CHECK_STR(afdt_operation_str(AFDT_BIND), "AFDT_BIND");
    CHECK_STR(afdt_operation_str(AFDT_FORMAT), "AFDT_FORMAT");
    CHECK_STR(afdt_operation_str(AFDT_TIMEOUT), "AFDT_TIMEOUT");
    CHECK_STR(afdt_operation_str(AFDT_POLL), "AFDT_POLL");
    CHECK_STR(afdt_operation_str(AFDT_PEER), "AFDT_PEER");
}

TEST(phase_str_says_unknown_for_out_of_range_values) {
    CHECK_STR(afdt_phase_str((enum afdt_phase)6), "UNKNOWN");
    CHECK_STR(afdt_phase_str((enum afdt_phase)99), "UNKNOWN");
    CHECK_STR(afdt_phase_str((enum afdt_phase) - 1), "UNKNOWN");
    CHECK_STR(afdt_phase_str((enum afdt_phase)0x7fffffff), "UNKNOWN");
    CHECK_STR(afdt_phase_str((enum afdt_phase)(-0x7fffffff - 1)), "UNKNOWN");
}

TEST(operation_str_says_unknown_for_out_of_range_values) {
    CHECK_STR(afdt_operation_str((enum afdt_operation)16), "UNKNOWN");
    CHECK_STR(afdt_operation_str((enum afdt_operation)99), "UNKNOWN");
    CHECK_STR(afdt_operation_str((enum afdt_operation) - 1), "UNKNOWN");
    CHECK_STR(afdt_operation_str((enum afdt_operation)0x7fffffff), "UNKNOWN");
    CHECK_STR(afdt_operation_str((enum afdt_operation)(-0x7fffffff - 1)), "UNKNOWN");
}

TEST(name_strings_are_static_and_stable) {
    /* The names must outlive the call: the same pointer each time, and still
     * readable after other calls. */
    const char *a = afdt_operation_str(AFDT_CONNECT);
    const char *b = afdt_phase_str(AFDT_CREATE_CLIENT);
    (void)afdt_operation_str(AFDT_SENDMSG);
    (void)afdt_phase_str(AFDT_ACCEPT_CLIENT);
    CHECK(a == afdt_operation_str(AFDT_CONNECT));
    CHECK(b == afdt_phase_str(AFDT_CREATE_CLIENT));
    CHECK_STR(a, "AFDT_CONNECT");
    CHECK_STR(b, "AFDT_CREATE_CLIENT");
}

TEST(failure_message_is_never_null_and_outlives_the_call) {
    struct afdt_error_t e = AFDT_ERROR_T_INIT;
    e.message = NULL; /* the library must overwrite it, never leave NULL */
    errno = 12345;
    CHECK_INT(afdt_connect(tmp_path("missing"), &e), <, 0);
    int eno = errno;
    CHECK_INT(eno, ==, ENOENT);
    CHECK_INT(e.operation, ==, AFDT_CONNECT);
    CHECK(e.message != NULL);
    const char *m = e.message;
    size_t len = strlen(m);

    /* Another failing call with a different error must not disturb the first
     * message's storage. */
    struct afdt_error_t e2 = AFDT_ERROR_T_INIT;
    CHECK_INT(afdt_listen("", &e2), <, 0);
    CHECK(e2.message != NULL);
    CHECK_INT(strlen(m), ==, len);
    CHECK_STR(m, e.message);
}
