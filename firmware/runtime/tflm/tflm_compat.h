/* Selects between the two TensorFlow Lite Micro kernel APIs at compile time.
 *
 * - Current TFLM (tensorflow/tflite-micro since 2023-05, Espressif's esp-tflite-micro and
 *   Arduino ports of it): kernels register as `TFLMRegistration`, declared in
 *   tensorflow/lite/micro/micro_common.h, and flexbuffers is "flatbuffers/flexbuffers.h"
 *   (onebit_conv2d_options.cc includes it).
 * - The Arduino_TensorFlowLite library (tflite-micro-arduino-examples, last synced
 *   2023-02): kernels register as `TfLiteRegistration`; micro_common.h does not exist and
 *   flexbuffers lives under third_party/flatbuffers/include/.
 *
 * The discriminator is the presence of micro_common.h, the header that introduced
 * TFLMRegistration. Everything else the adapter uses (tflite::micro::RegisterOp,
 * MicroContext, kernel_util, QuantizeMultiplier, padding) has the same spelling in both.
 */
#ifndef ONEBIT_TFLM_COMPAT_H
#define ONEBIT_TFLM_COMPAT_H

#if __has_include("tensorflow/lite/micro/micro_common.h")
#include "tensorflow/lite/micro/micro_common.h"
#define OB_TFLM_API_NAME "TFLMRegistration"
namespace onebit {
using TflmRegistration = TFLMRegistration;
}
#else
#include "tensorflow/lite/c/common.h"
#define OB_TFLM_API_NAME "TfLiteRegistration"
namespace onebit {
using TflmRegistration = TfLiteRegistration;
}
#endif

#endif /* ONEBIT_TFLM_COMPAT_H */
