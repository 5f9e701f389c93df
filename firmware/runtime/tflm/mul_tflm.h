/* int8 MUL for TensorFlow Lite Micro on the project's kernel ob_mul (firmware/kernels/mul.h):
 * TFLite's reference arithmetic, the one the host twin runs, bit for bit. The generated
 * model.cc registers it in place of the library's MUL where it is the faster one
 * (convert --tflm-kernels library keeps the library's). */
#ifndef ONEBIT_MUL_TFLM_H
#define ONEBIT_MUL_TFLM_H

#include "tflm_compat.h"

namespace onebit {

TflmRegistration* Register_MUL();

}  // namespace onebit

#endif /* ONEBIT_MUL_TFLM_H */
