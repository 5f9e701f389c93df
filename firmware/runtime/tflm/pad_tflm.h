/* int8 PAD for TensorFlow Lite Micro on the project's kernel ob_pad (firmware/kernels/pad.h):
 * TFLite's reference arithmetic, the one the host twin runs, bit for bit. The generated
 * model.cc registers it in place of the library's PAD where it is the faster one
 * (convert --tflm-kernels library keeps the library's). */
#ifndef ONEBIT_PAD_TFLM_H
#define ONEBIT_PAD_TFLM_H

#include "tflm_compat.h"

namespace onebit {

TflmRegistration* Register_PAD();

}  // namespace onebit

#endif /* ONEBIT_PAD_TFLM_H */
