/* Row-by-row driver of the fused ONEBIT_CONV2D (onebit_conv2d_fused.h). Portable: the
 * conv itself is whichever ob_onebit_conv2d_ex variant the build chose. */
#include "onebit_conv2d_fused.h"

#include <stddef.h>
#include <string.h>

static int32_t align4(int32_t n) { return (n + 3) & ~3; }

/* Output rows per conv call: the block (the last one may be shorter). */
static int32_t block_rows(const ob_onebit_conv2d_fused_params *f) {
  return f->rows_per_call < f->conv->out_h ? f->rows_per_call : f->conv->out_h;
}

/* Input rows [first, last) that output rows [oy, oy_end) read (clipped to the image). */
static void rows_read(const ob_onebit_conv2d_params *p, int32_t oy, int32_t oy_end, int32_t *first,
                      int32_t *last) {
  const int32_t y0 = oy * p->stride_h - p->pad_top;
  const int32_t y1 = (oy_end - 1) * p->stride_h - p->pad_top + (p->k_h - 1) * p->dilation_h + 1;
  *first = y0 < 0 ? 0 : y0;
  *last = y1 > p->in_h ? p->in_h : y1;
}

/* Most input rows one block reads. */
static int32_t window_rows(const ob_onebit_conv2d_fused_params *f) {
  const ob_onebit_conv2d_params *p = f->conv;
  int32_t most = 0;
  for (int32_t oy = 0; oy < p->out_h; oy += block_rows(f)) {
    const int32_t oy_end = oy + block_rows(f) < p->out_h ? oy + block_rows(f) : p->out_h;
    int32_t first, last;
    rows_read(p, oy, oy_end, &first, &last);
    most = last - first > most ? last - first : most;
  }
  return most;
}

/* The conv of output rows [oy, oy_end) alone, reading image rows first.. only. */
static ob_onebit_conv2d_params block_params(const ob_onebit_conv2d_params *p, int32_t oy,
                                            int32_t oy_end, int32_t first, int32_t last) {
  ob_onebit_conv2d_params block = *p;
  block.in_h = last - first;
  block.out_h = oy_end - oy;
  block.pad_top = first - (oy * p->stride_h - p->pad_top);
  return block;
}

static int transforms(const ob_onebit_conv2d_fused_params *f) {
  return f->in_mul != NULL || f->in_add != NULL || f->in_table != NULL;
}

static int32_t window_bytes(const ob_onebit_conv2d_fused_params *f) {
  const ob_onebit_conv2d_params *p = f->conv;
  return transforms(f) ? align4(window_rows(f) * p->in_w * p->in_c) : 0;
}

static int32_t row_bytes(const ob_onebit_conv2d_fused_params *f) {
  return f->out_add != NULL ? align4(block_rows(f) * f->conv->out_w * f->conv->out_c) : 0;
}

/* ADD tables, built once per call instead of once per row (ob_add_prepare). */
static int32_t tables_bytes(const ob_onebit_conv2d_fused_params *f) {
  return (int32_t)sizeof(ob_add_tables) * ((f->in_add != NULL) + (f->out_add != NULL));
}

int32_t ob_onebit_conv2d_fused_scratch_bytes(const ob_onebit_conv2d_fused_params *params) {
  return tables_bytes(params) + window_bytes(params) + row_bytes(params) +
         align4(ob_onebit_conv2d_scratch_bytes(params->conv));
}

static ob_status transform_row(const ob_onebit_conv2d_fused_params *f, const ob_add_tables *tables,
                               const int8_t *in, int8_t *out) {
  if (f->in_table != NULL) {
    const ob_channel_table_params row = {f->conv->in_w * f->conv->in_c, f->conv->in_c};
    return ob_channel_table(&row, f->in_table, in, out);
  }
  if (f->in_mul != NULL) {
    ob_status status = f->mul_constant_first ? ob_mul(f->in_mul, f->mul_constant, in, out)
                                             : ob_mul(f->in_mul, in, f->mul_constant, out);
    if (status != OB_OK) {
      return status;
    }
    in = out;
  }
  if (f->in_add == NULL) {
    return OB_OK;
  }
  return f->add_constant_first ? ob_add_prepared(f->in_add, tables, f->add_constant, in, out)
                               : ob_add_prepared(f->in_add, tables, in, f->add_constant, out);
}

ob_status ob_onebit_conv2d_fused(const ob_onebit_conv2d_fused_params *params, const int8_t *input,
                                 const uint8_t *packed_filter, const int32_t *bias,
                                 const int8_t *residual, int8_t *output, void *scratch) {
  const ob_onebit_conv2d_fused_params *f = params;
  if (f == NULL || f->conv == NULL || input == NULL || output == NULL ||
      !ob_conv2d_params_valid(f->conv) || f->rows_per_call < 1 ||
      (f->out_add != NULL && residual == NULL) ||
      (f->in_table != NULL && (f->in_mul != NULL || f->in_add != NULL)) || (scratch == NULL && ob_onebit_conv2d_fused_scratch_bytes(f) > 0)) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_onebit_conv2d_params *p = f->conv;
  const int32_t in_row = p->in_w * p->in_c;
  const int32_t out_row = p->out_w * p->out_c;
  if ((f->in_mul != NULL && f->in_mul->size != in_row) || (f->in_add != NULL && f->in_add->size != in_row) ||
      (f->out_add != NULL && f->out_add->size != out_row)) {
    return OB_ERR_BAD_PARAMS;
  }
  /* Scratch: tables first (int32), then the window, the row and the kernel's scratch. */
  ob_add_tables *in_tables = (ob_add_tables *)scratch;
  ob_add_tables *out_tables = in_tables + (f->in_add != NULL);
  if ((f->in_add != NULL && ob_add_prepare(f->in_add, in_tables) != OB_OK) ||
      (f->out_add != NULL && ob_add_prepare(f->out_add, out_tables) != OB_OK)) {
    return OB_ERR_BAD_PARAMS;
  }
  int8_t *window = (int8_t *)scratch + tables_bytes(f);
  int8_t *row = window + window_bytes(f);
  void *kernel_scratch = ob_onebit_conv2d_scratch_bytes(p) > 0 ? (void *)(row + row_bytes(f)) : NULL;
  int32_t held_first = 0, held_last = 0; /* image rows the window holds, transformed */
  for (int32_t oy = 0; oy < p->out_h; oy += block_rows(f)) {
    const int32_t oy_end = oy + block_rows(f) < p->out_h ? oy + block_rows(f) : p->out_h;
    int32_t first, last;
    rows_read(p, oy, oy_end, &first, &last);
    const int8_t *source = input + first * in_row;
    if (transforms(f)) {
      /* Rows still held slide to the front; only the new ones are transformed. */
      int32_t kept = 0;
      if (first >= held_first && first < held_last) {
        kept = held_last - first;
        memmove(window, window + (first - held_first) * in_row, (size_t)(kept * in_row));
      }
      for (int32_t y = first + kept; y < last; ++y) {
        ob_status status = transform_row(f, in_tables, input + y * in_row, window + (y - first) * in_row);
        if (status != OB_OK) {
          return status;
        }
      }
      held_first = first;
      held_last = last;
      source = window;
    }
    const ob_onebit_conv2d_params block = block_params(p, oy, oy_end, first, last);
    int8_t *out = output + oy * out_row;
    ob_status status = ob_onebit_conv2d_ex(&block, source, packed_filter, bias, f->out_add ? row : out, kernel_scratch);
    for (int32_t y = oy; y < oy_end && status == OB_OK && f->out_add != NULL; ++y) {
      const int8_t *res = residual + y * out_row;
      const int8_t *sum = row + (y - oy) * out_row;
      status = f->residual_first ? ob_add_prepared(f->out_add, out_tables, res, sum, out + (y - oy) * out_row)
                                 : ob_add_prepared(f->out_add, out_tables, sum, res, out + (y - oy) * out_row);
    }
    if (status != OB_OK) {
      return status;
    }
  }
  return OB_OK;
}
