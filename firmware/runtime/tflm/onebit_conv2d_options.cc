/* The options parser of onebit_conv2d_options.h. Nothing in the bytes is trusted: the
 * FlexBuffer verifier checks every offset and size before anything is read, and each
 * value must have the type its key's row names (no conversions: flexbuffers' As* would
 * read a string "3" as 3, true as 1 and a vector as its length). */
#include "onebit_conv2d_options.h"

#include <string.h>

/* flatbuffers used header-only, as TFLM does: its locale-independent number parsing
 * (unused here) would need a symbol from the flatbuffers library. */
#ifndef FLATBUFFERS_LOCALE_INDEPENDENT
#define FLATBUFFERS_LOCALE_INDEPENDENT 0
#endif
#if __has_include("flatbuffers/flexbuffers.h")
#include "flatbuffers/flexbuffers.h"
#else /* the Arduino TFLM library (tflm_compat.h) */
#include "third_party/flatbuffers/include/flatbuffers/flexbuffers.h"
#endif

namespace {

struct IntKey {
  const char* key;
  int64_t min, max;
  int32_t ob_onebit_conv2d_options::*field;
};
#define OB_INT_ROW(key, min, max) {#key, min, max, &ob_onebit_conv2d_options::key},
constexpr IntKey kIntKeys[] = {ONEBIT_OPTIONS_INTS(OB_INT_ROW)};
#undef OB_INT_ROW

#define OB_NAME(name) #name,
#define OB_NAMES_ARRAY(key, names) constexpr const char* k_##key##_names[] = {names(OB_NAME) nullptr};
ONEBIT_OPTIONS_STRINGS(OB_NAMES_ARRAY)
#undef OB_NAMES_ARRAY
#undef OB_NAME

struct StringKey {
  const char* key;
  const char* const* names;  // nullptr-terminated
  int32_t ob_onebit_conv2d_options::*field;
};
#define OB_STRING_ROW(key, names) {#key, k_##key##_names, &ob_onebit_conv2d_options::key},
constexpr StringKey kStringKeys[] = {ONEBIT_OPTIONS_STRINGS(OB_STRING_ROW)};
#undef OB_STRING_ROW

constexpr size_t kIntCount = sizeof kIntKeys / sizeof kIntKeys[0];
constexpr size_t kKeyCount = kIntCount + sizeof kStringKeys / sizeof kStringKeys[0];

const char* KeyName(size_t row) {
  return row < kIntCount ? kIntKeys[row].key : kStringKeys[row - kIntCount].key;
}

// The value of an integer key: a FlexBuffer int or uint (inline or indirect) in [min, max].
bool ReadInt(const flexbuffers::Reference& value, const IntKey& row, int32_t* out) {
  int64_t v = 0;
  if (value.IsInt()) {
    v = value.AsInt64();
  } else if (value.IsUInt()) {
    const uint64_t u = value.AsUInt64();
    if (u > static_cast<uint64_t>(row.max)) return false;
    v = static_cast<int64_t>(u);
  } else {
    return false;
  }
  if (v < row.min || v > row.max) return false;
  *out = static_cast<int32_t>(v);
  return true;
}

// The position of a string key's value among its names: a FlexBuffer string, compared with
// its length (a string may hold a NUL), or -1.
int32_t ReadName(const flexbuffers::Reference& value, const StringKey& row) {
  if (!value.IsString()) return -1;
  const flexbuffers::String text = value.AsString();
  for (int32_t i = 0; row.names[i] != nullptr; ++i) {
    const size_t n = strlen(row.names[i]);
    if (text.length() == n && memcmp(text.c_str(), row.names[i], n) == 0) return i;
  }
  return -1;
}

}  // namespace

extern "C" const char* ob_onebit_conv2d_parse_options(const uint8_t* buffer, size_t length,
                                                      ob_onebit_conv2d_options* options,
                                                      const char** key) {
  *key = nullptr;
  if (buffer == nullptr || length == 0) return "no custom options";
  if (!flexbuffers::VerifyBuffer(buffer, length)) return "not a valid FlexBuffer";
  const flexbuffers::Reference root = flexbuffers::GetRoot(buffer, length);
  if (!root.IsMap()) return "not a FlexBuffer map";
  const flexbuffers::Map map = root.AsMap();
  const flexbuffers::TypedVector keys = map.Keys();
  const flexbuffers::Vector values = map.Values();
  if (keys.size() != values.size()) return "the map has a different number of keys and values";
  bool seen[kKeyCount] = {};
  for (size_t i = 0; i < keys.size(); ++i) {
    *key = keys[i].AsKey();
    // flatbuffers 2.0.8's verifier (Debian's) checks a key for any non-zero byte, not for
    // its terminating NUL: find that within the buffer before comparing.
    const uint8_t* const key_bytes = reinterpret_cast<const uint8_t*>(*key);
    if (memchr(key_bytes, 0, static_cast<size_t>(buffer + length - key_bytes)) == nullptr) {
      *key = nullptr;
      return "a key runs past the end of the options";
    }
    size_t row = 0;
    while (row < kKeyCount && strcmp(*key, KeyName(row)) != 0) ++row;
    if (row == kKeyCount) return "unknown key";
    if (seen[row]) return "key given twice";
    seen[row] = true;
    if (row < kIntCount) {
      const IntKey& int_key = kIntKeys[row];
      if (!ReadInt(values[i], int_key, &(options->*int_key.field))) {
        return int_key.field == &ob_onebit_conv2d_options::version
                   ? "version unknown to this firmware (it reads 1 to ONEBIT_CONV2D_OPTIONS_VERSION)"
                   : "not an integer in its range (docs/onebit_conv2d.md)";
      }
    } else {
      const StringKey& string_key = kStringKeys[row - kIntCount];
      const int32_t position = ReadName(values[i], string_key);
      if (position < 0) return "not a string the op knows (docs/onebit_conv2d.md)";
      options->*string_key.field = position;
    }
  }
  for (size_t row = 0; row < kKeyCount; ++row) {
    if (!seen[row]) {
      *key = KeyName(row);
      return "missing";
    }
  }
  *key = nullptr;
  return nullptr;
}
