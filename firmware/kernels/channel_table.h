/* A chain of element-wise ops by per-channel constants (a batch norm as TFLite's MUL then
 * ADD, with the ADD's fused activation, or any chain of MUL, ADD and MAXIMUM whose second
 * operands are constants of one value or one per channel) as one table lookup per value
 * (docs/onebit_conv2d.md, "Channel tables"). For channel c the chain maps each int8 value
 * to one int8 value, so the converter evaluates it once for all 256 inputs with the
 * chain's exact arithmetic; the device then computes exactly the values of the ops it
 * replaces at a few instructions per value instead of about 45 per op. */
#ifndef OB_CHANNEL_TABLE_H
#define OB_CHANNEL_TABLE_H

#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The custom operator a TFLM graph runs it as (converters/channel_table.py
 * rewrite_channel_tables): inputs the int8 tensor and the constant int8 table
 * [channels, 256], output the int8 tensor of the input's shape; no options. */
#define OB_CHANNEL_TABLE_OP_NAME "ONEBIT_CHANNEL_TABLE"

/* Bytes of one channel's table: indexed by the input byte, (uint8_t)x. */
#define OB_CHANNEL_TABLE_ENTRIES 256

typedef struct {
  int32_t size;     /* values, a multiple of channels (the tensor's last dimension) */
  int32_t channels;
} ob_channel_table_params;

/* output[i] = table[(i % channels) * 256 + (uint8_t)input[i]]. output may be input. */
ob_status ob_channel_table(const ob_channel_table_params *params, const int8_t *table,
                           const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_CHANNEL_TABLE_H */
