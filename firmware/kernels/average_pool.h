/* int8 AVERAGE_POOL_2D with TFLite's reference arithmetic (input and output share one
 * quantization, which TFLite requires, so no rescaling). */
#ifndef OB_AVERAGE_POOL_H
#define OB_AVERAGE_POOL_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t in_h, in_w, channels;
  int32_t out_h, out_w;
  int32_t filter_h, filter_w;
  int32_t stride_h, stride_w;
  int32_t pad_top, pad_left;
  int32_t act_min, act_max;
} ob_average_pool_params;

/* Batch 1, NHWC. Each output averages the in-image taps of its window only. */
ob_status ob_average_pool(const ob_average_pool_params *params, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_AVERAGE_POOL_H */
