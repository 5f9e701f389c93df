/* int8 ADD for TensorFlow Lite Micro on the project's kernel ob_add (firmware/kernels/add.h):
 * TFLite's reference arithmetic, the one the host twin runs, bit for bit. The generated
 * model.cc registers it in place of the library's ADD where it is the faster one
 * (convert --tflm-kernels library keeps the library's). */
#ifndef ONEBIT_ADD_TFLM_H
#define ONEBIT_ADD_TFLM_H

#include "tflm_compat.h"

namespace onebit {

TflmRegistration* Register_ADD();

}  // namespace onebit

#endif /* ONEBIT_ADD_TFLM_H */
