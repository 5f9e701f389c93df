#include "ob_common.h"

#include <stddef.h>

/* Designated initialisers keep each name next to its value; a status added to the enum
 * without a name here stays NULL and prints as unknown, which tests/test_kernels.py catches. */
static const char *const ob_status_names[OB_STATUS_COUNT] = {
    [OB_OK] = "OB_OK",
    [OB_ERR_BAD_PARAMS] = "OB_ERR_BAD_PARAMS",
    [OB_ERR_UNSUPPORTED] = "OB_ERR_UNSUPPORTED",
};

const char *ob_status_str(ob_status status) {
  if ((unsigned)status >= (unsigned)OB_STATUS_COUNT || ob_status_names[status] == NULL) {
    return "OB_STATUS_UNKNOWN";
  }
  return ob_status_names[status];
}
