/* Row-by-row driver of the im2col stem (onebit_conv2d_im2col.h). Portable: the conv is
 * whichever ob_onebit_conv2d_ex variant the build chose. */
#include "onebit_conv2d_im2col.h"

#include <stddef.h>
#include <string.h>

static int32_t align4(int32_t n) { return (n + 3) & ~3; }

static int32_t block_rows(const ob_onebit_conv2d_im2col_params *p) {
  return p->rows_per_call < p->conv->out_h ? p->rows_per_call : p->conv->out_h;
}

static int32_t window_bytes(const ob_onebit_conv2d_im2col_params *p) {
  return align4(block_rows(p) * p->conv->in_w * p->conv->in_c);
}

int32_t ob_onebit_conv2d_im2col_scratch_bytes(const ob_onebit_conv2d_im2col_params *params) {
  return window_bytes(params) + align4(ob_onebit_conv2d_scratch_bytes(params->conv));
}

static int valid(const ob_onebit_conv2d_im2col_params *p) {
  const ob_onebit_conv2d_params *c = p->conv;
  const int32_t sides[] = {p->in_h, p->in_w, p->in_c, p->k_h, p->k_w, p->stride_h, p->stride_w,
                           p->dilation_h, p->dilation_w, p->rows_per_call};
  for (size_t i = 0; i < sizeof sides / sizeof sides[0]; ++i) {
    if (sides[i] < 1 || sides[i] > ONEBIT_CONV2D_DIM_MAX) return 0;
  }
  return ob_conv2d_params_valid(c) && c->k_h == 1 && c->k_w == 1 && c->stride_h == 1 &&
         c->stride_w == 1 && c->pad_top == 0 && c->pad_left == 0 && c->in_h == c->out_h &&
         c->in_w == c->out_w && (c->in_c & 7) == 0 && p->pad_top >= 0 && p->pad_left >= 0 &&
         p->pad_top <= ONEBIT_CONV2D_DIM_MAX && p->pad_left <= ONEBIT_CONV2D_DIM_MAX &&
         (int64_t)p->k_h * p->k_w * p->in_c <= c->in_c;
}

/* n bytes; the common runs (3x3 taps of 1 or 3 channels) as fixed-size copies, which the
 * compiler turns into a few word moves. */
static inline void copy_run(int8_t *to, const int8_t *from, int32_t n) {
  switch (n) {
    case 3: memcpy(to, from, 3); break;
    case 9: memcpy(to, from, 9); break;
    default: for (int32_t i = 0; i < n; ++i) to[i] = from[i];
  }
}

/* n bytes of fill; the usual tails after 27 or 9 taps as fixed-size sets. */
static inline void fill_run(int8_t *to, int8_t fill, int32_t n) {
  switch (n) {
    case 5: memset(to, fill, 5); break;
    case 7: memset(to, fill, 7); break;
    default: for (int32_t i = 0; i < n; ++i) to[i] = fill;
  }
}

/* The depth bytes of every pixel of output row oy: its taps' channels in (ky, kx, c)
 * order. With dilation_w 1, a kernel row of a pixel whose taps are all in the image is
 * k_w * in_c contiguous input bytes. */
static void gather_row(const ob_onebit_conv2d_im2col_params *p, const int8_t *input, int32_t oy, int8_t fill,
                       int8_t *out) {
  const int32_t depth = p->conv->in_c;
  const int32_t run = p->k_w * p->in_c;
  const int32_t tail = depth - p->k_h * run;
  for (int32_t ox = 0; ox < p->conv->out_w; ++ox) {
    const int32_t ix0 = ox * p->stride_w - p->pad_left;
    const int row_inside = ix0 >= 0 && ix0 + (p->k_w - 1) * p->dilation_w < p->in_w && p->dilation_w == 1;
    for (int32_t ky = 0; ky < p->k_h; ++ky) {
      const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
      const int8_t *row = input + iy * p->in_w * p->in_c;
      if (iy < 0 || iy >= p->in_h) {
        fill_run(out, fill, run);
      } else if (row_inside) {
        copy_run(out, row + ix0 * p->in_c, run);
      } else {
        for (int32_t kx = 0; kx < p->k_w; ++kx) {
          const int32_t ix = ix0 + kx * p->dilation_w;
          for (int32_t c = 0; c < p->in_c; ++c) {
            out[kx * p->in_c + c] = ix >= 0 && ix < p->in_w ? row[ix * p->in_c + c] : fill;
          }
        }
      }
      out += run;
    }
    fill_run(out, fill, tail);
    out += tail;
  }
}

ob_status ob_onebit_conv2d_im2col(const ob_onebit_conv2d_im2col_params *params, const int8_t *input,
                                  const uint8_t *packed_filter, const int32_t *bias, int8_t *output,
                                  void *scratch) {
  const ob_onebit_conv2d_im2col_params *p = params;
  if (p == NULL || p->conv == NULL || input == NULL || output == NULL || scratch == NULL || !valid(p)) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_onebit_conv2d_params *c = p->conv;
  const int8_t fill = (int8_t)(-c->input_offset);
  int8_t *window = (int8_t *)scratch;
  void *kernel_scratch = ob_onebit_conv2d_scratch_bytes(c) > 0 ? (void *)(window + window_bytes(p)) : NULL;
  const int32_t row_bytes = c->in_w * c->in_c;
  for (int32_t oy = 0; oy < c->out_h; oy += block_rows(p)) {
    const int32_t n = c->out_h - oy < block_rows(p) ? c->out_h - oy : block_rows(p);
    for (int32_t y = 0; y < n; ++y) gather_row(p, input, oy + y, fill, window + y * row_bytes);
    ob_onebit_conv2d_params block = *c;
    block.in_h = block.out_h = n;
    const ob_status status = ob_onebit_conv2d_ex(&block, window, packed_filter, bias,
                                                 output + oy * c->out_w * c->out_c, kernel_scratch);
    if (status != OB_OK) {
      return status;
    }
  }
  return OB_OK;
}
