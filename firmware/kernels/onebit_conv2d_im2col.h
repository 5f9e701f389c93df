/* ONEBIT_CONV2D of an input with fewer channels than a weight byte holds (the stem: 1 or 3)
 * as a 1x1 conv over its im2col rows (docs/onebit_conv2d.md, "Im2col stem"): each output
 * pixel's k_h * k_w * in_c input values are gathered into one run of `depth` bytes (a
 * multiple of 8; taps outside the image and the bytes after the last tap hold the input
 * zero point, so they add nothing whatever their weight bit), and the conv kernel's
 * whole-byte path runs on a few such rows at a time. The filter, re-laid out by the
 * converter, is [out_c][1][1][depth / 8]: bit (ky * k_w + kx) * in_c + c is the weight of
 * tap (ky, kx), channel c. The sums are the conv's own, so the output is bit-identical. */
#ifndef ONEBIT_CONV2D_IM2COL_H
#define ONEBIT_CONV2D_IM2COL_H

#include <stdint.h>

#include "ob_common.h"
#include "onebit_conv2d.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  /* The 1x1 conv over the gathered rows: in_h = out_h, in_w = out_w, in_c = depth,
   * k 1x1, stride 1, dilation 1, no padding; the quantization of the original conv. */
  const ob_onebit_conv2d_params *conv;
  int32_t in_h, in_w, in_c; /* the image */
  int32_t k_h, k_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int32_t rows_per_call; /* output rows gathered per kernel call */
} ob_onebit_conv2d_im2col_params;

/* The gathered rows of one call and the kernel's scratch, each 4-byte aligned. */
int32_t ob_onebit_conv2d_im2col_scratch_bytes(const ob_onebit_conv2d_im2col_params *params);

ob_status ob_onebit_conv2d_im2col(const ob_onebit_conv2d_im2col_params *params, const int8_t *input,
                                  const uint8_t *packed_filter, const int32_t *bias, int8_t *output,
                                  void *scratch);

#ifdef __cplusplus
}
#endif

#endif /* ONEBIT_CONV2D_IM2COL_H */
