/* Whole-model benchmark for emulated boards (mcu_onebit/bench.py builds it with a model.c
 * of the static runtime, or a model.cc of the TFLM runtime): one inference on a generated
 * input, counted as a whole and op by op with the HAL counter, its output compared with
 * the twin's. The runtime's set-up (TFLM's AllocateTensors) runs before the count. Prints
 * on UART0
 *     identity <JSON>             (the runtime's identity: TFLM reports arena_used_bytes)
 *     op <index> <count>          (counter from the end of the previous op, or the start)
 *     model <count> fail <0|1>    (counter around ob_model_invoke, hook calls included)
 * and exits through semihosting: status 0 when the output matched, 1 otherwise. */
#include <stdint.h>
#include <string.h>

#include "bench_io.h"
#include "hal.h"
#include "model.h"
#include "model_bench.h"

void obm_op_done(int32_t index) { obm_marks[index] = ob_hal_counter(); }

/* The TFLM runtime's set-up; the static runtime has none. */
ob_status ob_runtime_init(void) __attribute__((weak));

static int8_t output[4096] __attribute__((aligned(4)));

void ob_app_run(void) {
  ob_hal_init();
  int failed = ob_model.output_bytes > sizeof output;
  uint64_t start = 0, total = 0;
  if (!failed && ob_runtime_init) failed = ob_runtime_init() != OB_OK;
  put_str("identity ");
  put_str(ob_model.identity);
  put_str("\n");
  if (!failed) {
    start = ob_hal_counter();
    const ob_status status = ob_model_invoke(obm_input, output);
    total = ob_hal_counter() - start;
    failed = status != OB_OK || memcmp(output, obm_expected, ob_model.output_bytes) != 0;
  }
  uint64_t previous = start;
  for (int32_t i = 0; i < obm_op_count && !failed; ++i) {
    put_str("op ");
    put_u64((uint64_t)i);
    put_str(" ");
    put_u64(obm_marks[i] - previous);
    put_str("\n");
    previous = obm_marks[i];
  }
  put_str("model ");
  put_u64(total);
  put_str(" fail ");
  put_u64((uint64_t)failed);
  put_str("\n");
  semihosting_exit(failed);
}
