/* The board of the app harnesses (fuzz_board.h): the HAL over the fuzz input, and a model
 * of 4 input and 2 output bytes. */
#include "fuzz_board.h"


#include "hal.h"
#include "model.h"

static const uint8_t *input;
static size_t input_size;
static size_t input_used;
jmp_buf ob_fuzz_input_done;
static uint64_t counter;
static size_t invocations_left;

/* Invocations per fuzz input. `infer N W` takes counts up to 999,999,999 each and only a
 * byte from the host stops it; past this budget the model fails as a model error would,
 * so an input that ends in such a command cannot hold the fuzzer for minutes, and the
 * error path is fuzzed too. */
#define FUZZ_INVOCATIONS 1000

void ob_fuzz_board_begin(const uint8_t *data, size_t size) {
  input = data;
  input_size = size;
  input_used = 0;
  invocations_left = FUZZ_INVOCATIONS;
}

void ob_hal_init(void) {}

uint8_t ob_hal_read_byte(void) {
  if (input_used == input_size) {
    longjmp(ob_fuzz_input_done, 1);
  }
  return input[input_used++];
}

/* The rest of the fuzz input is what the host sends next: it may stop a long `infer`. */
int ob_hal_byte_waiting(void) { return input_used < input_size; }

int ob_hal_host_attached(void) { return 1; }

void ob_hal_write(const uint8_t *data, size_t length) {
  /* Touch every byte: ASan reports a reply read from outside its buffer. */
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < length; ++i) sink ^= data[i];
  (void)sink;
}

uint64_t ob_hal_counter(void) { return counter += 40; }

const char *ob_hal_counter_unit(void) { return "instructions"; }

const ob_model_info ob_model = {4, 2, 0, "{\"hash\":\"fuzz\"}", 0.0625f, -3};

ob_status ob_model_invoke(const int8_t *in, int8_t *out) {
  if (invocations_left == 0 || in[0] == -128) {
    return OB_ERR_UNSUPPORTED;
  }
  --invocations_left;
  out[0] = (int8_t)(in[0] + in[2]);
  out[1] = (int8_t)(in[1] ^ in[3]);
  return OB_OK;
}
