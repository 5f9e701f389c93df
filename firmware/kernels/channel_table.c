#include "channel_table.h"

#include <stddef.h>
#include <string.h>

#define ENTRIES OB_CHANNEL_TABLE_ENTRIES

ob_status ob_channel_table(const ob_channel_table_params *params, const int8_t *table,
                           const int8_t *input, int8_t *output) {
  if (params == NULL || table == NULL || input == NULL || output == NULL || params->channels < 1 ||
      params->size < 1 || params->size % params->channels != 0) {
    return OB_ERR_BAD_PARAMS;
  }
  const int32_t channels = params->channels;
  const uint8_t *in = (const uint8_t *)input;
  const uint8_t *end = in + params->size;
  if (channels % 4 == 0) {
    /* Four channels per word: one load and one store for four lookups (memcpy: one LDR
     * or STR on targets with unaligned access, and no aliasing assumption either way). */
    const int8_t *last = table + channels * ENTRIES;
    while (in != end) {
      for (const int8_t *t = table; t != last; t += 4 * ENTRIES, in += 4, output += 4) {
        uint32_t x;
        memcpy(&x, in, 4);
        const uint32_t y = (uint32_t)(uint8_t)t[x & 0xFFu] |
                           (uint32_t)(uint8_t)t[ENTRIES + (x >> 8 & 0xFFu)] << 8 |
                           (uint32_t)(uint8_t)t[2 * ENTRIES + (x >> 16 & 0xFFu)] << 16 |
                           (uint32_t)(uint8_t)t[3 * ENTRIES + (x >> 24)] << 24;
        memcpy(output, &y, 4);
      }
    }
    return OB_OK;
  }
  const int8_t *last = table + (channels - 1) * ENTRIES;
  while (in != end) {
    for (const int8_t *t = table; t <= last; t += ENTRIES) *output++ = t[*in++];
  }
  return OB_OK;
}
