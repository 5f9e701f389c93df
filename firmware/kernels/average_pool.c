#include "average_pool.h"

ob_status ob_average_pool(const ob_average_pool_params *p, const int8_t *input, int8_t *output) {
  if (p->stride_h < 1 || p->stride_w < 1 || p->filter_h < 1 || p->filter_w < 1 || p->channels < 1) {
    return OB_ERR_BAD_PARAMS;
  }
  for (int32_t oy = 0; oy < p->out_h; ++oy) {
    const int32_t in_y0 = oy * p->stride_h - p->pad_top;
    const int32_t fy_start = in_y0 < 0 ? -in_y0 : 0;
    const int32_t fy_end = p->filter_h < p->in_h - in_y0 ? p->filter_h : p->in_h - in_y0;
    for (int32_t ox = 0; ox < p->out_w; ++ox) {
      const int32_t in_x0 = ox * p->stride_w - p->pad_left;
      const int32_t fx_start = in_x0 < 0 ? -in_x0 : 0;
      const int32_t fx_end = p->filter_w < p->in_w - in_x0 ? p->filter_w : p->in_w - in_x0;
      const int32_t count = (fy_end - fy_start) * (fx_end - fx_start);
      if (count <= 0) return OB_ERR_BAD_PARAMS; /* a window entirely in the padding */
      for (int32_t c = 0; c < p->channels; ++c) {
        int32_t acc = 0;
        for (int32_t fy = fy_start; fy < fy_end; ++fy) {
          const int8_t *row = input + ((in_y0 + fy) * p->in_w + in_x0) * p->channels + c;
          for (int32_t fx = fx_start; fx < fx_end; ++fx) acc += row[fx * p->channels];
        }
        /* TFLite rounds half away from zero. */
        int32_t avg = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
        if (avg < p->act_min) avg = p->act_min;
        if (avg > p->act_max) avg = p->act_max;
        output[(oy * p->out_w + ox) * p->channels + c] = (int8_t)avg;
      }
    }
  }
  return OB_OK;
}
