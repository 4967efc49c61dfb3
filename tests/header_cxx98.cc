// SPDX-License-Identifier: BSD-3-Clause
// afdt.h alone, as C++98 with -pedantic-errors.  Built, never run.
#include <afdt.h>

const char *header_cxx98_operation() {
    return afdt_operation_str(AFDT_TIMEOUT);
}
