/* Output of the bench apps under QEMU: text lines on the UART, then a semihosting exit
 * whose status QEMU returns (0: every output matched). */
#ifndef OB_BENCH_IO_H
#define OB_BENCH_IO_H

#include <stdint.h>
#include <string.h>

#include "hal.h"

static inline void put_str(const char *s) { ob_hal_write((const uint8_t *)s, strlen(s)); }

static inline void put_u64(uint64_t v) {
  char buf[21];
  int i = 20;
  buf[i] = '\0';
  do {
    buf[--i] = (char)('0' + v % 10u);
    v /= 10u;
  } while (v != 0);
  put_str(buf + i);
}

static inline void semihosting_exit(int failed) {
  register uint32_t operation __asm__("r0") = 0x18;                    /* SYS_EXIT */
  register uint32_t reason __asm__("r1") = failed ? 0x20023u : 0x20026u; /* error / ApplicationExit */
  __asm__ volatile("bkpt 0xAB" : : "r"(operation), "r"(reason) : "memory");
}

#endif /* OB_BENCH_IO_H */
