/* int8 MEAN over the spatial axes for TensorFlow Lite Micro, on the project's kernel
 * ob_mean (firmware/kernels/mean.h): the arithmetic of TFLite's current reference MEAN,
 * the one the host twin runs. Registered in place of the library's MEAN by the generated
 * model.cc, because the Arduino_TensorFlowLite library (2023-02) rescales int8 MEAN in
 * float and differs from the twin by one step on some outputs. */
#ifndef ONEBIT_MEAN_TFLM_H
#define ONEBIT_MEAN_TFLM_H

#include "tflm_compat.h"

namespace onebit {

TflmRegistration* Register_MEAN();

}  // namespace onebit

#endif /* ONEBIT_MEAN_TFLM_H */
