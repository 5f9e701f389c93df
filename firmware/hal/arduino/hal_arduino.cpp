/* firmware/app/hal.h on an Arduino core (Mbed nRF52840/RP2040/STM32H7, STM32duino,
 * Teensyduino, Arduino-ESP32): Serial is the byte link, the counter is the CPU cycle
 * counter where the core has one (DWT->CYCCNT on Cortex-M3/M4/M7/M33, CCOUNT on ESP32)
 * and micros() elsewhere (Cortex-M0+). setup() starts the app's loop, which never
 * returns, so loop() never runs. OB_BAUD comes from the board record (build_flags). */
#include <Arduino.h>

#include "hal.h"
#include "ob_common.h"

#ifndef OB_BAUD
#define OB_BAUD 115200
#endif

#if defined(ARDUINO_ARCH_ESP32)
#define OB_COUNTER_CCOUNT 1
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
#define OB_COUNTER_DWT 1
#endif

#if defined(OB_COUNTER_DWT)
/* Architectural addresses (ARMv7-M/ARMv8-M), so no CMSIS device header is needed. */
#define OB_DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define OB_DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define OB_DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define OB_DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)
#define OB_DEMCR_TRCENA (1u << 24)
#define OB_DWT_CYCCNTENA 1u
#endif

/* Provided by the TFLM runtime's model.cc: builds the interpreter before the first
 * request so that IDENTIFY reports the arena really used. Weak: the static runtime has none. */
extern "C" ob_status ob_runtime_init(void) __attribute__((weak));

namespace {

uint32_t last_low = 0;  /* extends the 32-bit counter to 64 bits (read at least once per wrap) */
uint64_t high = 0;

uint32_t counter_low() {
#if defined(OB_COUNTER_CCOUNT)
  return ESP.getCycleCount();
#elif defined(OB_COUNTER_DWT)
  return OB_DWT_CYCCNT;
#else
  return micros();
#endif
}

}  // namespace

extern "C" {

void ob_hal_init(void) {
  static bool initialized = false;
  if (initialized) return;
  initialized = true;
  Serial.begin(OB_BAUD);
#if defined(OB_COUNTER_DWT)
  OB_DEMCR |= OB_DEMCR_TRCENA;
#if defined(__ARM_ARCH_7EM__)
  OB_DWT_LAR = 0xC5ACCE55u; /* unlocks DWT on Cortex-M7; ignored where there is no lock */
#endif
  OB_DWT_CYCCNT = 0;
  OB_DWT_CTRL |= OB_DWT_CYCCNTENA;
#endif
  last_low = counter_low();
}

uint8_t ob_hal_read_byte(void) {
  int value;
  while ((value = Serial.read()) < 0) {
    yield(); /* lets USB, RTOS and watchdog tasks run while the host is quiet */
  }
  return (uint8_t)value;
}

int ob_hal_byte_waiting(void) { return Serial.available() > 0; }

/* A USB CDC Serial is true while the host holds DTR (has the port open); a UART's always is. */
int ob_hal_host_attached(void) { return Serial ? 1 : 0; }

void ob_hal_write(const uint8_t *data, size_t length) {
  Serial.write(data, length);
  Serial.flush();
}

uint64_t ob_hal_counter(void) {
  const uint32_t low = counter_low();
  if (low < last_low) high += 1ull << 32;
  last_low = low;
  return high | low;
}

const char *ob_hal_counter_unit(void) {
#if defined(OB_COUNTER_CCOUNT) || defined(OB_COUNTER_DWT)
  return "cycles";
#else
  return "microseconds";
#endif
}

}  // extern "C"

void setup() {
  ob_hal_init(); /* first, so that TFLM's log during init has a serial port */
  if (ob_runtime_init) ob_runtime_init();
  ob_app_run();
}

void loop() {}
