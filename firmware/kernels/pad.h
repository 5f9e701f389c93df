/* int8 PAD of a [1, H, W, C] tensor with TFLite's reference semantics: new elements take
 * the output zero point (the quantized 0.0); input and output share one quantization. */
#ifndef OB_PAD_H
#define OB_PAD_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int32_t in_h, in_w, in_c;
  int32_t pad_top, pad_bottom, pad_left, pad_right, pad_front, pad_back; /* front/back: channels */
  int32_t pad_value;
} ob_pad_params;

ob_status ob_pad(const ob_pad_params *params, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_PAD_H */
