/* libFuzzer harness: the device's serial input as a noisy link or an attacker sends it.
 * Runs the app itself (firmware/app/main.c): the frame receiver (protocol.c), the request
 * dispatcher, and the EnergyRunner text parser for the bytes between frames. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_board.h"
#include "hal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ob_fuzz_board_begin(data, size);
  if (setjmp(ob_fuzz_input_done) == 0) {
    ob_app_run();
  }
  return 0;
}
