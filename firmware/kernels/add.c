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

/* From this many elements on, both inputs are rescaled through tables of their 256
 * values (2 KiB of stack), built once per call: one requantization per element instead of
 * three. */
#define OB_ADD_TABLE_MIN_SIZE 512

ob_status ob_add(const ob_add_params *params, const int8_t *input1, const int8_t *input2,
                 int8_t *output) {
  if (params == NULL || input1 == NULL || input2 == NULL || output == NULL) {
    return OB_ERR_BAD_PARAMS;
  }
  /* A local copy: the output bytes may alias nothing of it, so its fields stay in
   * registers across the stores of the loops below. */
  const ob_add_params local = *params;
  const ob_add_params *p = &local;
  /* left_shift <= 23 keeps (x - zero point) << left_shift, at most 255 << 23, in int32. */
  if (p->size < 1 || p->input1_period < 1 || p->input2_period < 1 ||
      p->size % p->input1_period != 0 || p->size % p->input2_period != 0 ||
      p->left_shift < 0 || p->left_shift > 23 || p->act_min > p->act_max ||
      !smaller_than_one_shift_valid(p->input1_shift) ||
      !smaller_than_one_shift_valid(p->input2_shift) ||
      !smaller_than_one_shift_valid(p->output_shift)) {
    return OB_ERR_BAD_PARAMS;
  }
  /* Wrapping indices instead of i % period: no division per element. */
  int32_t i1 = 0;
  int32_t i2 = 0;
  if (p->size < OB_ADD_TABLE_MIN_SIZE) {
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
  int32_t table1[256], table2[256]; /* indexed by value + 128 */
  for (int32_t v = -128; v < 128; ++v) {
    table1[v + 128] = rescale(v, p->input1_offset, p->left_shift, p->input1_multiplier,
                              p->input1_shift);
    table2[v + 128] = rescale(v, p->input2_offset, p->left_shift, p->input2_multiplier,
                              p->input2_shift);
  }
  for (int32_t i = 0; i < p->size; ++i) {
    output[i] = finish(p, table1[input1[i1] + 128] + table2[input2[i2] + 128]);
    i1 = i1 + 1 == p->input1_period ? 0 : i1 + 1;
    i2 = i2 + 1 == p->input2_period ? 0 : i2 + 1;
  }
  return OB_OK;
}
