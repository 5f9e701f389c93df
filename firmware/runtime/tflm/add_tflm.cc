/* ADD (int8) as a TFLM kernel over ob_add. Prepare computes ob_add_params as
 * converters/quant.py add_params does (TFLite's add.cc Prepare, float32 where it computes
 * in float32) into the persistent arena; Eval calls ob_add, as the static runtime does
 * (its input tables live on the stack for the call, not in the arena). */
#include "add_tflm.h"

#include <stdint.h>
#include <string.h>

#include "add.h"
#include "elementwise_tflm.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/kernels/internal/quantization_util.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"

namespace onebit {
namespace {

constexpr int kLeftShift = 20;  /* TFLite's for int8 */

struct OpData {
  ob_add_params params;
};

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  void* raw = context->AllocatePersistentBuffer(context, sizeof(OpData));
  if (raw != nullptr) memset(raw, 0, sizeof(OpData));
  return raw;
}

TfLiteStatus CheckAndPrecompute(TfLiteContext* context, const TfLiteAddParams* options, const TfLiteTensor* input1,
                                const TfLiteTensor* input2, const TfLiteTensor* output, OpData* data) {
  OB_TFLM_CHECK("ADD", input1 != nullptr && input2 != nullptr && output != nullptr, "missing input or output tensor");
  OB_TFLM_CHECK("ADD", input1->type == kTfLiteInt8 && input2->type == kTfLiteInt8 && output->type == kTfLiteInt8,
                "inputs and output must be int8, got %s, %s and %s", TfLiteTypeGetName(input1->type),
                TfLiteTypeGetName(input2->type), TfLiteTypeGetName(output->type));
  ob_add_params* p = &data->params;
  p->size = tflite::NumElements(output);
  p->input1_period = BroadcastPeriod(input1->dims, output->dims);
  p->input2_period = BroadcastPeriod(input2->dims, output->dims);
  OB_TFLM_CHECK("ADD", p->input1_period > 0 && p->input2_period > 0,
                "an operand broadcasts along inner axes; only same-shape, per-channel and scalar operands");
  const float twice_max = 2 * (input1->params.scale > input2->params.scale ? input1->params.scale : input2->params.scale);
  const double real1 = static_cast<double>(input1->params.scale) / static_cast<double>(twice_max);
  const double real2 = static_cast<double>(input2->params.scale) / static_cast<double>(twice_max);
  const double real_out = static_cast<double>(twice_max) / static_cast<double>((1 << kLeftShift) * output->params.scale);
  int shift1 = 0, shift2 = 0, shift_out = 0;
  tflite::QuantizeMultiplierSmallerThanOneExp(real1, &p->input1_multiplier, &shift1);
  tflite::QuantizeMultiplierSmallerThanOneExp(real2, &p->input2_multiplier, &shift2);
  tflite::QuantizeMultiplierSmallerThanOneExp(real_out, &p->output_multiplier, &shift_out);
  p->input1_shift = shift1;
  p->input2_shift = shift2;
  p->output_shift = shift_out;
  p->left_shift = kLeftShift;
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
  OB_TFLM_CHECK("ADD", node->user_data != nullptr && node->builtin_data != nullptr, "no op data (arena too small in Init)");
  OB_TFLM_CHECK("ADD", node->inputs->size == 2 && node->outputs->size == 1, "expects 2 inputs and 1 output");
  return WithTempTensors(context, node, [&](TfLiteTensor* input1, TfLiteTensor* input2, TfLiteTensor* output) {
    return CheckAndPrecompute(context, static_cast<const TfLiteAddParams*>(node->builtin_data),
                              input1, input2, output, static_cast<OpData*>(node->user_data));
  });
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input1 = tflite::micro::GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* input2 = tflite::micro::GetEvalInput(context, node, 1);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  const ob_status status = ob_add(&data->params, tflite::micro::GetTensorData<int8_t>(input1),
                                           tflite::micro::GetTensorData<int8_t>(input2),
                                           tflite::micro::GetTensorData<int8_t>(output));
  OB_TFLM_CHECK("ADD", status == OB_OK, "kernel failed: %s", ob_status_str(status));
  return kTfLiteOk;
}

}  // namespace

TflmRegistration* Register_ADD() {
  static TflmRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace onebit
