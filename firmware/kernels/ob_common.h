/* Shared by every mcu-onebit kernel: the status enum and TFLite's fixed-point helpers. */
#ifndef OB_COMMON_H
#define OB_COMMON_H

#include <stdint.h>

#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
#include <arm_acle.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  OB_OK = 0,
  OB_ERR_BAD_PARAMS = 1,  /* shapes or quantization parameters inconsistent */
  OB_ERR_UNSUPPORTED = 2, /* valid TFLite, but not handled by this kernel */
  OB_STATUS_COUNT
} ob_status;

/* Name of a status, for messages. */
const char *ob_status_str(ob_status status);

/* TFLite's fixed-point requantization (gemmlowp's double-rounding flavour, the one
 * TFLite builds by default), re-implemented so that our kernels match its int8 reference
 * kernels bit for bit. A real multiplier M is carried as (multiplier, shift) with
 * M = multiplier * 2^(shift - 31) and multiplier in [2^30, 2^31). */

/* round(a * b / 2^31), halves away from zero; saturates the one overflowing case. */
static inline int32_t ob_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) {
    return INT32_MAX;
  }
  /* TFLite adds 2^30 (ab >= 0) or 1 - 2^30 (ab < 0) and divides by 2^31 truncating
   * towards zero. For ab < 0 that is ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) /
   * 2^31), the same expression as for ab >= 0: one rounding add and a shift, no branch
   * (>> of a negative value is arithmetic on every compiler we target). */
  return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/* x / 2^exponent rounded to nearest, halves away from zero; exponent in [0, 31]. */
static inline int32_t ob_rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  /* >> of a negative value is arithmetic on every compiler we target (gcc, clang). */
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* (a * b + 2^31) >> 32: one SMMULR where the target has it. For |a| < 2^30 it is the
 * doubling high multiply of a / 2 and b ((a * b + 2^30) >> 31 with a even), the fast
 * requantization of the kernels that can bound their values. */
static inline int32_t ob_smmulr(int32_t a, int32_t b) {
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
  int32_t r;
  __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
#else
  return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
#endif
}

/* x clamped to int8's range: one SSAT where the target has it. */
static inline int32_t ob_saturate_int8(int32_t x) {
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
  return __ssat(x, 8);
#else
  return x < -128 ? -128 : (x > 127 ? 127 : x);
#endif
}

/* a + b modulo 2^32: TFLite adds the bias to the int32 accumulator and lets it wrap on
 * every target; the unsigned sum gives that result without signed-overflow undefined
 * behaviour (the bias comes from the model's bytes, any int32). */
static inline int32_t ob_wrapping_add(int32_t a, int32_t b) {
  return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* x * M for any shift in [-31, 30]: TFLite's MultiplyByQuantizedMultiplier. */
static inline int32_t ob_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier,
                                                          int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  /* TFLite computes x * (1 << left_shift) in int32 and lets it wrap; shifting the
   * unsigned value reproduces that without signed-overflow undefined behaviour. */
  const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
  return ob_rounding_divide_by_pot(ob_saturating_rounding_doubling_high_mul(shifted, multiplier),
                                   right_shift);
}

/* x * M for M < 1 (left_shift <= 0): TFLite's MultiplyByQuantizedMultiplierSmallerThanOneExp,
 * used by ADD. */
static inline int32_t ob_multiply_by_quantized_multiplier_smaller_than_one_exp(int32_t x,
                                                                              int32_t multiplier,
                                                                              int left_shift) {
  return ob_rounding_divide_by_pot(ob_saturating_rounding_doubling_high_mul(x, multiplier),
                                   -left_shift);
}

#ifdef __cplusplus
}
#endif

#endif /* OB_COMMON_H */
