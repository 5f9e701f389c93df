/* ONEBIT_CHANNEL_TABLE as a TFLM kernel over ob_channel_table. Prepare checks the tensors
 * against the op's contract (channel_table.h) and keeps the kernel's params in the
 * persistent arena; Eval looks each value up. */
#include "channel_table_tflm.h"

#include <stdint.h>
#include <string.h>

#include "channel_table.h"
#include "elementwise_tflm.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"

namespace onebit {
namespace {

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  (void)buffer;
  (void)length;
  void* raw = context->AllocatePersistentBuffer(context, sizeof(ob_channel_table_params));
  if (raw != nullptr) memset(raw, 0, sizeof(ob_channel_table_params));
  return raw;
}

bool SameShape(const TfLiteIntArray* a, const TfLiteIntArray* b) {
  if (a->size != b->size) return false;
  for (int i = 0; i < a->size; ++i) {
    if (a->data[i] != b->data[i]) return false;
  }
  return true;
}

TfLiteStatus Check(const TfLiteTensor* input, const TfLiteTensor* table, const TfLiteTensor* output,
                   ob_channel_table_params* p) {
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, input != nullptr && table != nullptr && output != nullptr, "missing input, table or output tensor");
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, input->type == kTfLiteInt8 && table->type == kTfLiteInt8 && output->type == kTfLiteInt8,
                "input, table and output must be int8, got %s, %s and %s", TfLiteTypeGetName(input->type),
                TfLiteTypeGetName(table->type), TfLiteTypeGetName(output->type));
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, tflite::IsConstantTensor(table), "the table must be a constant tensor");
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, SameShape(input->dims, output->dims) && output->dims->size >= 1,
                "input and output must have one shape");
  const int32_t channels = output->dims->data[output->dims->size - 1];
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, channels > 0 && tflite::NumElements(table) == static_cast<int64_t>(channels) * OB_CHANNEL_TABLE_ENTRIES,
                "the table holds %d values, not %d per channel for %d channels", static_cast<int>(tflite::NumElements(table)),
                OB_CHANNEL_TABLE_ENTRIES, static_cast<int>(channels));
  p->size = static_cast<int32_t>(tflite::NumElements(output));
  p->channels = channels;
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, node->user_data != nullptr, "no op data (arena too small in Init)");
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, node->inputs->size == 2 && node->outputs->size == 1, "expects 2 inputs and 1 output");
  return WithTempTensors(context, node, [&](TfLiteTensor* input, TfLiteTensor* table, TfLiteTensor* output) {
    return Check(input, table, output, static_cast<ob_channel_table_params*>(node->user_data));
  });
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, 0);
  const TfLiteEvalTensor* table = tflite::micro::GetEvalInput(context, node, 1);
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, 0);
  const ob_status status = ob_channel_table(static_cast<const ob_channel_table_params*>(node->user_data),
                                            tflite::micro::GetTensorData<int8_t>(table),
                                            tflite::micro::GetTensorData<int8_t>(input),
                                            tflite::micro::GetTensorData<int8_t>(output));
  OB_TFLM_CHECK(OB_CHANNEL_TABLE_OP_NAME, status == OB_OK, "kernel failed: %s", ob_status_str(status));
  return kTfLiteOk;
}

}  // namespace

TflmRegistration* Register_ONEBIT_CHANNEL_TABLE() {
  static TflmRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace onebit
