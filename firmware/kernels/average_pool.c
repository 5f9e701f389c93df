#include "average_pool.h"

/* TFLite rounds half away from zero. */
static inline int8_t average(const ob_average_pool_params *p, int32_t sum, int32_t count) {
  int32_t avg = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
  if (avg < p->act_min) avg = p->act_min;
  if (avg > p->act_max) avg = p->act_max;
  return (int8_t)avg;
}

ob_status ob_average_pool(const ob_average_pool_params *p, const int8_t *input, int8_t *output) {
  if (p->stride_h < 1 || p->stride_w < 1 || p->filter_h < 1 || p->filter_w < 1 || p->channels < 1) {
    return OB_ERR_BAD_PARAMS;
  }
  const int32_t channels = p->channels;
  const int32_t row_stride = p->in_w * channels;
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
      const int8_t *window = input + ((in_y0 + fy_start) * p->in_w + in_x0 + fx_start) * channels;
      const int32_t rows = fy_end - fy_start, cols = fx_end - fx_start;
      int8_t *out = output + (oy * p->out_w + ox) * channels;
      int32_t c = 0;
      /* Four channels at a time, their sums in registers: each pixel of the window is
       * visited once per four channels, not once per channel. */
      for (; c + 4 <= channels; c += 4) {
        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        const int8_t *row = window + c;
        for (int32_t fy = 0; fy < rows; ++fy, row += row_stride) {
          const int8_t *px = row;
          for (int32_t fx = 0; fx < cols; ++fx, px += channels) {
            s0 += px[0];
            s1 += px[1];
            s2 += px[2];
            s3 += px[3];
          }
        }
        out[c] = average(p, s0, count);
        out[c + 1] = average(p, s1, count);
        out[c + 2] = average(p, s2, count);
        out[c + 3] = average(p, s3, count);
      }
      for (; c < channels; ++c) {
        int32_t sum = 0;
        const int8_t *row = window + c;
        for (int32_t fy = 0; fy < rows; ++fy, row += row_stride) {
          for (int32_t fx = 0; fx < cols; ++fx) sum += row[fx * channels];
        }
        out[c] = average(p, sum, count);
      }
    }
  }
  return OB_OK;
}
