#include "channel_table.h"

#include <stddef.h>

ob_status ob_channel_table(const ob_channel_table_params *params, const int8_t *table,
                           const int8_t *input, int8_t *output) {
  if (params == NULL || table == NULL || input == NULL || output == NULL || params->channels < 1 ||
      params->size < 1 || params->size % params->channels != 0) {
    return OB_ERR_BAD_PARAMS;
  }
  const int32_t channels = params->channels;
  const uint8_t *in = (const uint8_t *)input;
  const uint8_t *end = in + params->size;
  const int8_t *last = table + (channels - 1) * OB_CHANNEL_TABLE_ENTRIES;
  while (in != end) {
    const int8_t *t = table;
    /* Four channels per pass where they fill it: one table pointer step per value. */
    for (; t + 3 * OB_CHANNEL_TABLE_ENTRIES <= last; t += 4 * OB_CHANNEL_TABLE_ENTRIES) {
      const uint8_t a = in[0], b = in[1], c = in[2], d = in[3];
      output[0] = t[a];
      output[1] = t[OB_CHANNEL_TABLE_ENTRIES + b];
      output[2] = t[2 * OB_CHANNEL_TABLE_ENTRIES + c];
      output[3] = t[3 * OB_CHANNEL_TABLE_ENTRIES + d];
      in += 4;
      output += 4;
    }
    for (; t <= last; t += OB_CHANNEL_TABLE_ENTRIES) {
      *output++ = t[*in++];
    }
  }
  return OB_OK;
}
