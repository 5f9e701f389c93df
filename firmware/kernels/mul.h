/* MUL: TFLite's int8 MUL reference arithmetic (reference_integer_ops::MulElementwise),
 * with broadcasting of an operand along the leading axes. Parameters come from
 * converters/quant.py (mul_params), which mirrors TFLite's Prepare. */
#ifndef OB_MUL_H
#define OB_MUL_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  /* Output element i reads input1[i % input1_period] and input2[i % input2_period]
   * (see ob_add_params). */
  int32_t size;
  int32_t input1_period, input2_period;
  int32_t input1_offset, input2_offset; /* -zero points */
  int32_t output_offset;                /* +zero point */
  int32_t output_multiplier, output_shift;
  int32_t act_min, act_max;
} ob_mul_params;

ob_status ob_mul(const ob_mul_params *params, const int8_t *input1, const int8_t *input2,
                 int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_MUL_H */
