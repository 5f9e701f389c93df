/* Reset and exception entry for QEMU mps2 (Cortex-M3/M4F/M7). Compiled as C. */
#include <stdint.h>

extern uint32_t __stack_top;
extern uint32_t __data_start, __data_end, __data_load;
extern uint32_t __bss_start, __bss_end;

extern void __libc_init_array(void);
extern int main(void);

void Reset_Handler(void);
void Default_Handler(void);

/* Any fault or unexpected interrupt ends QEMU (semihosting SYS_EXIT, reason
 * "run-time error", exit status 1) so the host sees the emulator stop instead of a
 * silent hang. The emulator is always started with -semihosting-config enable=on. */
void Default_Handler(void) {
  register uint32_t operation __asm__("r0") = 0x18;     /* SYS_EXIT */
  register uint32_t reason __asm__("r1") = 0x20023;     /* ADP_Stopped_RunTimeErrorUnknown */
  __asm__ volatile("bkpt 0xAB" : : "r"(operation), "r"(reason) : "memory");
  for (;;) {
  }
}

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

typedef void (*ob_vector)(void);

__attribute__((section(".isr_vector"), used))
static const ob_vector vectors[16 + 32] = {
    [0] = (ob_vector)(uintptr_t)&__stack_top,
    [1] = Reset_Handler,
    [2] = NMI_Handler,
    [3] = HardFault_Handler,
    [4] = MemManage_Handler,
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [11] = SVC_Handler,
    [12] = DebugMon_Handler,
    [14] = PendSV_Handler,
    [15] = SysTick_Handler,
    /* The HAL never takes interrupts (it waits for them with PRIMASK set), so every
     * external vector is the default. */
#define OB_DEFAULT4 Default_Handler, Default_Handler, Default_Handler, Default_Handler
    OB_DEFAULT4, OB_DEFAULT4, OB_DEFAULT4, OB_DEFAULT4,
    OB_DEFAULT4, OB_DEFAULT4, OB_DEFAULT4, OB_DEFAULT4,
#undef OB_DEFAULT4
};

void Reset_Handler(void) {
#if defined(__ARM_FP)
  /* Full access to CP10 and CP11 before any floating-point instruction runs. */
  volatile uint32_t *const cpacr = (volatile uint32_t *)0xE000ED88u;
  *cpacr |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
  for (uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) {
    *dst++ = *src++;
  }
  for (uint32_t *dst = &__bss_start; dst < &__bss_end;) {
    *dst++ = 0;
  }
  __libc_init_array();
  main();
  Default_Handler();
}
