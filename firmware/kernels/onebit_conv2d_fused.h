/* ONEBIT_CONV2D fused with its neighbours in a residual block (docs/onebit_conv2d.md,
 * "Fused forms"), alone or two of them as one pipeline: an input transform (batch norm as TFLite's MUL then ADD by per-channel
 * constants, the ADD's fused activation included, or its channel table) applied to the few input rows each
 * output row reads, and an ADD epilogue that sums each output row with a residual
 * tensor. Every value is computed by the same kernels as the unfused graph, on row
 * slices, so the outputs are bit-identical; what changes is memory: neither the
 * transformed input nor the conv's output exists as a whole tensor. */
#ifndef ONEBIT_CONV2D_FUSED_H
#define ONEBIT_CONV2D_FUSED_H

#include <stdint.h>

#include "add.h"
#include "channel_table.h"
#include "mul.h"
#include "ob_common.h"
#include "onebit_conv2d.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const ob_onebit_conv2d_params *conv; /* the whole conv, as unfused */
  /* Input transform: in_mul, in_add or both (NULL: none), sized for one input row
   * (in_w * in_c values, constants of period in_c); row = ADD(MUL(row, mul_constant),
   * add_constant), operands in the graph's order. */
  const ob_mul_params *in_mul;
  const int8_t *mul_constant;
  int32_t mul_constant_first; /* the constant is the MUL's input1 */
  const ob_add_params *in_add;
  const int8_t *add_constant;
  int32_t add_constant_first;
  /* Epilogue, or NULL: out_add sized for one output row (out_w * out_c); output row =
   * ADD(conv row, residual row), operands in the graph's order. */
  const ob_add_params *out_add;
  int32_t residual_first; /* the residual is the ADD's input1 */
  /* Output rows per kernel call: more rows cost window and row memory, fewer cost the
   * kernel's set-up per call (expanding weight masks) once more per block. */
  int32_t rows_per_call;
  /* Or the input transform as a channel table (channel_table.h, in_c tables of 256
   * bytes), in_mul and in_add then NULL: the same values, a lookup per value. */
  const int8_t *in_table;
} ob_onebit_conv2d_fused_params;

/* Scratch bytes: the tables of each ADD (ob_add_tables), the input rows one block of
 * output rows reads (with a transform), one block of output rows (with an epilogue), and
 * the conv kernel's own scratch, each 4-byte aligned. */
int32_t ob_onebit_conv2d_fused_scratch_bytes(const ob_onebit_conv2d_fused_params *params);

/* input: the conv's input before the transform; residual: the epilogue's other operand
 * (may be output itself: each residual value is read before its place is written; never
 * input). scratch: ob_onebit_conv2d_fused_scratch_bytes, 4-byte aligned. */
ob_status ob_onebit_conv2d_fused(const ob_onebit_conv2d_fused_params *params, const int8_t *input,
                                 const uint8_t *packed_filter, const int32_t *bias,
                                 const int8_t *residual, int8_t *output, void *scratch);

/* Two fused convs as one pipeline over rows: the second reads the first's output (its
 * transform applied) from a window of rows the first computes as they are needed, so
 * that the first's output is never a whole tensor. The first has no epilogue. */
typedef struct {
  const ob_onebit_conv2d_fused_params *first;
  const uint8_t *first_filter;
  const int32_t *first_bias;
  const ob_onebit_conv2d_fused_params *second; /* its rows_per_call: output rows per block; the first
                                                  computes the rows each block needs in calls of its own */
  const uint8_t *second_filter;
  const int32_t *second_bias;
} ob_onebit_conv2d_pair_params;

/* Scratch bytes: each conv's ADD tables, the first's window of transformed input rows,
 * the second's window of the first's output rows, one block of output rows (with an
 * epilogue) and the larger kernel scratch of the two, each 4-byte aligned. */
int32_t ob_onebit_conv2d_pair_scratch_bytes(const ob_onebit_conv2d_pair_params *params);

/* input: the first conv's input before its transform; residual: the second's epilogue
 * operand. output may be residual, or input itself where every block of output rows is
 * written after the first conv has read those input rows for the last time (else
 * OB_ERR_BAD_PARAMS, returned before the first block that would overwrite rows the
 * first conv has still to read). */
ob_status ob_onebit_conv2d_pair(const ob_onebit_conv2d_pair_params *params, const int8_t *input,
                                const int8_t *residual, int8_t *output, void *scratch);

#ifdef __cplusplus
}
#endif

#endif /* ONEBIT_CONV2D_FUSED_H */
