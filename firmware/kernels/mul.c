#include "mul.h"

#include <stddef.h>

ob_status ob_mul(const ob_mul_params *params, const int8_t *input1, const int8_t *input2,
                 int8_t *output) {
  if (params == NULL || input1 == NULL || input2 == NULL || output == NULL) {
    return OB_ERR_BAD_PARAMS;
  }
  /* A local copy: the output bytes may alias nothing of it, so its fields stay in
   * registers across the stores of the loop below. */
  const ob_mul_params local = *params;
  const ob_mul_params *p = &local;
  if (p->size < 1 || p->input1_period < 1 || p->input2_period < 1 ||
      p->size % p->input1_period != 0 || p->size % p->input2_period != 0 ||
      p->output_multiplier < 0 || p->output_shift < -31 || p->output_shift > 30 ||
      p->act_min > p->act_max) {
    return OB_ERR_BAD_PARAMS;
  }
  /* Wrapping indices instead of i % period: no division per element. */
  int32_t i1 = 0;
  int32_t i2 = 0;
  for (int32_t i = 0; i < p->size; ++i) {
    const int32_t a = (int32_t)input1[i1] + p->input1_offset;
    const int32_t b = (int32_t)input2[i2] + p->input2_offset;
    int32_t out = ob_multiply_by_quantized_multiplier(a * b, p->output_multiplier,
                                                      p->output_shift) +
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
