#include "add.h"

#include <stddef.h>

/* Shifts of MultiplyByQuantizedMultiplierSmallerThanOneExp are right shifts of 0..31. */
static int smaller_than_one_shift_valid(int32_t shift) { return shift <= 0 && shift >= -31; }

/* An input rescaled to the common scale: it depends on the int8 value alone. */
static inline int32_t rescale(int32_t x, int32_t offset, int32_t left_shift, int32_t multiplier,
                              int32_t shift) {
  return ob_multiply_by_quantized_multiplier_smaller_than_one_exp((x + offset) * (1 << left_shift),
                                                                  multiplier, shift);
}

static inline int8_t finish(const ob_add_params *p, int32_t sum) {
  int32_t out = ob_multiply_by_quantized_multiplier_smaller_than_one_exp(
                    sum, p->output_multiplier, p->output_shift) +
                p->output_offset;
  out = out < p->act_min ? p->act_min : out;
  out = out > p->act_max ? p->act_max : out;
  return (int8_t)out;
}

/* From this many elements on, ob_add rescales both inputs through ob_add_tables (2 KiB
 * of stack), built once per call: one requantization per element instead of three. */
#define OB_ADD_TABLE_MIN_SIZE 512

static int params_valid(const ob_add_params *p) {
  /* left_shift <= 23 keeps (x - zero point) << left_shift, at most 255 << 23, in int32. */
  return p->size >= 1 && p->input1_period >= 1 && p->input2_period >= 1 &&
         p->size % p->input1_period == 0 && p->size % p->input2_period == 0 &&
         p->left_shift >= 0 && p->left_shift <= 23 && p->act_min <= p->act_max &&
         smaller_than_one_shift_valid(p->input1_shift) &&
         smaller_than_one_shift_valid(p->input2_shift) &&
         smaller_than_one_shift_valid(p->output_shift);
}

ob_status ob_add_prepare(const ob_add_params *params, ob_add_tables *tables) {
  if (params == NULL || tables == NULL || !params_valid(params)) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_add_params *p = params;
  for (int32_t v = -128; v < 128; ++v) {
    tables->input1[v + 128] = rescale(v, p->input1_offset, p->left_shift, p->input1_multiplier,
                                      p->input1_shift);
    tables->input2[v + 128] = rescale(v, p->input2_offset, p->left_shift, p->input2_multiplier,
                                      p->input2_shift);
  }
  return OB_OK;
}

/* Two tensors of one shape (the residual ADD): no broadcasting, and a sum small enough
 * for short exact forms of the output requantization. With left_shift <= 20 each
 * rescaled input is at most 255 * 2^20 in magnitude (the multipliers are below 1), so
 * the sum is below 2^29: its doubling high product is SMMULR(2 * sum, multiplier) (no
 * saturation), h below 2^29; RoundingDivideByPOT (halves away from zero) is
 * (h + 2^(e-1) - [h < 0]) >> e for e >= 1, [h < 0] being -(h >> 31); the output offset
 * adds as offset * 2^e before the shift: with 1 <= e <= 22 and |offset| <= 128 nothing
 * overflows. Inlined twice: with the bounds of the full int8 range (one SSAT), and with
 * the activation's. */
static inline __attribute__((always_inline)) void add_same_shape_loop(
    const ob_add_params *p, const ob_add_tables *tables, const int8_t *input1, const int8_t *input2,
    int8_t *output, int full_range) {
  const int32_t *t1 = tables->input1 + 128, *t2 = tables->input2 + 128;
  const int32_t multiplier = p->output_multiplier;
  const int32_t exponent = -p->output_shift;
  const int32_t nudge = ((int32_t)1 << (exponent - 1)) + (int32_t)((uint32_t)p->output_offset << exponent);
  const int32_t lo = p->act_min, hi = p->act_max;
  const int8_t *end = input1 + p->size;
  while (input1 != end) {
    const int32_t sum = t1[*input1++] + t2[*input2++];
    const int32_t high = ob_smmulr(sum * 2, multiplier);
    int32_t out = (high + nudge + (high >> 31)) >> exponent;
    if (full_range) {
      out = ob_saturate_int8(out);
    } else {
      out = out < lo ? lo : out;
      out = out > hi ? hi : out;
    }
    *output++ = (int8_t)out;
  }
}

static ob_status add_same_shape(const ob_add_params *p, const ob_add_tables *tables,
                                const int8_t *input1, const int8_t *input2, int8_t *output) {
  if (p->act_min == -128 && p->act_max == 127) {
    add_same_shape_loop(p, tables, input1, input2, output, 1);
  } else {
    add_same_shape_loop(p, tables, input1, input2, output, 0);
  }
  return OB_OK;
}

ob_status ob_add_prepared(const ob_add_params *params, const ob_add_tables *tables,
                          const int8_t *input1, const int8_t *input2, int8_t *output) {
  if (params == NULL || tables == NULL || input1 == NULL || input2 == NULL || output == NULL ||
      !params_valid(params)) {
    return OB_ERR_BAD_PARAMS;
  }
  /* A local copy: the output bytes may alias nothing of it, so its fields stay in
   * registers across the stores of the loop below. */
  const ob_add_params local = *params;
  const ob_add_params *p = &local;
  if (p->input1_period == p->size && p->input2_period == p->size && p->left_shift <= 20 &&
      p->output_shift >= -22 && p->output_shift <= -1 && p->output_offset >= -128 && p->output_offset <= 128) {
    return add_same_shape(p, tables, input1, input2, output);
  }
  /* Wrapping indices instead of i % period: no division per element. */
  int32_t i1 = 0;
  int32_t i2 = 0;
  for (int32_t i = 0; i < p->size; ++i) {
    output[i] = finish(p, tables->input1[input1[i1] + 128] + tables->input2[input2[i2] + 128]);
    i1 = i1 + 1 == p->input1_period ? 0 : i1 + 1;
    i2 = i2 + 1 == p->input2_period ? 0 : i2 + 1;
  }
  return OB_OK;
}

ob_status ob_add(const ob_add_params *params, const int8_t *input1, const int8_t *input2,
                 int8_t *output) {
  if (params == NULL || input1 == NULL || input2 == NULL || output == NULL || !params_valid(params)) {
    return OB_ERR_BAD_PARAMS;
  }
  if (params->size >= OB_ADD_TABLE_MIN_SIZE) {
    ob_add_tables tables;
    ob_add_prepare(params, &tables);
    return ob_add_prepared(params, &tables, input1, input2, output);
  }
  const ob_add_params local = *params;
  const ob_add_params *p = &local;
  int32_t i1 = 0;
  int32_t i2 = 0;
  for (int32_t i = 0; i < p->size; ++i) {
    output[i] = finish(p, rescale(input1[i1], p->input1_offset, p->left_shift,
                                  p->input1_multiplier, p->input1_shift) +
                              rescale(input2[i2], p->input2_offset, p->left_shift,
                                      p->input2_multiplier, p->input2_shift));
    i1 = i1 + 1 == p->input1_period ? 0 : i1 + 1;
    i2 = i2 + 1 == p->input2_period ? 0 : i2 + 1;
  }
  return OB_OK;
}
