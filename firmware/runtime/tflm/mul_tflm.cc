/* MUL (int8) as a TFLM kernel over ob_mul. Prepare computes ob_mul_params as
 * converters/quant.py mul_params does (TFLite's mul.cc Prepare: the real multiplier in
 * float32) into the persistent arena; Eval calls the kernel. */
#include "mul_tflm.h"

#include <stdint.h>
#include <string.h>

#include "elementwise_tflm.h"
#include "mul.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/kernels/internal/quantization_util.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"

namespace onebit {
namespace {

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  void* raw = context->AllocatePersistentBuffer(context, sizeof(ob_mul_params));
  if (raw != nullptr) memset(raw, 0, sizeof(ob_mul_params));
  return raw;
}

TfLiteStatus CheckAndPrecompute(TfLiteContext* context, const TfLiteMulParams* options, const TfLiteTensor* input1,
                                const TfLiteTensor* input2, const TfLiteTensor* output, ob_mul_params* p) {
  OB_TFLM_CHECK("MUL", input1 != nullptr && input2 != nullptr && output != nullptr, "missing input or output tensor");
  OB_TFLM_CHECK("MUL", input1->type == kTfLiteInt8 && input2->type == kTfLiteInt8 && output->type == kTfLiteInt8,
                "inputs and output must be int8, got %s, %s and %s", TfLiteTypeGetName(input1->type),
                TfLiteTypeGetName(input2->type), TfLiteTypeGetName(output->type));
  p->size = tflite::NumElements(output);
  p->input1_period = BroadcastPeriod(input1->dims, output->dims);
  p->input2_period = BroadcastPeriod(input2->dims, output->dims);
  OB_TFLM_CHECK("MUL", p->input1_period > 0 && p->input2_period > 0,
                "an operand broadcasts along inner axes; only same-shape, per-channel and scalar operands");
  const float real = input1->params.scale * input2->params.scale / output->params.scale;
  int shift = 0;
  tflite::QuantizeMultiplier(static_cast<double>(real), &p->output_multiplier, &shift);
  p->output_shift = shift;
  p->input1_offset = -input1->params.zero_point;
  p->input2_offset = -input2->params.zero_point;
  p->output_offset = output->params.zero_point;
  int32_t act_min = 0, act_max = 0;
  TF_LITE_ENSURE_STATUS(tflite::CalculateActivationRangeQuantized(context, options->activation,
                                                                  const_cast<TfLiteTensor*>(output), &act_min, &act_max));
  p->act_min = act_min;
  p->act_max = act_max;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OB_TFLM_CHECK("MUL", node->user_data != nullptr && node->builtin_data != nullptr, "no op data (arena too small in Init)");
  OB_TFLM_CHECK("MUL", node->inputs->size == 2 && node->outputs->size == 1, "expects 2 inputs and 1 output");
  return WithTempTensors(context, node, [&](TfLiteTensor* input1, TfLiteTensor* input2, TfLiteTensor* output) {
    return CheckAndPrecompute(context, static_cast<const TfLiteMulParams*>(node->builtin_data),
                              input1, input2, output, static_cast<ob_mul_params*>(node->user_data));
  });
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* input1 = tflite::micro::GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* input2 = tflite::micro::GetEvalInput(context, node, 1);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  const ob_status status = ob_mul(static_cast<const ob_mul_params*>(node->user_data),
                                  tflite::micro::GetTensorData<int8_t>(input1), tflite::micro::GetTensorData<int8_t>(input2),
                                  tflite::micro::GetTensorData<int8_t>(output));
  OB_TFLM_CHECK("MUL", status == OB_OK, "kernel failed: %s", ob_status_str(status));
  return kTfLiteOk;
}

}  // namespace

TflmRegistration* Register_MUL() {
  static TflmRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace onebit
