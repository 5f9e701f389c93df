#include "pad.h"

#include <string.h>

ob_status ob_pad(const ob_pad_params *p, const int8_t *input, int8_t *output) {
  if (p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0 || p->pad_front < 0 ||
      p->pad_back < 0) {
    return OB_ERR_BAD_PARAMS;
  }
  const int32_t out_w = p->pad_left + p->in_w + p->pad_right;
  const int32_t out_c = p->pad_front + p->in_c + p->pad_back;
  const int32_t out_h = p->pad_top + p->in_h + p->pad_bottom;
  memset(output, (int8_t)p->pad_value, (size_t)out_h * (size_t)out_w * (size_t)out_c);
  for (int32_t y = 0; y < p->in_h; ++y) {
    for (int32_t x = 0; x < p->in_w; ++x) {
      int8_t *dst = output + (((y + p->pad_top) * out_w) + x + p->pad_left) * out_c + p->pad_front;
      memcpy(dst, input + (y * p->in_w + x) * p->in_c, (size_t)p->in_c);
    }
  }
  return OB_OK;
}
