/* MEAN (int8, axes 1 and 2 of [1, H, W, C]) as a TFLM kernel over ob_mean. Prepare
 * computes the parameters as converters/quant.py mean_params does (TFLite's reduce
 * Prepare, then the fold of 1 / (H * W) into the multiplier that its Eval does); Eval
 * calls the kernel. Op data lives in TFLM's persistent arena. */
#include "mean_tflm.h"

#include <stdint.h>
#include <string.h>

#include "mean.h"
#include "tensorflow/lite/kernels/internal/quantization_util.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace onebit {
namespace {

#define OB_MEAN_CHECK(condition, ...)     \
  do {                                    \
    if (!(condition)) {                   \
      MicroPrintf("MEAN: " __VA_ARGS__);  \
      return kTfLiteError;                \
    }                                     \
  } while (0)

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  void* raw = context->AllocatePersistentBuffer(context, sizeof(ob_mean_params));
  if (raw != nullptr) memset(raw, 0, sizeof(ob_mean_params));
  return raw;
}

TfLiteStatus CheckAndPrecompute(const TfLiteTensor* input, const TfLiteTensor* axis,
                                const TfLiteTensor* output, ob_mean_params* p) {
  OB_MEAN_CHECK(input != nullptr && axis != nullptr && output != nullptr, "missing input, axis or output tensor");
  OB_MEAN_CHECK(input->type == kTfLiteInt8 && output->type == kTfLiteInt8, "input and output must be int8, got %s and %s",
                TfLiteTypeGetName(input->type), TfLiteTypeGetName(output->type));
  OB_MEAN_CHECK(input->dims->size == 4 && input->dims->data[0] == 1, "input must be [1, H, W, C]");
  OB_MEAN_CHECK(axis->type == kTfLiteInt32 && axis->data.i32 != nullptr && tflite::NumElements(axis) == 2,
                "axis must be two constant int32 values");
  const int a0 = (axis->data.i32[0] + 4) % 4;
  const int a1 = (axis->data.i32[1] + 4) % 4;
  OB_MEAN_CHECK((a0 == 1 && a1 == 2) || (a0 == 2 && a1 == 1), "only axes (1, 2) are supported, got (%d, %d)",
                static_cast<int>(axis->data.i32[0]), static_cast<int>(axis->data.i32[1]));
  p->in_h = input->dims->data[1];
  p->in_w = input->dims->data[2];
  p->channels = input->dims->data[3];
  OB_MEAN_CHECK(tflite::NumElements(output) == p->channels, "output must hold %d values", static_cast<int>(p->channels));
  p->input_offset = -input->params.zero_point;
  p->output_offset = output->params.zero_point;
  const double real = static_cast<double>(input->params.scale) / static_cast<double>(output->params.scale);
  int32_t multiplier = 0;
  int shift = 0;
  tflite::QuantizeMultiplier(real, &multiplier, &shift);
  const int32_t count = p->in_h * p->in_w;
  int fold = 31 - __builtin_clz(static_cast<unsigned>(count));  /* floor(log2(count)) */
  if (fold > 32) fold = 32;
  if (fold > 31 + shift) fold = 31 + shift;
  p->multiplier = static_cast<int32_t>((static_cast<int64_t>(multiplier) << fold) / count);
  p->shift = shift - fold;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OB_MEAN_CHECK(node->user_data != nullptr, "no op data (arena too small in Init)");
  OB_MEAN_CHECK(node->inputs->size == 2 && node->outputs->size == 1, "expects 2 inputs and 1 output");
  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* axis = micro_context->AllocateTempInputTensor(node, 1);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  const TfLiteStatus status =
      CheckAndPrecompute(input, axis, output, static_cast<ob_mean_params*>(node->user_data));
  if (input != nullptr) micro_context->DeallocateTempTfLiteTensor(input);
  if (axis != nullptr) micro_context->DeallocateTempTfLiteTensor(axis);
  if (output != nullptr) micro_context->DeallocateTempTfLiteTensor(output);
  return status;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, 0);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  const ob_status status = ob_mean(static_cast<const ob_mean_params*>(node->user_data),
                                   tflite::micro::GetTensorData<int8_t>(input),
                                   tflite::micro::GetTensorData<int8_t>(output));
  if (status != OB_OK) {
    MicroPrintf("MEAN: kernel failed: %s", ob_status_str(status));
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

TflmRegistration* Register_MEAN() {
  static TflmRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace onebit
