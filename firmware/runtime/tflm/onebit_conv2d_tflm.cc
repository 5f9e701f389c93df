/* ONEBIT_CONV2D for TensorFlow Lite Micro: a thin adapter over the C kernel
 * ob_onebit_conv2d (firmware/kernels/onebit_conv2d.h, spec in docs/onebit_conv2d.md).
 *
 * Init parses the FlexBuffer custom options (onebit_conv2d_options.h), Prepare checks tensors and computes the
 * per-channel requantization exactly as TFLite's int8 CONV_2D does
 * (PopulateConvolutionQuantizationParams: QuantizeMultiplier of
 * double(input_scale) * double(filter_scale) / double(output_scale)) and asks TFLM for
 * the scratch the linked kernel variant can use (ob_onebit_conv2d_scratch_bytes: the
 * Cortex-M DSP variant's fast path needs it, the reference none), Eval calls the kernel
 * with that scratch. An input whose channels are not a multiple of 8 (a stem of 1 to 7
 * channels) runs as the static runtime runs it, as a 1x1 conv over im2col rows
 * (onebit_conv2d_im2col.h; converters/static_runtime.py _im2col): Prepare re-lays the
 * filter out for it into the persistent arena and asks for the gathered rows' scratch, so
 * every variant takes its whole-byte path. No heap: op data lives in TFLM's persistent arena, scratch in its
 * planned (non-persistent) arena, which converters/tflm_planner.py counts. */
#include "onebit_conv2d_tflm.h"

#include <stdint.h>
#include <string.h>

#include "onebit_conv2d.h"
#include "onebit_conv2d_im2col.h"
#include "onebit_conv2d_options.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/kernels/internal/quantization_util.h"
#include "tensorflow/lite/kernels/internal/tensor_ctypes.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/kernels/padding.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace onebit {
namespace {

struct OpData {
  ob_onebit_conv2d_params params;  /* shapes, padding, quantization; arrays in the arena */
  ob_onebit_conv2d_options options;
  const char* options_error;  /* set by Init, reported by Prepare */
  const char* options_key;    /* the key options_error is about, or nullptr */
  int scratch_index;  /* TFLM scratch buffer of the kernel (or the im2col stem), -1 when none */
  /* The im2col stem (stem_filter != nullptr): params is then the 1x1 conv over the gathered
   * rows, stem.conv points at it, stem_filter is the filter re-laid out for it. */
  ob_onebit_conv2d_im2col_params stem;
  uint8_t* stem_filter;
};

/* The im2col stem's filter from the graph's [O, KH, KW, ceil(I / 8)] bits, as
 * converters/onebit_conv2d.py im2col_filter makes it: [O][depth / 8], bit
 * (ky * KW + kx) * I + c the weight of tap (ky, kx), channel c; 0 bits after the taps. */
void RelayStemFilter(const uint8_t* packed, int32_t out_c, int32_t k_h, int32_t k_w, int32_t in_c, int32_t depth,
                     uint8_t* out) {
  const int32_t packed_depth = ONEBIT_PACKED_DEPTH(in_c);
  memset(out, 0, static_cast<size_t>(out_c) * (depth / 8));
  for (int32_t o = 0; o < out_c; ++o) {
    for (int32_t tap = 0; tap < k_h * k_w; ++tap) {
      const uint8_t* bytes = packed + (o * k_h * k_w + tap) * packed_depth;
      for (int32_t c = 0; c < in_c; ++c) {
        const int32_t bit = tap * in_c + c;
        out[o * (depth / 8) + bit / 8] |= static_cast<uint8_t>(((bytes[c / 8] >> (c % 8)) & 1) << (bit % 8));
      }
    }
  }
}

TfLitePadding Padding(int32_t padding) {
  return padding == OB_PADDING_SAME ? kTfLitePaddingSame : kTfLitePaddingValid;
}

TfLiteFusedActivation Activation(int32_t activation) {
  switch (activation) {
    case OB_ACTIVATION_RELU: return kTfLiteActRelu;
    case OB_ACTIVATION_RELU6: return kTfLiteActRelu6;
    case OB_ACTIVATION_RELU_N1_TO_1: return kTfLiteActReluN1To1;
    default: return kTfLiteActNone;
  }
}

void* Init(TfLiteContext* context, const char* buffer, size_t length) {
  void* raw = context->AllocatePersistentBuffer(context, sizeof(OpData));
  if (raw == nullptr) return nullptr;
  OpData* data = static_cast<OpData*>(raw);
  memset(data, 0, sizeof(OpData));
  data->options_error = ob_onebit_conv2d_parse_options(reinterpret_cast<const uint8_t*>(buffer),
                                                       length, &data->options, &data->options_key);
  return data;
}

#define OB_CHECK(condition, ...)               \
  do {                                         \
    if (!(condition)) {                        \
      MicroPrintf(ONEBIT_CONV2D_OP_NAME ": " __VA_ARGS__); \
      return kTfLiteError;                     \
    }                                          \
  } while (0)

/* The conv of a 1-7 channel input as the im2col stem: rows as converters/static_runtime.py
 * _im2col gathers them (as many as a copy of the input padded to 8 channels would take). */
TfLiteStatus PrepareStem(TfLiteContext* context, const TfLiteTensor* filter, OpData* data) {
  ob_onebit_conv2d_params* p = &data->params;
  const int32_t depth = ONEBIT_PACKED_DEPTH(p->k_h * p->k_w * p->in_c) * 8;
  OB_CHECK(depth <= ONEBIT_CONV2D_DIM_MAX, "the stem's %d taps exceed %d", p->k_h * p->k_w * p->in_c,
           ONEBIT_CONV2D_DIM_MAX);
  int32_t rows = p->in_h * p->in_w * 8 / (p->out_w * depth);
  rows = rows < 1 ? 1 : (rows > p->out_h ? p->out_h : rows);
  data->stem = ob_onebit_conv2d_im2col_params{p, p->in_h, p->in_w, p->in_c, p->k_h, p->k_w, p->stride_h, p->stride_w,
                                              p->dilation_h, p->dilation_w, p->pad_top, p->pad_left, rows};
  data->stem_filter = static_cast<uint8_t*>(
      context->AllocatePersistentBuffer(context, static_cast<size_t>(p->out_c) * (depth / 8)));
  OB_CHECK(data->stem_filter != nullptr, "arena too small for the stem's %d-byte filter", p->out_c * depth / 8);
  RelayStemFilter(tflite::GetTensorData<uint8_t>(filter), p->out_c, p->k_h, p->k_w, p->in_c, depth,
                  data->stem_filter);
  /* params becomes the 1x1 conv over the gathered rows, with the conv's quantization. */
  p->in_h = p->out_h;
  p->in_w = p->out_w;
  p->in_c = depth;
  p->k_h = p->k_w = 1;
  p->stride_h = p->stride_w = p->dilation_h = p->dilation_w = 1;
  p->pad_top = p->pad_left = 0;
  OB_CHECK(ob_conv2d_params_valid(p), "the stem's 1x1 conv over %d-byte rows is outside the kernel's limits", depth);
  return kTfLiteOk;
}

TfLiteStatus CheckAndPrecompute(TfLiteContext* context, TfLiteNode* node, OpData* data,
                                const TfLiteTensor* input, const TfLiteTensor* filter,
                                const TfLiteTensor* bias, TfLiteTensor* output) {
  OB_CHECK(input != nullptr && filter != nullptr && output != nullptr, "missing input, filter or output tensor");
  OB_CHECK(input->type == kTfLiteInt8, "input must be int8, got %s", TfLiteTypeGetName(input->type));
  OB_CHECK(filter->type == kTfLiteUInt8, "packed filter must be uint8, got %s", TfLiteTypeGetName(filter->type));
  OB_CHECK(output->type == kTfLiteInt8, "output must be int8, got %s", TfLiteTypeGetName(output->type));
  OB_CHECK(input->dims->size == 4 && input->dims->data[0] == 1, "input must be [1, H, W, C]");
  OB_CHECK(output->dims->size == 4 && output->dims->data[0] == 1, "output must be [1, H, W, C]");
  OB_CHECK(filter->dims->size == 4, "packed filter must be [O, KH, KW, ceil(I/8)]");

  ob_onebit_conv2d_params* p = &data->params;
  p->in_h = input->dims->data[1];
  p->in_w = input->dims->data[2];
  p->in_c = input->dims->data[3];
  p->out_c = filter->dims->data[0];
  p->k_h = filter->dims->data[1];
  p->k_w = filter->dims->data[2];
  /* Sides from the model's bytes, bounded before any arithmetic here or in TFLite's
   * padding uses them (ob_conv2d_params_valid checks the rest). */
  const int32_t sides[] = {p->in_h, p->in_w, p->in_c, p->out_c, p->k_h, p->k_w};
  for (const int32_t side : sides) {
    OB_CHECK(side >= 1 && side <= ONEBIT_CONV2D_DIM_MAX,
             "input %dx%dx%d or filter %dx%dx%d outside 1..%d", p->in_h, p->in_w, p->in_c,
             p->out_c, p->k_h, p->k_w, ONEBIT_CONV2D_DIM_MAX);
  }
  OB_CHECK(filter->dims->data[3] == ONEBIT_PACKED_DEPTH(p->in_c),
           "packed filter depth %d does not fit %d input channels (expected %d)",
           filter->dims->data[3], p->in_c, ONEBIT_PACKED_DEPTH(p->in_c));
  OB_CHECK(output->dims->data[3] == p->out_c, "output has %d channels, filter has %d",
           output->dims->data[3], p->out_c);
  if (bias != nullptr) {
    OB_CHECK(bias->type == kTfLiteInt32, "bias must be int32, got %s", TfLiteTypeGetName(bias->type));
    OB_CHECK(bias->dims->size == 1 && bias->dims->data[0] == p->out_c, "bias must be [%d]", p->out_c);
  }

  const ob_onebit_conv2d_options* options = &data->options;
  p->stride_h = options->stride_h;
  p->stride_w = options->stride_w;
  p->dilation_h = options->dilation_h;
  p->dilation_w = options->dilation_w;
  int out_h = 0;
  int out_w = 0;
  const TfLitePaddingValues padding = tflite::ComputePaddingHeightWidth(
      p->stride_h, p->stride_w, p->dilation_h, p->dilation_w, p->in_h, p->in_w, p->k_h, p->k_w,
      Padding(options->padding), &out_h, &out_w);
  OB_CHECK(out_h == output->dims->data[1] && out_w == output->dims->data[2],
           "output is %dx%d but the options give %dx%d", output->dims->data[1],
           output->dims->data[2], out_h, out_w);
  p->out_h = out_h;
  p->out_w = out_w;
  p->pad_top = padding.height;
  p->pad_left = padding.width;

  OB_CHECK(input->quantization.type == kTfLiteAffineQuantization &&
               output->quantization.type == kTfLiteAffineQuantization &&
               filter->quantization.type == kTfLiteAffineQuantization,
           "input, filter and output must be affine-quantized");
  const TfLiteAffineQuantization* filter_quant =
      static_cast<const TfLiteAffineQuantization*>(filter->quantization.params);
  OB_CHECK(filter_quant != nullptr && filter_quant->scale != nullptr &&
               filter_quant->scale->size == p->out_c,
           "filter needs one scale per output channel (%d)", p->out_c);
  p->input_offset = -input->params.zero_point;
  p->output_offset = output->params.zero_point;
  int32_t act_min = 0;
  int32_t act_max = 0;
  TF_LITE_ENSURE_STATUS(tflite::CalculateActivationRangeQuantized(
      context, Activation(options->activation), output, &act_min, &act_max));
  p->act_min = act_min;
  p->act_max = act_max;

  const size_t bytes = sizeof(int32_t) * static_cast<size_t>(p->out_c);
  int32_t* multiplier = static_cast<int32_t*>(context->AllocatePersistentBuffer(context, bytes));
  int32_t* shift = static_cast<int32_t*>(context->AllocatePersistentBuffer(context, bytes));
  OB_CHECK(multiplier != nullptr && shift != nullptr, "arena too small for %d per-channel multipliers", p->out_c);
  const double input_scale = static_cast<double>(input->params.scale);
  const double output_scale = static_cast<double>(output->params.scale);
  for (int32_t c = 0; c < p->out_c; ++c) {
    const double effective = input_scale * static_cast<double>(filter_quant->scale->data[c]) / output_scale;
    int shift_c = 0;
    tflite::QuantizeMultiplier(effective, &multiplier[c], &shift_c);
    shift[c] = shift_c;
  }
  p->out_multiplier = multiplier;
  p->out_shift = shift;
  OB_CHECK(ob_conv2d_params_valid(p),
           "parameters outside the kernel's limits (docs/onebit_conv2d.md): channels %d -> %d, "
           "kernel %dx%d, zero points %d and %d",
           p->in_c, p->out_c, p->k_h, p->k_w, -p->input_offset, p->output_offset);
  (void)node;
  data->stem_filter = nullptr;
  if (p->in_c % 8 != 0) {
    TF_LITE_ENSURE_STATUS(PrepareStem(context, filter, data));
  }
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  OB_CHECK(node->user_data != nullptr, "no op data (arena too small in Init)");
  OpData* data = static_cast<OpData*>(node->user_data);
  OB_CHECK(data->options_error == nullptr, "bad custom options: %s%s%s",
           data->options_key != nullptr ? data->options_key : "",
           data->options_key != nullptr ? ": " : "", data->options_error);
  OB_CHECK(node->inputs->size == 2 || node->inputs->size == 3, "expects 2 or 3 inputs, got %d",
           node->inputs->size);
  OB_CHECK(node->outputs->size == 1, "expects 1 output, got %d", node->outputs->size);

  tflite::MicroContext* micro_context = tflite::GetMicroContext(context);
  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, ONEBIT_INPUT_TENSOR);
  TfLiteTensor* filter = micro_context->AllocateTempInputTensor(node, ONEBIT_FILTER_TENSOR);
  TfLiteTensor* bias = node->inputs->size == 3
                           ? micro_context->AllocateTempInputTensor(node, ONEBIT_BIAS_TENSOR)
                           : nullptr;
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, ONEBIT_OUTPUT_TENSOR);
  const TfLiteStatus status = CheckAndPrecompute(context, node, data, input, filter, bias, output);
  if (input != nullptr) micro_context->DeallocateTempTfLiteTensor(input);
  if (filter != nullptr) micro_context->DeallocateTempTfLiteTensor(filter);
  if (bias != nullptr) micro_context->DeallocateTempTfLiteTensor(bias);
  if (output != nullptr) micro_context->DeallocateTempTfLiteTensor(output);
  TF_LITE_ENSURE_STATUS(status);

  data->scratch_index = -1;
  const int32_t scratch_bytes = data->stem_filter != nullptr ? ob_onebit_conv2d_im2col_scratch_bytes(&data->stem)
                                                              : ob_onebit_conv2d_scratch_bytes(&data->params);
  if (scratch_bytes > 0) {
    OB_CHECK(context->RequestScratchBufferInArena(context, static_cast<size_t>(scratch_bytes),
                                                  &data->scratch_index) == kTfLiteOk,
             "could not request %d bytes of scratch", static_cast<int>(scratch_bytes));
  }
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* context, TfLiteNode* node) {
  const OpData* data = static_cast<const OpData*>(node->user_data);
  const TfLiteEvalTensor* input = tflite::micro::GetEvalInput(context, node, ONEBIT_INPUT_TENSOR);
  const TfLiteEvalTensor* filter = tflite::micro::GetEvalInput(context, node, ONEBIT_FILTER_TENSOR);
  const TfLiteEvalTensor* bias =
      node->inputs->size == 3 ? tflite::micro::GetEvalInput(context, node, ONEBIT_BIAS_TENSOR) : nullptr;
  TfLiteEvalTensor* output = tflite::micro::GetEvalOutput(context, node, ONEBIT_OUTPUT_TENSOR);
  void* scratch = data->scratch_index >= 0 ? context->GetScratchBuffer(context, data->scratch_index) : nullptr;
  const int32_t* bias_data = bias != nullptr ? tflite::micro::GetTensorData<int32_t>(bias) : nullptr;
  const ob_status status =
      data->stem_filter != nullptr
          ? ob_onebit_conv2d_im2col(&data->stem, tflite::micro::GetTensorData<int8_t>(input), data->stem_filter,
                                    bias_data, tflite::micro::GetTensorData<int8_t>(output), scratch)
          : ob_onebit_conv2d_ex(&data->params, tflite::micro::GetTensorData<int8_t>(input),
                                tflite::micro::GetTensorData<uint8_t>(filter), bias_data,
                                tflite::micro::GetTensorData<int8_t>(output), scratch);
  if (status != OB_OK) {
    MicroPrintf(ONEBIT_CONV2D_OP_NAME ": kernel failed: %s", ob_status_str(status));
    return kTfLiteError;
  }
  return kTfLiteOk;
}

}  // namespace

TflmRegistration* Register_ONEBIT_CONV2D() {
  static TflmRegistration registration = tflite::micro::RegisterOp(Init, Prepare, Eval);
  return &registration;
}

}  // namespace onebit
