/* MEAN over the spatial axes (1, 2) of a [1, H, W, C] int8 tensor (global average
 * pooling as TF's converter emits it, keep_dims true or false: the data are the same).
 * TFLite's int8 reference MEAN (reference_ops::QuantizedMeanOrSum): an integer sum,
 * then one requantization whose multiplier already includes 1 / (H * W). Parameters
 * come from converters/quant.py (mean_params), which mirrors TFLite's Prepare and the
 * multiplier adjustment TFLite does at Eval. */
#ifndef OB_MEAN_H
#define OB_MEAN_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t in_h, in_w, channels;
  int32_t input_offset;  /* -input zero point */
  int32_t output_offset; /* +output zero point */
  int32_t multiplier, shift; /* input_scale / output_scale / (H * W), as TFLite folds it */
} ob_mean_params;

/* Output: C values, clamped to the int8 range (MEAN has no fused activation). */
ob_status ob_mean(const ob_mean_params *params, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_MEAN_H */
