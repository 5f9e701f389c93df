/* The board layer the app needs: a byte serial link, a counter, an exit. One
 * implementation per board family under firmware/hal/<family>/. */
#ifndef OB_HAL_H
#define OB_HAL_H

#include <stddef.h>
#include <stdint.h>

/* Board id and clock come from the PlatformIO build (board manifest). */
#ifndef OB_BOARD
#define OB_BOARD "unknown"
#endif
#ifndef F_CPU
#define F_CPU 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

void ob_hal_init(void);
/* Blocks until one byte arrives. */
uint8_t ob_hal_read_byte(void);
void ob_hal_write(const uint8_t *data, size_t length);
/* Whether a byte has arrived that ob_hal_read_byte would return at once, without taking
 * it. A long text-protocol `infer` asks between inferences, so that a host can stop it. */
int ob_hal_byte_waiting(void);
/* Whether a host has the port open, as far as the board can tell (a USB CDC port's DTR);
 * 1 where it cannot tell (a UART). The boot banner is printed only then: some USB stacks
 * keep what was written before the port opened and hand it to the host's first read. */
int ob_hal_host_attached(void);
/* Free-running counter in the board's unit (instructions under QEMU -icount, cycles
 * on silicon). Differences of two readings are valid across one wrap. */
uint64_t ob_hal_counter(void);
/* Unit name reported to the host: "instructions" or "cycles". */
const char *ob_hal_counter_unit(void);

/* The app's loop (firmware/app/main.c), which the HAL starts: main() on bare metal,
 * setup() under Arduino. Never returns. */
void ob_app_run(void);

#ifdef __cplusplus
}
#endif

#endif /* OB_HAL_H */
