/* ONEBIT_CONV2D: TFLite's int8 per-channel CONV_2D for filters whose every value is
 * +-127, with one bit per weight. The full specification is docs/onebit_conv2d.md;
 * the constants below are its machine-readable part, read by the Python converter
 * (mcu_onebit/cheader.py) as well as by C. */
#ifndef ONEBIT_CONV2D_H
#define ONEBIT_CONV2D_H

#include <stddef.h>
#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ONEBIT_CONV2D_OP_NAME "ONEBIT_CONV2D"
#define ONEBIT_CONV2D_OPTIONS_VERSION 1
/* Every int8 filter value of the twin is +-ONEBIT_CONV2D_MAGNITUDE. */
#define ONEBIT_CONV2D_MAGNITUDE 127
/* Packed filter: uint8 tensor [cout, kh, kw, ONEBIT_PACKED_DEPTH(cin)]. Bit (ci % 8) of
 * byte (ci / 8) of tap (o, y, x), counting from the least significant bit, is 1 for
 * +MAGNITUDE and 0 for -MAGNITUDE; padding bits are 0. */
#define ONEBIT_CONV2D_BIT_ORDER "lsb-first"
#define ONEBIT_PACKED_DEPTH(cin) (((cin) + 7) / 8)

/* The custom options: a FlexBuffer map holding each of these keys exactly once and no
 * other (docs/onebit_conv2d.md). This table is the one both readers follow: the C parser
 * (firmware/runtime/tflm/onebit_conv2d_options.cc) expands it, Python
 * (converters/onebit_conv2d.py) reads it through mcu_onebit.cheader.read_tables.
 * Integer keys: X(key, min, max); the value is a FlexBuffer integer (signed or unsigned,
 * inline or indirect; not a bool, float, string or vector) in [min, max]. */
#define ONEBIT_OPTIONS_INTS(X)                   \
  X(version, 1, ONEBIT_CONV2D_OPTIONS_VERSION)   \
  X(stride_h, 1, ONEBIT_CONV2D_DIM_MAX)          \
  X(stride_w, 1, ONEBIT_CONV2D_DIM_MAX)          \
  X(dilation_h, 1, ONEBIT_CONV2D_DIM_MAX)        \
  X(dilation_w, 1, ONEBIT_CONV2D_DIM_MAX)
/* String keys: X(key, NAMES); the value is a FlexBuffer string (not a key) equal to one
 * of NAMES, whose position is the value the parser returns. */
#define ONEBIT_OPTIONS_STRINGS(X)               \
  X(padding, ONEBIT_PADDINGS)                   \
  X(activation, ONEBIT_ACTIVATIONS)
#define ONEBIT_PADDINGS(Y) Y(SAME) Y(VALID)
#define ONEBIT_ACTIVATIONS(Y) Y(NONE) Y(RELU) Y(RELU6) Y(RELU_N1_TO_1)

/* The largest image or kernel side, channel count, stride, dilation and padding the
 * kernels take. With every side at most this, (out - 1) * stride + (k - 1) * dilation,
 * the furthest tap, fits int32. */
#define ONEBIT_CONV2D_DIM_MAX 32767
/* The most taps (k_h * k_w * in_c) that one output value sums: with |x - zero point| <=
 * 255 and |w| <= 128 (the int8 CONV_2D kernel shares this check), 255 * 128 * taps fits
 * int32, so the accumulator cannot overflow before the bias is added. */
#define ONEBIT_CONV2D_TAPS_MAX 65793

/* Tensor indices of the operator. */
#define ONEBIT_INPUT_TENSOR 0
#define ONEBIT_FILTER_TENSOR 1
#define ONEBIT_BIAS_TENSOR 2 /* int32 [cout], optional (-1 in the graph) */
#define ONEBIT_OUTPUT_TENSOR 0

typedef struct {
  int32_t in_h, in_w, in_c;
  int32_t out_h, out_w, out_c;
  int32_t k_h, k_w;
  int32_t stride_h, stride_w;
  int32_t dilation_h, dilation_w;
  int32_t pad_top, pad_left; /* TFLite's padding: total/2, extra row/column at bottom/right */
  int32_t input_offset;      /* -input zero point */
  int32_t output_offset;     /* output zero point */
  int32_t act_min, act_max;  /* clamp after requantization, from the fused activation */
  const int32_t *out_multiplier; /* per output channel, from QuantizeMultiplier */
  const int32_t *out_shift;      /* per output channel */
} ob_onebit_conv2d_params;

/* The checks every conv kernel (1-bit or int8) makes first, so that none of its index or
 * accumulator arithmetic can overflow int32 (docs/onebit_conv2d.md, "Limits"): sides,
 * strides, dilations and paddings within ONEBIT_CONV2D_DIM_MAX (paddings may be 0), at
 * most ONEBIT_CONV2D_TAPS_MAX taps per output, input, output and filter element counts
 * within int32, int8 zero points (input_offset = -zero point), a clamp ordered within
 * int8, and per-channel requantization within QuantizeMultiplier's range (multiplier
 * >= 0, shift -31..30). */
static inline int ob_conv2d_params_valid(const ob_onebit_conv2d_params *p) {
  const int32_t sides[] = {p->in_h, p->in_w, p->in_c, p->out_h, p->out_w, p->out_c,
                           p->k_h, p->k_w, p->stride_h, p->stride_w, p->dilation_h,
                           p->dilation_w};
  for (size_t i = 0; i < sizeof sides / sizeof sides[0]; ++i) {
    if (sides[i] < 1 || sides[i] > ONEBIT_CONV2D_DIM_MAX) return 0;
  }
  if (p->pad_top < 0 || p->pad_top > ONEBIT_CONV2D_DIM_MAX || p->pad_left < 0 ||
      p->pad_left > ONEBIT_CONV2D_DIM_MAX) {
    return 0;
  }
  const int64_t taps = (int64_t)p->k_h * p->k_w * p->in_c;
  if (taps > ONEBIT_CONV2D_TAPS_MAX || (int64_t)p->in_h * p->in_w * p->in_c > INT32_MAX ||
      (int64_t)p->out_h * p->out_w * p->out_c > INT32_MAX || taps * p->out_c > INT32_MAX) {
    return 0;
  }
  if (p->input_offset < -127 || p->input_offset > 128 || p->output_offset < -128 ||
      p->output_offset > 127 || p->act_min < -128 || p->act_min > p->act_max ||
      p->act_max > 127 || p->out_multiplier == NULL || p->out_shift == NULL) {
    return 0;
  }
  for (int32_t oc = 0; oc < p->out_c; ++oc) {
    if (p->out_multiplier[oc] < 0 || p->out_shift[oc] < -31 || p->out_shift[oc] > 30) return 0;
  }
  return 1;
}

/* What the optimized variants check on entry: the arguments (ob_conv2d_params_valid, whose
 * int8 zero points keep the padding byte u = 128 + zero point they compute with a byte). */
static inline ob_status ob_onebit_conv2d_variant_check(const ob_onebit_conv2d_params *p,
                                                       const int8_t *input,
                                                       const uint8_t *packed_filter,
                                                       const int8_t *output) {
  if (p == NULL || input == NULL || packed_filter == NULL || output == NULL ||
      !ob_conv2d_params_valid(p)) {
    return OB_ERR_BAD_PARAMS;
  }
  return OB_OK;
}

/* One output value of every conv kernel: the accumulator (bias included) requantized for
 * channel oc, offset by the output zero point and clamped to the fused activation. */
static inline int8_t ob_conv2d_requantize(const ob_onebit_conv2d_params *p, int32_t oc,
                                          int32_t acc) {
  acc = ob_multiply_by_quantized_multiplier(acc, p->out_multiplier[oc], p->out_shift[oc]);
  /* clamp(acc + offset, min, max) as clamp(acc, min - offset, max - offset) + offset: the
   * same byte, and no int32 overflow when acc is near its limits. */
  const int32_t low = p->act_min - p->output_offset;
  const int32_t high = p->act_max - p->output_offset;
  acc = acc < low ? low : acc;
  acc = acc > high ? high : acc;
  return (int8_t)(acc + p->output_offset);
}

/* Batch of 1, NHWC int8 input and output. bias may be NULL. Needs no scratch memory. */
ob_status ob_onebit_conv2d(const ob_onebit_conv2d_params *params, const int8_t *input,
                           const uint8_t *packed_filter, const int32_t *bias, int8_t *output);

/* Scratch memory ob_onebit_conv2d_ex can use for params, in bytes (0: none). Each kernel
 * variant (firmware/kernels/<variant>/onebit_conv2d.c) defines it; the portable reference
 * returns 0. Never more than ONEBIT_CONV2D_SCRATCH_MAX for the same shape, which is what
 * a runtime that does not know the variant reserves (the static runtime's memory plan
 * reads ONEBIT_CONV2D_SCRATCH_PER_BYTE): so many bytes per full weight byte (8 input
 * channels) of one filter tap. */
#define ONEBIT_CONV2D_SCRATCH_PER_BYTE 32
#define ONEBIT_CONV2D_SCRATCH_MAX(k_h, k_w, in_c) \
  (ONEBIT_CONV2D_SCRATCH_PER_BYTE * (k_h) * (k_w) * ((in_c) / 8))
int32_t ob_onebit_conv2d_scratch_bytes(const ob_onebit_conv2d_params *params);

/* ob_onebit_conv2d with caller-owned scratch: at least
 * ob_onebit_conv2d_scratch_bytes(params) bytes, 4-byte aligned (may be NULL when that is
 * 0). Results are identical with or without scratch; a variant may only be faster with. */
ob_status ob_onebit_conv2d_ex(const ob_onebit_conv2d_params *params, const int8_t *input,
                              const uint8_t *packed_filter, const int32_t *bias, int8_t *output,
                              void *scratch);

#ifdef __cplusplus
}
#endif

#endif /* ONEBIT_CONV2D_H */
