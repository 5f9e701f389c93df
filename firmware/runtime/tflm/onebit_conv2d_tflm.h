/* ONEBIT_CONV2D as a TensorFlow Lite Micro custom op: register it with
 *   resolver.AddCustom(ONEBIT_CONV2D_OP_NAME, onebit::Register_ONEBIT_CONV2D());
 * Compiles against both TFLM kernel APIs (see tflm_compat.h). */
#ifndef ONEBIT_CONV2D_TFLM_H
#define ONEBIT_CONV2D_TFLM_H

#include "tflm_compat.h"

namespace onebit {

TflmRegistration* Register_ONEBIT_CONV2D();

}  // namespace onebit

#endif /* ONEBIT_CONV2D_TFLM_H */
