/* What the app harnesses (frames_fuzz.c, energyrunner_fuzz.c) share: a HAL whose serial
 * input is the fuzz input and a small model (fuzz_board.c). */
#ifndef OB_FUZZ_BOARD_H
#define OB_FUZZ_BOARD_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

/* Starts a fuzz input: ob_hal_read_byte returns its bytes, then longjmps to
 * ob_fuzz_input_done (the app's loop never returns). Also restores the model's budget. */
void ob_fuzz_board_begin(const uint8_t *data, size_t size);
extern jmp_buf ob_fuzz_input_done;

#endif /* OB_FUZZ_BOARD_H */
