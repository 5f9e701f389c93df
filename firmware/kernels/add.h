/* ADD: TFLite's int8 ADD reference arithmetic (reference_integer_ops::AddFunc), with
 * broadcasting of an operand along the leading axes. Parameters come from
 * converters/quant.py (add_params), which mirrors TFLite's Prepare. */
#ifndef OB_ADD_H
#define OB_ADD_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  /* Output element i reads input1[i % input1_period] and input2[i % input2_period]: an
   * operand whose shape (leading 1s dropped) is a suffix of the output shape, e.g. a
   * per-channel [C] constant has period C, a scalar period 1, a same-shape input size. */
  int32_t size;
  int32_t input1_period, input2_period;
  int32_t left_shift; /* 20 for int8: headroom before rescaling both inputs */
  int32_t input1_offset, input1_multiplier, input1_shift; /* offset = -zero point */
  int32_t input2_offset, input2_multiplier, input2_shift;
  int32_t output_offset, output_multiplier, output_shift; /* offset = +zero point */
  int32_t act_min, act_max;
} ob_add_params;

ob_status ob_add(const ob_add_params *params, const int8_t *input1, const int8_t *input2,
                 int8_t *output);

/* ob_add in two steps, for a caller that adds many slices with the same parameters (the
 * fused conv's rows): the rescaled value of every int8 input, then the sums. */
typedef struct {
  int32_t input1[256], input2[256]; /* indexed by value + 128 */
} ob_add_tables;
#define OB_ADD_TABLES_BYTES 2048 /* sizeof(ob_add_tables), for the Python memory plan */

ob_status ob_add_prepare(const ob_add_params *params, ob_add_tables *tables);
ob_status ob_add_prepared(const ob_add_params *params, const ob_add_tables *tables,
                          const int8_t *input1, const int8_t *input2, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_ADD_H */
