// libFuzzer harness: ONEBIT_CONV2D's custom options as a model file can hold them, through
// the parser the TFLM adapter's Init calls (runtime/tflm/onebit_conv2d_options.cc). Beyond
// memory errors and undefined behaviour, options it accepts must lie in the table's ranges.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "onebit_conv2d_options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly size bytes: ASan reports any read past the options.
  uint8_t* buffer = static_cast<uint8_t*>(malloc(size > 0 ? size : 1));
  if (size > 0) memcpy(buffer, data, size);
  ob_onebit_conv2d_options options;
  memset(&options, 0xA5, sizeof options);
  const char* key = nullptr;
  const char* problem = ob_onebit_conv2d_parse_options(buffer, size, &options, &key);
  if (problem == nullptr) {
#define OB_CHECK_RANGE(name, min, max) \
  if (options.name < (min) || options.name > (max)) abort();
    ONEBIT_OPTIONS_INTS(OB_CHECK_RANGE)
#undef OB_CHECK_RANGE
    if (options.padding < 0 || options.padding >= OB_PADDING_COUNT || options.activation < 0 ||
        options.activation >= OB_ACTIVATION_COUNT) {
      abort();
    }
  } else if (key != nullptr && strlen(key) > size) {
    abort();  // a key named from the buffer lies inside it
  }
  free(buffer);
  return 0;
}
