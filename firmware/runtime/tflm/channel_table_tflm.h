/* ONEBIT_CHANNEL_TABLE (firmware/kernels/channel_table.h) as a TensorFlow Lite Micro
 * custom op: register it with
 *   resolver.AddCustom(OB_CHANNEL_TABLE_OP_NAME, onebit::Register_ONEBIT_CHANNEL_TABLE());
 * Compiles against both TFLM kernel APIs (see tflm_compat.h). */
#ifndef ONEBIT_CHANNEL_TABLE_TFLM_H
#define ONEBIT_CHANNEL_TABLE_TFLM_H

#include "tflm_compat.h"

namespace onebit {

TflmRegistration* Register_ONEBIT_CHANNEL_TABLE();

}  // namespace onebit

#endif /* ONEBIT_CHANNEL_TABLE_TFLM_H */
