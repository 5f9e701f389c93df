/* What the project's TFLM kernels of two inputs and one output (add_tflm.cc, mul_tflm.cc,
 * pad_tflm.cc, channel_table_tflm.cc) share: Prepare's frame around their checks, the
 * broadcast period of an operand, as converters/quant.py broadcast_period computes it for
 * the static runtime, and their check macro. */
#ifndef ONEBIT_ELEMENTWISE_TFLM_H
#define ONEBIT_ELEMENTWISE_TFLM_H

#include <stdint.h>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace onebit {

/* Prepare's frame: the node's inputs 0 and 1 and output 0 as TFLM's temporary tensors,
 * given to check(input0, input1, output) (any may be null), and released whatever it
 * returns. */
template <typename Check>
TfLiteStatus WithTempTensors(TfLiteContext* context, TfLiteNode* node, Check check) {
  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* input0 = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* input1 = micro_context->AllocateTempInputTensor(node, 1);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  const TfLiteStatus status = check(input0, input1, output);
  if (input0 != nullptr) micro_context->DeallocateTempTfLiteTensor(input0);
  if (input1 != nullptr) micro_context->DeallocateTempTfLiteTensor(input1);
  if (output != nullptr) micro_context->DeallocateTempTfLiteTensor(output);
  return status;
}

/* How many elements `operand` has when it repeats along the output's leading axes, or -1
 * when it broadcasts along inner axes (which ob_add and ob_mul do not do). */
static inline int32_t BroadcastPeriod(const TfLiteIntArray* operand, const TfLiteIntArray* output) {
  int first = 0;
  while (first < operand->size && operand->data[first] == 1) ++first;
  const int kept = operand->size - first;
  if (kept > output->size) return -1;
  int32_t period = 1;
  for (int i = 0; i < kept; ++i) {
    const int32_t side = operand->data[first + i];
    if (side != output->data[output->size - kept + i]) return -1;
    period *= side;
  }
  return period;
}

}  // namespace onebit

#define OB_TFLM_CHECK(op, condition, ...)   \
  do {                                      \
    if (!(condition)) {                     \
      MicroPrintf(op ": " __VA_ARGS__);     \
      return kTfLiteError;                  \
    }                                       \
  } while (0)

#endif /* ONEBIT_ELEMENTWISE_TFLM_H */
