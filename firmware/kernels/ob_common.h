/* Shared by every mcu-onebit kernel: the status enum and TFLite's fixed-point helpers. */
#ifndef OB_COMMON_H
#define OB_COMMON_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  OB_OK = 0,
  OB_ERR_BAD_PARAMS = 1,  /* shapes or quantization parameters inconsistent */
  OB_ERR_UNSUPPORTED = 2, /* valid TFLite, but not handled by this kernel */
  OB_STATUS_COUNT
} ob_status;

/* Name of a status, for messages. */
const char *ob_status_str(ob_status status);

/* HELPER-A: fixed-point helpers (static inline) go here. */

#ifdef __cplusplus
}
#endif

#endif /* OB_COMMON_H */
