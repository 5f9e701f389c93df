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
