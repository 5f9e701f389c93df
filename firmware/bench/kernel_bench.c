/* Kernel test and benchmark app for emulated boards (mcu_onebit/bench.py builds it).
 *
 * Runs every case of the generated table kernel_cases.c through three kernels: the
 * portable ONEBIT_CONV2D reference (compiled under the name ob_onebit_conv2d_ref), the
 * board's ONEBIT_CONV2D variant with scratch (ob_onebit_conv2d_ex) and without
 * (ob_onebit_conv2d), and the int8 CONV_2D reference
 * (ob_conv2d_int8), counting each call with the HAL counter and comparing each output
 * with the expected one generated on the PC. One line per case on UART0:
 *     case <index> ref <count> opt <count> int8 <count> nos <count> fail <mask>
 * (mask bits: 1 ref, 2 opt, 4 int8, 8 opt without scratch differ from the expected
 * output), then
 *     done <failures>
 * and a semihosting exit: status 0 when every output matched, 1 otherwise. */
#include <stdint.h>
#include <string.h>

#include "conv_int8.h"
#include "bench_io.h"
#include "hal.h"
#include "kernel_cases.h"
#include "onebit_conv2d.h"

ob_status ob_onebit_conv2d_ref(const ob_onebit_conv2d_params *params, const int8_t *input,
                               const uint8_t *packed_filter, const int32_t *bias,
                               int8_t *output);

static int check(const obk_case *c, ob_status status) {
  return status != OB_OK || memcmp(obk_output, c->expected, (size_t)c->output_bytes) != 0;
}

/* Started by the QEMU HAL's main(), like the app. */
void ob_app_run(void) {
  ob_hal_init();
  uint32_t failures = 0;
  for (int32_t i = 0; i < obk_case_count; ++i) {
    const obk_case *c = &obk_cases[i];
    uint64_t counts[4];
    uint32_t fail = 0;
    ob_status status;

    memset(obk_output, 0x5A, (size_t)c->output_bytes);
    uint64_t start = ob_hal_counter();
    status = ob_onebit_conv2d_ref(c->onebit, c->input, c->packed, c->bias, obk_output);
    counts[0] = ob_hal_counter() - start;
    fail |= check(c, status) ? 1u : 0u;

    memset(obk_output, 0x5A, (size_t)c->output_bytes);
    start = ob_hal_counter();
    status = ob_onebit_conv2d_ex(c->onebit, c->input, c->packed, c->bias, obk_output, obk_scratch);
    counts[1] = ob_hal_counter() - start;
    fail |= check(c, status) ? 2u : 0u;

    memset(obk_output, 0x5A, (size_t)c->output_bytes);
    start = ob_hal_counter();
    status = ob_conv2d_int8(c->int8, c->input, c->filter, c->bias, obk_output);
    counts[2] = ob_hal_counter() - start;
    fail |= check(c, status) ? 4u : 0u;

    memset(obk_output, 0x5A, (size_t)c->output_bytes);
    start = ob_hal_counter();
    status = ob_onebit_conv2d(c->onebit, c->input, c->packed, c->bias, obk_output);
    counts[3] = ob_hal_counter() - start;
    fail |= check(c, status) ? 8u : 0u;

    put_str("case ");
    put_u64((uint64_t)i);
    put_str(" ref ");
    put_u64(counts[0]);
    put_str(" opt ");
    put_u64(counts[1]);
    put_str(" int8 ");
    put_u64(counts[2]);
    put_str(" nos ");
    put_u64(counts[3]);
    put_str(" fail ");
    put_u64(fail);
    put_str("\n");
    failures += fail != 0;
  }
  put_str("done ");
  put_u64(failures);
  put_str("\n");
  semihosting_exit(failures != 0);
}
