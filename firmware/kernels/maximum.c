#include "maximum.h"

ob_status ob_maximum(const ob_maximum_params *p, const int8_t *input1, const int8_t *input2,
                     int8_t *output) {
  if (p->size < 0 || p->input1_period < 1 || p->input2_period < 1) return OB_ERR_BAD_PARAMS;
  for (int32_t i = 0; i < p->size; ++i) {
    const int8_t a = input1[i % p->input1_period];
    const int8_t b = input2[i % p->input2_period];
    output[i] = a > b ? a : b;
  }
  return OB_OK;
}
