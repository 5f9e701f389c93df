/* PAD (int8, [1, H, W, C] padded along H, W or C) as a TFLM kernel over ob_pad. Prepare
 * reads the constant paddings as converters/quant.py pad_params does (new elements take
 * the output zero point; input and output share one quantization); Eval calls the kernel. */
#include "pad_tflm.h"

#include <stdint.h>
#include <string.h>

#include "elementwise_tflm.h"
#include "pad.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"

namespace onebit {
namespace {

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  void* raw = context->AllocatePersistentBuffer(context, sizeof(ob_pad_params));
  if (raw != nullptr) memset(raw, 0, sizeof(ob_pad_params));
  return raw;
}

TfLiteStatus CheckAndPrecompute(const TfLiteTensor* input, const TfLiteTensor* paddings, const TfLiteTensor* output,
                                ob_pad_params* p) {
  OB_TFLM_CHECK("PAD", input != nullptr && paddings != nullptr && output != nullptr, "missing input, paddings or output");
  OB_TFLM_CHECK("PAD", input->type == kTfLiteInt8 && output->type == kTfLiteInt8, "input and output must be int8, got %s and %s",
                TfLiteTypeGetName(input->type), TfLiteTypeGetName(output->type));
  OB_TFLM_CHECK("PAD", input->dims->size == 4 && input->dims->data[0] == 1, "input must be [1, H, W, C]");
  OB_TFLM_CHECK("PAD", paddings->type == kTfLiteInt32 && paddings->data.i32 != nullptr && tflite::NumElements(paddings) == 8,
                "paddings must be 4x2 constant int32 values");
  OB_TFLM_CHECK("PAD", input->params.zero_point == output->params.zero_point && input->params.scale == output->params.scale,
                "input and output must share one quantization");
  const int32_t* pad = paddings->data.i32;
  OB_TFLM_CHECK("PAD", pad[0] == 0 && pad[1] == 0, "the batch axis cannot be padded");
  p->in_h = input->dims->data[1];
  p->in_w = input->dims->data[2];
  p->in_c = input->dims->data[3];
  p->pad_top = pad[2];
  p->pad_bottom = pad[3];
  p->pad_left = pad[4];
  p->pad_right = pad[5];
  p->pad_front = pad[6];
  p->pad_back = pad[7];
  p->pad_value = output->params.zero_point;
  OB_TFLM_CHECK("PAD", output->dims->size == 4 && output->dims->data[1] == p->in_h + p->pad_top + p->pad_bottom &&
                           output->dims->data[2] == p->in_w + p->pad_left + p->pad_right &&
                           output->dims->data[3] == p->in_c + p->pad_front + p->pad_back,
                "output shape differs from the input's padded by the paddings");
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OB_TFLM_CHECK("PAD", node->user_data != nullptr, "no op data (arena too small in Init)");
  OB_TFLM_CHECK("PAD", node->inputs->size == 2 && node->outputs->size == 1, "expects 2 inputs and 1 output");
  return WithTempTensors(context, node, [&](TfLiteTensor* input, TfLiteTensor* paddings, TfLiteTensor* output) {
    return CheckAndPrecompute(input, paddings, output, static_cast<ob_pad_params*>(node->user_data));
  });
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, 0);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  const ob_status status = ob_pad(static_cast<const ob_pad_params*>(node->user_data),
                                  tflite::micro::GetTensorData<int8_t>(input), tflite::micro::GetTensorData<int8_t>(output));
  OB_TFLM_CHECK("PAD", status == OB_OK, "kernel failed: %s", ob_status_str(status));
  return kTfLiteOk;
}

}  // namespace

TflmRegistration* Register_PAD() {
  static TflmRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace onebit
