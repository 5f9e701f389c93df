/* int8 MAXIMUM with TFLite's reference semantics: a comparison of the raw int8 values,
 * valid because TFLite gives both inputs and the output one quantization (the
 * shifted ReLU max(x, -1) of McDonnell 2019 becomes MAXIMUM with a scalar constant). */
#ifndef OB_MAXIMUM_H
#define OB_MAXIMUM_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t size;
  int32_t input1_period, input2_period; /* broadcasting as in ob_add_params */
} ob_maximum_params;

ob_status ob_maximum(const ob_maximum_params *params, const int8_t *input1, const int8_t *input2,
                     int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_MAXIMUM_H */
