/* CONV_2D, int8 per-channel: TFLite's reference_integer_ops::ConvPerChannel, written
 * plainly. It is the baseline that `mcu-onebit bench` compares ONEBIT_CONV2D with (same
 * compiler, same flags); models use ONEBIT_CONV2D. */
#ifndef CONV_INT8_H
#define CONV_INT8_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Field for field the same layout as ob_onebit_conv2d_params (onebit_conv2d.h). */
typedef struct {
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c;
  int32_t k_h, k_w;
  int32_t stride_h, stride_w;
  int32_t dilation_h, dilation_w;
  int32_t pad_top, pad_left; /* TFLite's padding: total/2, extra row/column at bottom/right */
  int32_t input_offset;      /* -input zero point */
  int32_t output_offset;     /* output zero point */
  int32_t act_min, act_max;  /* clamp after requantization */
  const int32_t *out_multiplier; /* per output channel */
  const int32_t *out_shift;      /* per output channel */
} ob_conv2d_int8_params;

/* Batch of 1, NHWC int8 input and output; filter int8 [cout, kh, kw, cin] with zero
 * points 0 (TFLite's per-channel quantization). bias may be NULL. No scratch memory. */
ob_status ob_conv2d_int8(const ob_conv2d_int8_params *params, const int8_t *input,
                         const int8_t *filter, const int32_t *bias, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* CONV_INT8_H */
