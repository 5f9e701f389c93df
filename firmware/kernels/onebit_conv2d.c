/* Portable reference kernel of ONEBIT_CONV2D (docs/onebit_conv2d.md): TFLite's int8
 * per-channel CONV_2D arithmetic for +-127 filters, computed from one bit per weight. */
#include "onebit_conv2d.h"

#include <stddef.h>

ob_status ob_onebit_conv2d(const ob_onebit_conv2d_params *params, const int8_t *input,
                           const uint8_t *packed_filter, const int32_t *bias, int8_t *output) {
  if (params == NULL || input == NULL || packed_filter == NULL || output == NULL ||
      !ob_conv2d_params_valid(params)) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_onebit_conv2d_params *p = params;
  const int32_t packed_depth = ONEBIT_PACKED_DEPTH(p->in_c);
  const int32_t filter_size = p->k_h * p->k_w * packed_depth;

  for (int32_t oy = 0; oy < p->out_h; ++oy) {
    const int32_t in_y0 = oy * p->stride_h - p->pad_top;
    for (int32_t ox = 0; ox < p->out_w; ++ox) {
      const int32_t in_x0 = ox * p->stride_w - p->pad_left;
      for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const uint8_t *filter = packed_filter + oc * filter_size;
        /* T = sum of +-(x - zero point); taps outside the image contribute nothing, as
         * in TFLite (not zero-point padding). */
        int32_t t = 0;
        for (int32_t ky = 0; ky < p->k_h; ++ky) {
          const int32_t in_y = in_y0 + ky * p->dilation_h;
          if (in_y < 0 || in_y >= p->in_h) {
            continue;
          }
          for (int32_t kx = 0; kx < p->k_w; ++kx) {
            const int32_t in_x = in_x0 + kx * p->dilation_w;
            if (in_x < 0 || in_x >= p->in_w) {
              continue;
            }
            const int8_t *pixel = input + (in_y * p->in_w + in_x) * p->in_c;
            const uint8_t *bits = filter + (ky * p->k_w + kx) * packed_depth;
            for (int32_t ic = 0; ic < p->in_c; ++ic) {
              const int32_t v = (int32_t)pixel[ic] + p->input_offset;
              t += ((bits[ic >> 3] >> (ic & 7)) & 1u) ? v : -v;
            }
          }
        }
        /* The same int32 accumulator TFLite builds, with the 127 factored out. */
        int32_t acc = ONEBIT_CONV2D_MAGNITUDE * t;
        if (bias != NULL) {
          acc = ob_wrapping_add(acc, bias[oc]);
        }
        output[(oy * p->out_w + ox) * p->out_c + oc] = ob_conv2d_requantize(p, oc, acc);
      }
    }
  }
  return OB_OK;
}

int32_t ob_onebit_conv2d_scratch_bytes(const ob_onebit_conv2d_params *params) {
  (void)params;
  return 0;
}

ob_status ob_onebit_conv2d_ex(const ob_onebit_conv2d_params *params, const int8_t *input,
                              const uint8_t *packed_filter, const int32_t *bias, int8_t *output,
                              void *scratch) {
  (void)scratch;
  return ob_onebit_conv2d(params, input, packed_filter, bias, output);
}
