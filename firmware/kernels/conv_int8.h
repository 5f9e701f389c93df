/* CONV_2D, int8 per-channel: TFLite's reference_integer_ops::ConvPerChannel, written
 * plainly. It is the baseline that `mcu-onebit bench` compares ONEBIT_CONV2D with (same
 * compiler, same flags); models use ONEBIT_CONV2D. */
#ifndef CONV_INT8_H
#define CONV_INT8_H

#include <stdint.h>

#include "ob_common.h"
#include "onebit_conv2d.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The same parameters as ONEBIT_CONV2D: only the filter's storage differs. */
typedef ob_onebit_conv2d_params ob_conv2d_int8_params;

/* Batch of 1, NHWC int8 input and output; filter int8 [cout, kh, kw, cin] with zero
 * points 0 (TFLite's per-channel quantization). bias may be NULL. No scratch memory. */
ob_status ob_conv2d_int8(const ob_conv2d_int8_params *params, const int8_t *input,
                         const int8_t *filter, const int32_t *bias, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* CONV_INT8_H */
