#include "add.h"

#include <stddef.h>

/* Shifts of MultiplyByQuantizedMultiplierSmallerThanOneExp are right shifts of 0..31. */
static int smaller_than_one_shift_valid(int32_t shift) { return shift <= 0 && shift >= -31; }

ob_status ob_add(const ob_add_params *params, const int8_t *input1, const int8_t *input2,
                 int8_t *output) {
  if (params == NULL || input1 == NULL || input2 == NULL || output == NULL) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_add_params *p = params;
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
  for (int32_t i = 0; i < p->size; ++i) {
    const int32_t a = ((int32_t)input1[i1] + p->input1_offset) * (1 << p->left_shift);
    const int32_t b = ((int32_t)input2[i2] + p->input2_offset) * (1 << p->left_shift);
    const int32_t sum =
        ob_multiply_by_quantized_multiplier_smaller_than_one_exp(a, p->input1_multiplier,
                                                                 p->input1_shift) +
        ob_multiply_by_quantized_multiplier_smaller_than_one_exp(b, p->input2_multiplier,
                                                                 p->input2_shift);
    int32_t out = ob_multiply_by_quantized_multiplier_smaller_than_one_exp(
                      sum, p->output_multiplier, p->output_shift) +
                  p->output_offset;
    out = out < p->act_min ? p->act_min : out;
    out = out > p->act_max ? p->act_max : out;
    output[i] = (int8_t)out;
    if (++i1 == p->input1_period) {
      i1 = 0;
    }
    if (++i2 == p->input2_period) {
      i2 = 0;
    }
  }
  return OB_OK;
}
