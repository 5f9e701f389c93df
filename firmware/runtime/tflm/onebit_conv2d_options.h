/* ONEBIT_CONV2D's custom options, read from their FlexBuffer bytes by the table
 * ONEBIT_OPTIONS_INTS / ONEBIT_OPTIONS_STRINGS of onebit_conv2d.h: the rules Python's
 * decode_options (converters/onebit_conv2d.py) follows too. Needs only flexbuffers.h, so
 * the TFLM adapter's Init and the fuzz harness (firmware/fuzz/options_fuzz.cc) compile
 * this same parser. */
#ifndef ONEBIT_CONV2D_OPTIONS_H
#define ONEBIT_CONV2D_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "onebit_conv2d.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OB_PADDING_ENUM(name) OB_PADDING_##name,
#define OB_ACTIVATION_ENUM(name) OB_ACTIVATION_##name,
typedef enum { ONEBIT_PADDINGS(OB_PADDING_ENUM) OB_PADDING_COUNT } ob_padding;
typedef enum { ONEBIT_ACTIVATIONS(OB_ACTIVATION_ENUM) OB_ACTIVATION_COUNT } ob_activation;
#undef OB_PADDING_ENUM
#undef OB_ACTIVATION_ENUM

/* One field per key of the table: the integer, or the position of the string among its
 * names (an ob_padding, an ob_activation). */
typedef struct {
#define OB_OPTIONS_FIELD(key, ...) int32_t key;
  ONEBIT_OPTIONS_INTS(OB_OPTIONS_FIELD)
  ONEBIT_OPTIONS_STRINGS(OB_OPTIONS_FIELD)
#undef OB_OPTIONS_FIELD
} ob_onebit_conv2d_options;

/* Parses length bytes at buffer into options. Returns NULL when they are valid options,
 * otherwise what is wrong (static text); *key then names the key concerned (a key from the
 * table, or one inside buffer), or is NULL when the bytes as a whole are refused. */
const char *ob_onebit_conv2d_parse_options(const uint8_t *buffer, size_t length,
                                           ob_onebit_conv2d_options *options, const char **key);

#ifdef __cplusplus
}
#endif

#endif /* ONEBIT_CONV2D_OPTIONS_H */
