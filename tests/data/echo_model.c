/* A hand-written test model for the app and the serial link (tests/test_emulated_board.py):
 * output[j] = 0x55 ^ (sum of input[i] for i % ECHO_OUTPUT_BYTES == j), modulo 256.
 * An input starting with -128 makes the invoke fail with OB_ERR_UNSUPPORTED; one starting
 * with -127 restarts the board (Cortex-M SYSRESETREQ), as a firmware that crashes on an
 * input and is reset by its watchdog does.
 * Output quantization (for the EnergyRunner results line): a scale of 1/16 makes many
 * dequantized values exact halves of a thousandth, which tests "%.3f"'s rounding of a
 * one-output model's score (-DECHO_OUTPUT_BYTES=1). */
#include "model.h"

#ifndef ECHO_INPUT_BYTES
#define ECHO_INPUT_BYTES 64
#endif
#ifndef ECHO_OUTPUT_BYTES
#define ECHO_OUTPUT_BYTES 16
#endif
#ifndef ECHO_OUTPUT_SCALE
#define ECHO_OUTPUT_SCALE 0.0625f
#endif
#ifndef ECHO_OUTPUT_ZERO_POINT
#define ECHO_OUTPUT_ZERO_POINT -3
#endif

const ob_model_info ob_model = {
    .input_bytes = ECHO_INPUT_BYTES,
    .output_bytes = ECHO_OUTPUT_BYTES,
    .arena_bytes = 0,
    .identity = "{\"name\":\"echo\",\"hash\":\"0000\"}",
    .output_scale = ECHO_OUTPUT_SCALE,
    .output_zero_point = ECHO_OUTPUT_ZERO_POINT,
};

ob_status ob_model_invoke(const int8_t *input, int8_t *output) {
  if (input[0] == -128) {
    return OB_ERR_UNSUPPORTED;
  }
#if defined(__arm__)
  if (input[0] == -127) {
    *(volatile uint32_t *)0xE000ED0Cu = 0x05FA0004u; /* AIRCR: VECTKEY | SYSRESETREQ */
    for (;;) {
    }
  }
#endif
  uint8_t sums[ECHO_OUTPUT_BYTES] = {0};
  for (int i = 0; i < ECHO_INPUT_BYTES; ++i) {
    sums[i % ECHO_OUTPUT_BYTES] = (uint8_t)(sums[i % ECHO_OUTPUT_BYTES] + (uint8_t)input[i]);
  }
  for (int j = 0; j < ECHO_OUTPUT_BYTES; ++j) {
    output[j] = (int8_t)(sums[j] ^ 0x55);
  }
  return OB_OK;
}
