#include "mean.h"

#include <stddef.h>

ob_status ob_mean(const ob_mean_params *params, const int8_t *input, int8_t *output) {
  if (params == NULL || input == NULL || output == NULL) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_mean_params *p = params;
  if (p->in_h < 1 || p->in_w < 1 || p->channels < 1 || p->multiplier < 0 || p->shift < -31 ||
      p->shift > 30) {
    return OB_ERR_BAD_PARAMS;
  }
  const int32_t count = p->in_h * p->in_w;
  for (int32_t c = 0; c < p->channels; ++c) {
    int32_t sum = 0;
    for (int32_t i = 0; i < count; ++i) {
      sum += input[i * p->channels + c];
    }
    /* TFLite subtracts the zero point once from the sum, not from every element. */
    sum += p->input_offset * count;
    int32_t out = ob_multiply_by_quantized_multiplier(sum, p->multiplier, p->shift) +
                  p->output_offset;
    out = out < INT8_MIN ? INT8_MIN : out;
    out = out > INT8_MAX ? INT8_MAX : out;
    output[c] = (int8_t)out;
  }
  return OB_OK;
}
