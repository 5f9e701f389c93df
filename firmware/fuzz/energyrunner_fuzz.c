/* libFuzzer harness: the EnergyRunner text parser (energyrunner.c) fed byte by byte, as
 * the app passes it the bytes outside frames; a byte 0xFF stands for a frame arriving
 * (ob_er_frame_seen). */
#include <stddef.h>
#include <stdint.h>

#include "energyrunner.h"
#include "fuzz_board.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The app's buffer: exactly the model's input and output, so ASan sees any overrun. */
  static uint8_t buffer[6];
  ob_fuzz_board_begin(data, size);
  ob_er_begin(buffer, sizeof buffer);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0xFF) {
      ob_er_frame_seen();
    } else {
      ob_er_byte(data[i]);
    }
  }
  ob_er_frame_seen(); /* the next input starts with nothing loaded */
  return 0;
}
