/* What a runtime gives the app: the static runtime's generated model.c implements it
 * (the TFLM runtime will too). One model per firmware image. */
#ifndef OB_MODEL_H
#define OB_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "ob_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  size_t input_bytes;    /* int8 input tensor, NHWC, batch 1 */
  size_t output_bytes;   /* int8 output tensor */
  size_t arena_bytes;    /* activation memory the runtime uses */
  const char *identity;  /* JSON object text: model hash, tensors, quantization (generated) */
  /* The output tensor's quantization: real value = (q - output_zero_point) * output_scale.
   * Last, so that positional initialisers (C++ before C++20) stay valid. */
  float output_scale;
  int32_t output_zero_point;
} ob_model_info;

extern const ob_model_info ob_model;

/* Runs one inference. input and output are caller-owned buffers of the sizes above. */
ob_status ob_model_invoke(const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* OB_MODEL_H */
