/* firmware/app/hal.h for QEMU mps2 boards: CMSDK UART0 for the link, CMSDK timer0
 * for the counter. Facts used here are measured in docs/environment.md. */
#include <stdint.h>

#include "hal.h"
#include "ob_common.h"

#ifndef OB_ICOUNT_SHIFT
#error "OB_ICOUNT_SHIFT (QEMU -icount shift) must be defined by the build"
#endif

typedef struct {
  volatile uint32_t data;
  volatile uint32_t state;
  volatile uint32_t ctrl;
  volatile uint32_t intstatus; /* write 1 to clear */
  volatile uint32_t bauddiv;
} cmsdk_uart;

typedef struct {
  volatile uint32_t ctrl;
  volatile uint32_t value;
  volatile uint32_t reload;
  volatile uint32_t intstatus;
} cmsdk_timer;

#define UART0 ((cmsdk_uart *)0x40004000u)
#define TIMER0 ((cmsdk_timer *)0x40000000u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define NVIC_ICPR0 (*(volatile uint32_t *)0xE000E280u)

#define UART_STATE_TX_FULL 0x1u
#define UART_STATE_RX_FULL 0x2u
#define UART_CTRL_TX_EN 0x1u
#define UART_CTRL_RX_EN 0x2u
#define UART_CTRL_RX_IRQ_EN 0x8u
#define UART_INT_RX 0x2u
#define UART0_RX_IRQ 0u
#define TIMER_CTRL_EN 0x1u

/* Under -icount shift=S one instruction is 2^S ns of virtual time; a timer tick at
 * 25 MHz is 40 ns. */
#define NS_PER_TICK 40u

static uint64_t instructions;

void ob_hal_init(void) {
  /* Interrupts are only ever waited for (WFI wakes on a pending interrupt even with
   * PRIMASK set), never taken: no handlers, no shared state. */
  __asm__ volatile("cpsid i" ::: "memory");
  UART0->bauddiv = 16; /* ignored by QEMU, but must be >= 16 on the real IP */
  UART0->ctrl = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_IRQ_EN;
  NVIC_ISER0 = 1u << UART0_RX_IRQ;

  TIMER0->ctrl = 0;
  TIMER0->reload = 0xFFFFFFFFu;
  TIMER0->value = 0xFFFFFFFFu;
  TIMER0->ctrl = TIMER_CTRL_EN;
}

uint8_t ob_hal_read_byte(void) {
  if (!(UART0->state & UART_STATE_RX_FULL)) {
    /* Sleeping until the byte arrives lets QEMU's main loop have the host CPU: 1.4 to
     * 1.8 times the request rate of polling (measured). The timer is stopped meanwhile:
     * with -icount sleep=off an idle CPU warps virtual time to the next timer deadline,
     * whole wraps at a time. The counter thus excludes waiting. */
    TIMER0->ctrl = 0;
    while (!(UART0->state & UART_STATE_RX_FULL)) {
      __asm__ volatile("wfi" ::: "memory");
    }
    TIMER0->ctrl = TIMER_CTRL_EN;
  }
  uint8_t byte = (uint8_t)UART0->data;
  UART0->intstatus = UART_INT_RX;
  NVIC_ICPR0 = 1u << UART0_RX_IRQ;
  return byte;
}

int ob_hal_byte_waiting(void) { return (UART0->state & UART_STATE_RX_FULL) != 0; }

/* QEMU starts the guest only once a client is connected (-serial tcp:...,wait=on); the
 * emulator's own first client reads the banner (mcu_onebit/emulator.py). */
int ob_hal_host_attached(void) { return 1; }

void ob_hal_write(const uint8_t *data, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    while (UART0->state & UART_STATE_TX_FULL) {
    }
    UART0->data = data[i];
  }
}

uint64_t ob_hal_counter(void) {
  /* Each reading restarts timer0 from its reload value. Besides extending it to 64
   * bits, that re-aligns its 40 ns ticks to the current instruction: an instruction
   * is 2^S ns, so with a free-running timer the same code would measure one tick
   * more or less depending on the phase. Converted per interval for the same reason.
   * One interval must stay under 2^32 ticks (2.7e9 instructions at shift 6). */
  uint32_t elapsed = 0xFFFFFFFFu - TIMER0->value;
  TIMER0->value = 0xFFFFFFFFu;
  instructions += ((uint64_t)elapsed * NS_PER_TICK) >> OB_ICOUNT_SHIFT;
  return instructions;
}

const char *ob_hal_counter_unit(void) { return "instructions"; }

/* Provided by the TFLM runtime's model.cc: builds the interpreter before the first
 * request, as on the real boards (firmware/hal/arduino), so that IDENTIFY reports the
 * arena really used and no inference's count includes AllocateTensors. Weak: the static
 * runtime has none. */
extern ob_status ob_runtime_init(void) __attribute__((weak));

int main(void) {
  ob_hal_init(); /* first, so that TFLM's log during init has a serial port */
  if (ob_runtime_init) ob_runtime_init();
  ob_app_run();
  return 0;
}
