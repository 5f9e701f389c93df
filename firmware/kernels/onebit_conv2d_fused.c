/* Row-by-row driver of the fused ONEBIT_CONV2D and of two of them as one pipeline
 * (onebit_conv2d_fused.h). Portable: each conv is whichever ob_onebit_conv2d_ex variant
 * the build chose. */
#include "onebit_conv2d_fused.h"

#include <stddef.h>
#include <string.h>

static int32_t align4(int32_t n) { return (n + 3) & ~3; }

static int32_t min32(int32_t a, int32_t b) { return a < b ? a : b; }

/* Output rows per conv call: the block (the last one may be shorter). */
static int32_t block_rows(const ob_onebit_conv2d_fused_params *f) { return min32(f->rows_per_call, f->conv->out_h); }

/* Input rows [first, last) that output rows [oy, oy_end) read (clipped to the image). */
static void rows_read(const ob_onebit_conv2d_params *p, int32_t oy, int32_t oy_end, int32_t *first,
                      int32_t *last) {
  const int32_t y0 = oy * p->stride_h - p->pad_top;
  const int32_t y1 = (oy_end - 1) * p->stride_h - p->pad_top + (p->k_h - 1) * p->dilation_h + 1;
  *first = y0 < 0 ? 0 : y0;
  *last = min32(y1, p->in_h);
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

/* Most input rows one block of output rows reads. */
static int32_t window_rows(const ob_onebit_conv2d_fused_params *f) {
  const ob_onebit_conv2d_params *p = f->conv;
  int32_t most = 0;
  for (int32_t oy = 0; oy < p->out_h; oy += block_rows(f)) {
    int32_t first, last;
    rows_read(p, oy, min32(oy + block_rows(f), p->out_h), &first, &last);
    most = last - first > most ? last - first : most;
  }
  return most;
}

/* In a pair, the most image rows the first conv reads in one call: the output rows one
 * block of the second's adds to its window, in blocks of the first's rows_per_call. */
static int32_t pair_first_rows(const ob_onebit_conv2d_pair_params *pair) {
  const ob_onebit_conv2d_fused_params *f = pair->first, *s = pair->second;
  int32_t most = 0, done = 0;
  for (int32_t oy = 0; oy < s->conv->out_h; oy += block_rows(s)) {
    int32_t first, last, x_first, x_last;
    rows_read(s->conv, oy, min32(oy + block_rows(s), s->conv->out_h), &first, &last);
    for (int32_t y = done > first ? done : first; y < last; y += f->rows_per_call) {
      rows_read(f->conv, y, min32(y + f->rows_per_call, last), &x_first, &x_last);
      most = x_last - x_first > most ? x_last - x_first : most;
    }
    done = last > done ? last : done;
  }
  return most;
}

static int32_t row_bytes(const ob_onebit_conv2d_fused_params *f) {
  return f->out_add != NULL ? align4(block_rows(f) * f->conv->out_w * f->conv->out_c) : 0;
}

static int32_t in_row_bytes(const ob_onebit_conv2d_params *p) { return p->in_w * p->in_c; }

/* ADD tables, built once per call instead of once per row (ob_add_prepare). */
static int32_t tables_bytes(const ob_onebit_conv2d_fused_params *f) {
  return (int32_t)sizeof(ob_add_tables) * ((f->in_add != NULL) + (f->out_add != NULL));
}

static int32_t kernel_scratch_bytes(const ob_onebit_conv2d_params *p) { return align4(ob_onebit_conv2d_scratch_bytes(p)); }

int32_t ob_onebit_conv2d_fused_scratch_bytes(const ob_onebit_conv2d_fused_params *params) {
  const int32_t window = transforms(params) ? align4(window_rows(params) * in_row_bytes(params->conv)) : 0;
  return tables_bytes(params) + window + row_bytes(params) + kernel_scratch_bytes(params->conv);
}

int32_t ob_onebit_conv2d_pair_scratch_bytes(const ob_onebit_conv2d_pair_params *params) {
  const ob_onebit_conv2d_fused_params *f = params->first, *s = params->second;
  const int32_t first_window = transforms(f) ? align4(pair_first_rows(params) * in_row_bytes(f->conv)) : 0;
  const int32_t kernel = kernel_scratch_bytes(f->conv) > kernel_scratch_bytes(s->conv) ? kernel_scratch_bytes(f->conv)
                                                                                       : kernel_scratch_bytes(s->conv);
  return tables_bytes(f) + tables_bytes(s) + first_window + align4(window_rows(s) * in_row_bytes(s->conv)) +
         row_bytes(s) + kernel;
}

static ob_status transform_row(const ob_onebit_conv2d_fused_params *f, const ob_add_tables *tables,
                               const int8_t *in, int8_t *out) {
  if (f->in_table != NULL) {
    const ob_channel_table_params row = {in_row_bytes(f->conv), f->conv->in_c};
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

static int valid(const ob_onebit_conv2d_fused_params *f) {
  if (f == NULL || f->conv == NULL || !ob_conv2d_params_valid(f->conv) || f->rows_per_call < 1 ||
      (f->in_table != NULL && (f->in_mul != NULL || f->in_add != NULL))) {
    return 0;
  }
  const int32_t in_row = in_row_bytes(f->conv), out_row = f->conv->out_w * f->conv->out_c;
  return !((f->in_mul != NULL && f->in_mul->size != in_row) || (f->in_add != NULL && f->in_add->size != in_row) ||
           (f->out_add != NULL && f->out_add->size != out_row));
}

/* One fused conv as it runs: its ADD tables, and its window of transformed input rows
 * (image rows [held_first, held_last)). */
typedef struct {
  const ob_onebit_conv2d_fused_params *f;
  ob_add_tables *in_tables, *out_tables;
  int8_t *window;
  int32_t held_first, held_last;
} conv_state;

/* Carves the conv's tables (prepared) and window from scratch; returns what follows. */
static int8_t *conv_state_init(conv_state *c, const ob_onebit_conv2d_fused_params *f, int8_t *scratch,
                               int32_t window_bytes, ob_status *status) {
  c->f = f;
  c->in_tables = (ob_add_tables *)scratch;
  c->out_tables = c->in_tables + (f->in_add != NULL);
  c->window = scratch + tables_bytes(f);
  c->held_first = c->held_last = 0;
  if ((f->in_add != NULL && ob_add_prepare(f->in_add, c->in_tables) != OB_OK) ||
      (f->out_add != NULL && ob_add_prepare(f->out_add, c->out_tables) != OB_OK)) {
    *status = OB_ERR_BAD_PARAMS;
  }
  return c->window + window_bytes;
}

/* Output rows [oy, oy_end) of the conv, its transform included, its epilogue not, into
 * out: the input rows they read not yet in the window are transformed into it (the
 * rows still held slide to its front). */
static ob_status conv_block(conv_state *c, const int8_t *input, const uint8_t *filter, const int32_t *bias,
                            int32_t oy, int32_t oy_end, int8_t *out, void *kernel_scratch) {
  const ob_onebit_conv2d_params *p = c->f->conv;
  const int32_t in_row = in_row_bytes(p);
  int32_t first, last;
  rows_read(p, oy, oy_end, &first, &last);
  const int8_t *source = input + first * in_row;
  if (transforms(c->f)) {
    int32_t kept = 0;
    if (first >= c->held_first && first < c->held_last) {
      kept = c->held_last - first;
      memmove(c->window, c->window + (first - c->held_first) * in_row, (size_t)(kept * in_row));
    }
    for (int32_t y = first + kept; y < last; ++y) {
      ob_status status = transform_row(c->f, c->in_tables, input + y * in_row, c->window + (y - first) * in_row);
      if (status != OB_OK) {
        return status;
      }
    }
    c->held_first = first;
    c->held_last = last;
    source = c->window;
  }
  const ob_onebit_conv2d_params block = block_params(p, oy, oy_end, first, last);
  return ob_onebit_conv2d_ex(&block, source, filter, bias, out, kernel_scratch);
}

/* The epilogue of output rows [oy, oy_end): out row = ADD(conv row, residual row). */
static ob_status epilogue(const conv_state *c, const int8_t *rows, const int8_t *residual, int32_t oy,
                          int32_t oy_end, int8_t *out) {
  const int32_t out_row = c->f->conv->out_w * c->f->conv->out_c;
  for (int32_t y = oy; y < oy_end; ++y) {
    const int8_t *res = residual + y * out_row;
    const int8_t *sum = rows + (y - oy) * out_row;
    ob_status status = c->f->residual_first ? ob_add_prepared(c->f->out_add, c->out_tables, res, sum, out + y * out_row)
                                            : ob_add_prepared(c->f->out_add, c->out_tables, sum, res, out + y * out_row);
    if (status != OB_OK) {
      return status;
    }
  }
  return OB_OK;
}

ob_status ob_onebit_conv2d_fused(const ob_onebit_conv2d_fused_params *params, const int8_t *input,
                                 const uint8_t *packed_filter, const int32_t *bias,
                                 const int8_t *residual, int8_t *output, void *scratch) {
  const ob_onebit_conv2d_fused_params *f = params;
  if (!valid(f) || input == NULL || output == NULL || (f->out_add != NULL && residual == NULL) ||
      (scratch == NULL && ob_onebit_conv2d_fused_scratch_bytes(f) > 0)) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_onebit_conv2d_params *p = f->conv;
  const int32_t out_row = p->out_w * p->out_c;
  ob_status status = OB_OK;
  conv_state c;
  int8_t *row = conv_state_init(&c, f, (int8_t *)scratch,
                                transforms(f) ? align4(window_rows(f) * in_row_bytes(p)) : 0, &status);
  void *kernel_scratch = kernel_scratch_bytes(p) > 0 ? (void *)(row + row_bytes(f)) : NULL;
  for (int32_t oy = 0; oy < p->out_h && status == OB_OK; oy += block_rows(f)) {
    const int32_t oy_end = min32(oy + block_rows(f), p->out_h);
    status = conv_block(&c, input, packed_filter, bias, oy, oy_end, f->out_add ? row : output + oy * out_row,
                        kernel_scratch);
    if (status == OB_OK && f->out_add != NULL) {
      status = epilogue(&c, row, residual, oy, oy_end, output);
    }
  }
  return status;
}

ob_status ob_onebit_conv2d_pair(const ob_onebit_conv2d_pair_params *params, const int8_t *input,
                                const int8_t *residual, int8_t *output, void *scratch) {
  if (params == NULL || !valid(params->first) || !valid(params->second) || input == NULL || output == NULL) {
    return OB_ERR_BAD_PARAMS;
  }
  const ob_onebit_conv2d_fused_params *f = params->first, *s = params->second;
  const ob_onebit_conv2d_params *p1 = f->conv, *p2 = s->conv;
  if (f->out_add != NULL || p1->out_h != p2->in_h || p1->out_w != p2->in_w || p1->out_c != p2->in_c ||
      (s->out_add != NULL && residual == NULL) || (scratch == NULL && ob_onebit_conv2d_pair_scratch_bytes(params) > 0)) {
    return OB_ERR_BAD_PARAMS;
  }
  const int32_t mid_row = in_row_bytes(p2), out_row = p2->out_w * p2->out_c;
  ob_status status = OB_OK;
  conv_state c1, c2;
  int8_t *next = conv_state_init(&c1, f, (int8_t *)scratch,
                                 transforms(f) ? align4(pair_first_rows(params) * in_row_bytes(p1)) : 0, &status);
  /* The second conv's window holds the first's output rows, transformed in place. */
  int8_t *row = conv_state_init(&c2, s, next, align4(window_rows(s) * mid_row), &status);
  void *kernel_scratch = kernel_scratch_bytes(p1) > 0 || kernel_scratch_bytes(p2) > 0 ? (void *)(row + row_bytes(s)) : NULL;
  for (int32_t oy = 0; oy < p2->out_h && status == OB_OK; oy += block_rows(s)) {
    const int32_t oy_end = min32(oy + block_rows(s), p2->out_h);
    int32_t first, last;
    rows_read(p2, oy, oy_end, &first, &last);
    int32_t kept = 0;
    if (first >= c2.held_first && first < c2.held_last) {
      kept = c2.held_last - first;
      memmove(c2.window, c2.window + (first - c2.held_first) * mid_row, (size_t)(kept * mid_row));
    }
    for (int32_t y = first + kept; y < last && status == OB_OK; y += f->rows_per_call) {
      status = conv_block(&c1, input, params->first_filter, params->first_bias, y, min32(y + f->rows_per_call, last),
                          c2.window + (y - first) * mid_row, kernel_scratch);
    }
    for (int32_t y = kept; y < last - first && status == OB_OK && transforms(s); ++y) {
      status = transform_row(s, c2.in_tables, c2.window + y * mid_row, c2.window + y * mid_row);
    }
    c2.held_first = first;
    c2.held_last = last;
    /* Written over the first conv's input, rows it will still read must be untouched. */
    int32_t next_first = p1->in_h, unused;
    if (last < p1->out_h) {
      rows_read(p1, last, p1->out_h, &next_first, &unused);
    }
    if (status != OB_OK || (output == input && next_first < oy_end)) {
      return status != OB_OK ? status : OB_ERR_BAD_PARAMS;
    }
    const ob_onebit_conv2d_params block = block_params(p2, oy, oy_end, first, last);
    status = ob_onebit_conv2d_ex(&block, c2.window, params->second_filter, params->second_bias,
                                 s->out_add ? row : output + oy * out_row, kernel_scratch);
    if (status == OB_OK && s->out_add != NULL) {
      status = epilogue(&c2, row, residual, oy, oy_end, output);
    }
  }
  return status;
}
