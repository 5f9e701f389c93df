/* libFuzzer harness: the conv kernels' parameter check (ob_conv2d_params_valid) with every
 * field as a model's bytes can set it. Parameters it accepts are run, when their tensors
 * are small, through the 1-bit reference kernel and the int8 CONV_2D kernel on buffers of
 * exactly the sizes the parameters give, so ASan and UBSan see any index or accumulator
 * arithmetic the check let through.
 *
 * Input: the 18 int32 fields of ob_onebit_conv2d_params in order (little-endian), then per
 * output channel a multiplier and a shift (int32), then bytes for the input, filters and
 * bias (reused cyclically). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conv_int8.h"
#include "onebit_conv2d.h"

/* Bounds of the buffers and work one input may take (not of the check). */
#define FUZZ_MAX_ELEMENTS 4096
#define FUZZ_MAX_MACS 200000

static int32_t read_i32(const uint8_t **data, size_t *size) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= (uint32_t)(*size > 0 ? **data : 0) << (8 * i);
    if (*size > 0) {
      ++*data;
      --*size;
    }
  }
  return (int32_t)v;
}

static void *filled(size_t bytes, const uint8_t *data, size_t size) {
  uint8_t *p = malloc(bytes > 0 ? bytes : 1);
  for (size_t i = 0; i < bytes; ++i) p[i] = size > 0 ? data[i % size] : (uint8_t)i;
  return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ob_onebit_conv2d_params p;
  int32_t *fields[] = {&p.in_h, &p.in_w, &p.in_c, &p.out_h, &p.out_w, &p.out_c,
                       &p.k_h, &p.k_w, &p.stride_h, &p.stride_w, &p.dilation_h,
                       &p.dilation_w, &p.pad_top, &p.pad_left, &p.input_offset,
                       &p.output_offset, &p.act_min, &p.act_max};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; ++i) *fields[i] = read_i32(&data, &size);
  /* Up to 64 channels' requantization from the input; the check reads out_c of them. */
  int32_t multiplier[64], shift[64];
  for (int i = 0; i < 64; ++i) {
    multiplier[i] = read_i32(&data, &size);
    shift[i] = read_i32(&data, &size);
  }
  p.out_multiplier = multiplier;
  p.out_shift = shift;
  if (p.out_c < 1 || p.out_c > 64) {
    p.out_multiplier = NULL; /* fewer arrays than channels: must be refused */
    p.out_shift = NULL;
  }
  if (!ob_conv2d_params_valid(&p)) return 0;

  const int64_t in_n = (int64_t)p.in_h * p.in_w * p.in_c;
  const int64_t out_n = (int64_t)p.out_h * p.out_w * p.out_c;
  const int64_t filter_n = (int64_t)p.out_c * p.k_h * p.k_w * p.in_c;
  const int64_t macs = out_n * p.k_h * p.k_w * p.in_c;
  if (in_n > FUZZ_MAX_ELEMENTS || out_n > FUZZ_MAX_ELEMENTS || filter_n > FUZZ_MAX_ELEMENTS ||
      macs > FUZZ_MAX_MACS) {
    return 0;
  }
  const size_t packed_n = (size_t)p.out_c * p.k_h * p.k_w * ONEBIT_PACKED_DEPTH(p.in_c);
  int8_t *input = filled((size_t)in_n, data, size);
  uint8_t *packed = filled(packed_n, data, size);
  int8_t *filter = filled((size_t)filter_n, data, size);
  int32_t *bias = filled(sizeof(int32_t) * (size_t)p.out_c, data, size);
  int8_t *output = malloc((size_t)out_n);
  if (ob_onebit_conv2d(&p, input, packed, bias, output) != OB_OK) abort();
  if (ob_conv2d_int8(&p, input, filter, bias, output) != OB_OK) abort();
  if (ob_onebit_conv2d(&p, input, packed, NULL, output) != OB_OK) abort();
  free(input);
  free(packed);
  free(filter);
  free(bias);
  free(output);
  return 0;
}
