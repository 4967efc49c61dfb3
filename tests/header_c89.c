/* SPDX-License-Identifier: BSD-3-Clause */
/* afdt.h alone, as C89 with -pedantic-errors: 2009 programs may be built so.
 * Built, never run: the build fails if the header stops compiling. */
#include <afdt.h>

const char *header_c89_phase(void) {
    return afdt_phase_str(AFDT_HANDLE_RESPONSE);
}
