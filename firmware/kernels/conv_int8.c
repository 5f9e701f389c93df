/* CONV_2D int8 per-channel reference (conv_int8.h): TFLite's ConvPerChannel arithmetic. */
#include "conv_int8.h"

#include <stddef.h>

ob_status ob_conv2d_int8(const ob_conv2d_int8_params *params, const int8_t *input,
                         const int8_t *filter, const int32_t *bias, int8_t *output) {
  if (params == NULL || input == NULL || filter == NULL || output == NULL ||
      !ob_conv2d_params_valid(params)) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_conv2d_int8_params *p = params;
  const int32_t filter_size = p->k_h * p->k_w * p->in_c;
  for (int32_t oy = 0; oy < p->out_h; ++oy) {
    const int32_t in_y0 = oy * p->stride_h - p->pad_top;
    for (int32_t ox = 0; ox < p->out_w; ++ox) {
      const int32_t in_x0 = ox * p->stride_w - p->pad_left;
      for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const int8_t *f = filter + oc * filter_size;
        int32_t acc = 0;
        for (int32_t ky = 0; ky < p->k_h; ++ky) {
          const int32_t in_y = in_y0 + ky * p->dilation_h;
          if (in_y < 0 || in_y >= p->in_h) {
            continue; /* outside the image: no contribution, as in TFLite */
          }
          for (int32_t kx = 0; kx < p->k_w; ++kx) {
            const int32_t in_x = in_x0 + kx * p->dilation_w;
            if (in_x < 0 || in_x >= p->in_w) {
              continue;
            }
            const int8_t *pixel = input + (in_y * p->in_w + in_x) * p->in_c;
            const int8_t *w = f + (ky * p->k_w + kx) * p->in_c;
            for (int32_t ic = 0; ic < p->in_c; ++ic) {
              acc += (int32_t)w[ic] * ((int32_t)pixel[ic] + p->input_offset);
            }
          }
        }
        if (bias != NULL) {
          acc = ob_wrapping_add(acc, bias[oc]);
        }
        output[(oy * p->out_w + ox) * p->out_c + oc] = ob_conv2d_requantize(p, oc, acc);
      }
    }
  }
  return OB_OK;
}
