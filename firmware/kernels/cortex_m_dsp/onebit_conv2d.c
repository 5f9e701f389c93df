/* ONEBIT_CONV2D for Cortex-M with the DSP extension (M4, M7): bit-exact with the portable
 * reference ../onebit_conv2d.c (the oracle), which the build replaces with this file.
 * ob_onebit_conv2d needs no scratch memory; ob_onebit_conv2d_ex with
 * ob_onebit_conv2d_scratch_bytes() of scratch is faster (the weight masks of a group of
 * four output channels are then expanded once per call instead of once per pixel).
 *
 * The maths. Let u = x + 128 (the input byte with its top bit flipped, as unsigned) and
 * p = 128 + zp_in, so that x - zp_in = u - p. Expand each weight bit b to a mask byte
 * m = 0xFF (b = 1) or 0x00 (b = 0). USADA8 sums |u - m|, that is u for a 0 bit and
 * 255 - u for a 1 bit, four bytes per instruction. Over N channels of which n1 have a 1
 * bit:
 *     USAD = sum_{b=0} u + sum_{b=1} (255 - u)
 *     T    = sum +-(u - p) = (255 - 2p) * n1 + p * N - USAD
 *          = C[o] - USAD,   C[o] = (128 + zp) * N - (1 + 2 zp) * n1[o].
 * A tap outside the image must contribute nothing; it is fed the constant byte u = p
 * (x = zp, so x - zp = 0), which keeps N and n1 the whole filter's for every pixel: C[o]
 * is computed once per output channel and call.
 *
 * Work per output pixel is done for four output channels at once, so that each input
 * word is loaded and flipped once for four channels. Each weight byte selects its two
 * mask words from a 2 KiB constant table (256 x 8 bytes). Per 8 input channels and 4
 * output channels: 2 loads + 2 EOR for the input, then per channel 1 LDRB + 2 LDR + 2
 * USADA8.
 *
 * Input channels beyond the last multiple of 8 (cin % 8) are summed as in the
 * reference, one by one, over the in-image taps only.
 *
 * The fast path (see conv_group_fast below: ob_onebit_conv2d_ex with scratch, in_c % 8
 * == 0, dilation_w == 1, 4-byte aligned input) instead sums only the rectangle of
 * in-image taps and uses C over that rectangle (2-D prefix sums of n1 per tap), so that
 * a pixel's window is k_h contiguous runs of input: a Thumb-2 routine (LDRD + 2 EOR +
 * 2 LDM + 8 USADA8 per 8 input channels and 4 output channels, accumulators in
 * registers, several output pixels per call) fills a small buffer of USADs per output
 * row chunk, which is then requantized one channel at a time with its constants in
 * registers (SMMULR form of the doubling high multiply where it is provably exact).
 *
 * On a host compiler (no __ARM_FEATURE_SIMD32) USADA8 is emulated in C so that the
 * same algorithm is tested on the PC. */
#include "onebit_conv2d.h"

#include <stddef.h>
#include <string.h>

#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
#include <arm_acle.h>
#define ob_usada8(x, y, acc) __usada8((x), (y), (acc))
#else
static inline uint32_t ob_absdiff8(uint32_t a, uint32_t b) { return a > b ? a - b : b - a; }
static inline uint32_t ob_usada8(uint32_t x, uint32_t y, uint32_t acc) {
  for (int shift = 0; shift < 32; shift += 8) {
    acc += ob_absdiff8((x >> shift) & 0xFFu, (y >> shift) & 0xFFu);
  }
  return acc;
}
#endif

/* Group of output channels computed together (registers: 4 accumulators). */
#define OB_GROUP 4
#define OB_FLIP 0x80808080u

/* k_masks[b] = the 8 mask bytes of weight byte b, as two little-endian words. */
#define OB_M(b, i) (((b) >> (i) & 1u) ? (0xFFu << (8 * ((i) & 3))) : 0u)
#define OB_W(b, i) (OB_M(b, i) | OB_M(b, i + 1) | OB_M(b, i + 2) | OB_M(b, i + 3))
#define OB_E(b) {OB_W((b), 0), OB_W((b), 4)}
#define OB_E4(b) OB_E(b), OB_E((b) + 1), OB_E((b) + 2), OB_E((b) + 3)
#define OB_E16(b) OB_E4(b), OB_E4((b) + 4), OB_E4((b) + 8), OB_E4((b) + 12)
#define OB_E64(b) OB_E16(b), OB_E16((b) + 16), OB_E16((b) + 32), OB_E16((b) + 48)
static const uint32_t k_masks[256][2] = {OB_E64(0u), OB_E64(64u), OB_E64(128u), OB_E64(192u)};

static inline uint32_t load32(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v); /* one LDR on ARMv7-M (unaligned access is allowed) */
  return v;
}

/* k_ones[b] = the number of 1 bits of byte b: the kernel's set-up counts the 1 bits of
 * every weight byte of a group once per call (twice on the fast path), one load each. */
#define OB_P2(n) n, n + 1, n + 1, n + 2
#define OB_P4(n) OB_P2(n), OB_P2(n + 1), OB_P2(n + 1), OB_P2(n + 2)
#define OB_P6(n) OB_P4(n), OB_P4(n + 1), OB_P4(n + 1), OB_P4(n + 2)
static const uint8_t k_ones[256] = {OB_P6(0), OB_P6(1), OB_P6(1), OB_P6(2)};

static inline uint32_t popcount8(uint32_t b) { return k_ones[b & 0xFFu]; }

/* USAD of `bytes` full weight bytes (8 channels each) of NC channels whose weights start
 * at w[c] (NC a constant after inlining). Input from `in`, or the constant word `pad`
 * when in == NULL. */
static inline __attribute__((always_inline)) void usad_run(uint32_t *acc, const uint8_t *const *w,
                                                           int32_t bytes, const int8_t *in,
                                                           uint32_t pad, const int nc) {
  uint32_t a0 = acc[0], a1 = nc > 1 ? acc[1] : 0, a2 = nc > 2 ? acc[2] : 0,
           a3 = nc > 3 ? acc[3] : 0;
  const uint8_t *w0 = w[0], *w1 = nc > 1 ? w[1] : w[0], *w2 = nc > 2 ? w[2] : w[0],
                *w3 = nc > 3 ? w[3] : w[0];
  for (int32_t d = 0; d < bytes; ++d) {
    uint32_t x0 = pad, x1 = pad;
    if (in != NULL) {
      x0 = load32(in) ^ OB_FLIP;
      x1 = load32(in + 4) ^ OB_FLIP;
      in += 8;
    }
    const uint32_t *m = k_masks[*w0++];
    a0 = ob_usada8(x0, m[0], a0);
    a0 = ob_usada8(x1, m[1], a0);
    if (nc > 1) {
      m = k_masks[*w1++];
      a1 = ob_usada8(x0, m[0], a1);
      a1 = ob_usada8(x1, m[1], a1);
    }
    if (nc > 2) {
      m = k_masks[*w2++];
      a2 = ob_usada8(x0, m[0], a2);
      a2 = ob_usada8(x1, m[1], a2);
    }
    if (nc > 3) {
      m = k_masks[*w3++];
      a3 = ob_usada8(x0, m[0], a3);
      a3 = ob_usada8(x1, m[1], a3);
    }
  }
  acc[0] = a0;
  if (nc > 1) acc[1] = a1;
  if (nc > 2) acc[2] = a2;
  if (nc > 3) acc[3] = a3;
}

/* The same with the masks already expanded (ob_onebit_conv2d_ex's scratch): per weight
 * byte, OB_GROUP pairs of mask words, one pair per channel. */
static inline __attribute__((always_inline)) void usad_run_masked(uint32_t *acc, const uint32_t *m,
                                                                  int32_t bytes, const int8_t *in,
                                                                  uint32_t pad, const int nc) {
  uint32_t a0 = acc[0], a1 = nc > 1 ? acc[1] : 0, a2 = nc > 2 ? acc[2] : 0,
           a3 = nc > 3 ? acc[3] : 0;
  const uint32_t *end = m + bytes * 2 * OB_GROUP;
  if (in == NULL) { /* outside the image: every byte is the padding byte */
    for (; m != end; m += 2 * OB_GROUP) {
      a0 = ob_usada8(pad, m[0], a0);
      a0 = ob_usada8(pad, m[1], a0);
      if (nc > 1) a1 = ob_usada8(pad, m[3], ob_usada8(pad, m[2], a1));
      if (nc > 2) a2 = ob_usada8(pad, m[5], ob_usada8(pad, m[4], a2));
      if (nc > 3) a3 = ob_usada8(pad, m[7], ob_usada8(pad, m[6], a3));
    }
    m = end;
  }
  for (; m != end; m += 2 * OB_GROUP) {
    const uint32_t x0 = load32(in) ^ OB_FLIP;
    const uint32_t x1 = load32(in + 4) ^ OB_FLIP;
    in += 8;
    a0 = ob_usada8(x0, m[0], a0);
    a0 = ob_usada8(x1, m[1], a0);
    if (nc > 1) {
      a1 = ob_usada8(x0, m[2], a1);
      a1 = ob_usada8(x1, m[3], a1);
    }
    if (nc > 2) {
      a2 = ob_usada8(x0, m[4], a2);
      a2 = ob_usada8(x1, m[5], a2);
    }
    if (nc > 3) {
      a3 = ob_usada8(x0, m[6], a3);
      a3 = ob_usada8(x1, m[7], a3);
    }
  }
  acc[0] = a0;
  if (nc > 1) acc[1] = a1;
  if (nc > 2) acc[2] = a2;
  if (nc > 3) acc[3] = a3;
}

/* A run of `bytes` weight bytes per channel starting at tap `tap`: from the expanded
 * masks when there are some, else from the packed weights w. */
static inline __attribute__((always_inline)) void run(uint32_t *acc, const uint8_t *const *w,
                                                      const uint32_t *masks, int32_t tap,
                                                      int32_t full, int32_t bytes,
                                                      const int8_t *in, uint32_t pad,
                                                      const int nc) {
  if (masks != NULL) {
    usad_run_masked(acc, masks + tap * full * 2 * OB_GROUP, bytes, in, pad, nc);
  } else {
    usad_run(acc, w, bytes, in, pad, nc);
  }
}

/* One output pixel for NC output channels starting at oc. */
static inline __attribute__((always_inline)) void conv_pixel(
    const ob_onebit_conv2d_params *p, const int8_t *input, const uint8_t *const *filters,
    const uint32_t *masks, int32_t in_y0, int32_t in_x0, uint32_t pad, int32_t *t_out,
    const int nc) {
  const int32_t pd = ONEBIT_PACKED_DEPTH(p->in_c);
  const int32_t full = p->in_c >> 3;       /* full weight bytes per tap */
  const int32_t tail = p->in_c & 7;        /* channels in the last, partial byte */
  uint32_t acc[OB_GROUP] = {0, 0, 0, 0};
  int32_t tail_t[OB_GROUP] = {0, 0, 0, 0};
  /* Whole rows of in-image taps are one run when channels fill whole bytes. */
  const int merge = tail == 0 && p->dilation_w == 1;
  for (int32_t ky = 0; ky < p->k_h; ++ky) {
    const int32_t iy = in_y0 + ky * p->dilation_h;
    const int row_in = iy >= 0 && iy < p->in_h;
    const uint8_t *w[OB_GROUP];
    for (int c = 0; c < nc; ++c) w[c] = filters[c] + ky * p->k_w * pd;
    if (!row_in) {
      if (tail == 0) {
        run(acc, w, masks, ky * p->k_w, full, p->k_w * pd, NULL, pad, nc);
        continue;
      }
      for (int32_t kx = 0; kx < p->k_w; ++kx) {
        const uint8_t *wk[OB_GROUP];
        for (int c = 0; c < nc; ++c) wk[c] = w[c] + kx * pd;
        run(acc, wk, masks, ky * p->k_w + kx, full, full, NULL, pad, nc);
      }
      continue;
    }
    const int8_t *row = input + (iy * p->in_w) * p->in_c;
    if (merge) {
      /* kx range [kx0, kx1) inside the image. */
      int32_t kx0 = in_x0 < 0 ? -in_x0 : 0;
      int32_t kx1 = p->in_w - in_x0;
      kx0 = kx0 > p->k_w ? p->k_w : kx0;
      kx1 = kx1 > p->k_w ? p->k_w : (kx1 < kx0 ? kx0 : kx1);
      const uint8_t *wk[OB_GROUP];
      const int32_t tap = ky * p->k_w;
      if (kx0 > 0) run(acc, w, masks, tap, full, kx0 * pd, NULL, pad, nc);
      for (int c = 0; c < nc; ++c) wk[c] = w[c] + kx0 * pd;
      if (kx1 > kx0) {
        run(acc, wk, masks, tap + kx0, full, (kx1 - kx0) * pd, row + (in_x0 + kx0) * p->in_c, 0,
            nc);
      }
      for (int c = 0; c < nc; ++c) wk[c] = w[c] + kx1 * pd;
      if (kx1 < p->k_w) run(acc, wk, masks, tap + kx1, full, (p->k_w - kx1) * pd, NULL, pad, nc);
      continue;
    }
    for (int32_t kx = 0; kx < p->k_w; ++kx) {
      const int32_t ix = in_x0 + kx * p->dilation_w;
      const uint8_t *wk[OB_GROUP];
      for (int c = 0; c < nc; ++c) wk[c] = w[c] + kx * pd;
      if (ix < 0 || ix >= p->in_w) {
        run(acc, wk, masks, ky * p->k_w + kx, full, full, NULL, pad, nc);
        continue;
      }
      const int8_t *pixel = row + ix * p->in_c;
      run(acc, wk, masks, ky * p->k_w + kx, full, full, pixel, 0, nc);
      for (int32_t i = 0; i < tail; ++i) {
        const int32_t v = (int32_t)pixel[full * 8 + i] + p->input_offset;
        for (int c = 0; c < nc; ++c) {
          tail_t[c] += ((wk[c][full] >> i) & 1u) ? v : -v;
        }
      }
    }
  }
  for (int c = 0; c < nc; ++c) t_out[c] = tail_t[c] - (int32_t)acc[c];
}

/* ---- The fast path (ob_onebit_conv2d_ex with scratch, in_c % 8 == 0, dilation_w == 1,
 * 4-byte aligned input): whole rectangles of in-image taps, four channels at a time from
 * the expanded masks.
 *
 * ob_ob1_usad_px4(out, in, a) computes, for a->count output pixels whose windows start
 * a->in_step input bytes apart (the first at in), the four USADs of a->rows rows of
 * a->row_bytes input bytes (a multiple of 8) each against the masks from a->masks (8
 * mask words per 8 input bytes); after each row the input pointer moves on by
 * a->in_skip bytes and the mask pointer by a->mask_skip bytes. It writes four words per
 * pixel to out. rows, count >= 1; row_bytes >= 8. */
typedef struct {
  int32_t row_bytes, rows, in_skip, mask_skip, count, in_step;
  const uint32_t *masks;
} ob_px_args;

#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32 && defined(__thumb2__)
void ob_ob1_usad_px4(uint32_t *out, const int8_t *in, const ob_px_args *a);
/* Per 8 input bytes and 4 channels: LDRD + 2 EOR + 2 LDM (4 mask words each) + 8 USADA8;
 * four such steps per loop iteration, a row entering at the step that leaves a multiple
 * of four (the entry address is chosen once per call). Frame (sp-relative): 0 input of
 * the current pixel, 4 masks, 8 row_bytes, 12..24 zeros, 28 rows (these eight words are
 * one LDM into r0, r1, r3, r4-r7, lr at each pixel), 32 in_skip, 36 mask_skip, 40 entry,
 * 44 in_step, 48 out, 52 end of out. */
__asm__(
    "  .section .text.ob_ob1_usad_px4,\"ax\",%progbits\n"
    "  .syntax unified\n"
    "  .thumb\n"
    "  .p2align 2\n"
    "  .global ob_ob1_usad_px4\n"
    "  .hidden ob_ob1_usad_px4\n"
    "  .type ob_ob1_usad_px4, %function\n"
    "  .thumb_func\n"
    "ob_ob1_usad_px4:\n"
    "  push {r4-r11, lr}\n"
    "  sub sp, sp, #60\n"
    "  str r1, [sp, #0]\n"
    "  ldr r3, [r2, #24]\n"
    "  str r3, [sp, #4]\n"
    "  ldr r3, [r2, #0]\n"
    "  str r3, [sp, #8]\n"
    "  movs r4, #0\n"
    "  movs r5, #0\n"
    "  strd r4, r5, [sp, #12]\n"
    "  strd r4, r5, [sp, #20]\n"
    "  ldr r4, [r2, #4]\n"
    "  str r4, [sp, #28]\n"
    "  ldr r4, [r2, #8]\n"
    "  str r4, [sp, #32]\n"
    "  ldr r4, [r2, #12]\n"
    "  str r4, [sp, #36]\n"
    "  ubfx r4, r3, #3, #2\n" /* steps per row, mod 4 */
    "  adr r5, 10f\n"
    "  cmp r4, #1\n"
    "  bne 6f\n"
    "  adr r5, 13f\n"
    "6:\n"
    "  cmp r4, #2\n"
    "  bne 7f\n"
    "  adr r5, 12f\n"
    "7:\n"
    "  cmp r4, #3\n"
    "  bne 8f\n"
    "  adr r5, 11f\n"
    "8:\n"
    "  orr r5, r5, #1\n" /* Thumb bit for the LDR PC below */
    "  str r5, [sp, #40]\n"
    "  ldr r4, [r2, #20]\n"
    "  str r4, [sp, #44]\n"
    "  str r0, [sp, #48]\n"
    "  ldr r4, [r2, #16]\n"
    "  add r4, r0, r4, lsl #4\n"
    "  str r4, [sp, #52]\n"
    "0:\n" /* pixel start */
    "  ldm sp, {r0, r1, r3, r4, r5, r6, r7, lr}\n"
    "1:\n" /* row start: r3 = row_bytes */
    "  add r2, r0, r3\n"
    "  ldr pc, [sp, #40]\n"
    "  .p2align 2\n"
    "10:\n"
    "  ldrd r3, r12, [r0], #8\n"
    "  eor r3, r3, #0x80808080\n"
    "  eor r12, r12, #0x80808080\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r4, r3, r8, r4\n"
    "  usada8 r4, r12, r9, r4\n"
    "  usada8 r5, r3, r10, r5\n"
    "  usada8 r5, r12, r11, r5\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r6, r3, r8, r6\n"
    "  usada8 r6, r12, r9, r6\n"
    "  usada8 r7, r3, r10, r7\n"
    "  usada8 r7, r12, r11, r7\n"
    "11:\n"
    "  ldrd r3, r12, [r0], #8\n"
    "  eor r3, r3, #0x80808080\n"
    "  eor r12, r12, #0x80808080\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r4, r3, r8, r4\n"
    "  usada8 r4, r12, r9, r4\n"
    "  usada8 r5, r3, r10, r5\n"
    "  usada8 r5, r12, r11, r5\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r6, r3, r8, r6\n"
    "  usada8 r6, r12, r9, r6\n"
    "  usada8 r7, r3, r10, r7\n"
    "  usada8 r7, r12, r11, r7\n"
    "12:\n"
    "  ldrd r3, r12, [r0], #8\n"
    "  eor r3, r3, #0x80808080\n"
    "  eor r12, r12, #0x80808080\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r4, r3, r8, r4\n"
    "  usada8 r4, r12, r9, r4\n"
    "  usada8 r5, r3, r10, r5\n"
    "  usada8 r5, r12, r11, r5\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r6, r3, r8, r6\n"
    "  usada8 r6, r12, r9, r6\n"
    "  usada8 r7, r3, r10, r7\n"
    "  usada8 r7, r12, r11, r7\n"
    "13:\n"
    "  ldrd r3, r12, [r0], #8\n"
    "  eor r3, r3, #0x80808080\n"
    "  eor r12, r12, #0x80808080\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r4, r3, r8, r4\n"
    "  usada8 r4, r12, r9, r4\n"
    "  usada8 r5, r3, r10, r5\n"
    "  usada8 r5, r12, r11, r5\n"
    "  ldmia r1!, {r8-r11}\n"
    "  usada8 r6, r3, r8, r6\n"
    "  usada8 r6, r12, r9, r6\n"
    "  usada8 r7, r3, r10, r7\n"
    "  usada8 r7, r12, r11, r7\n"
    "  cmp r0, r2\n"
    "  bne 10b\n"
    "  subs lr, lr, #1\n"
    "  beq 4f\n"
    "  ldr r3, [sp, #32]\n"
    "  add r0, r0, r3\n"
    "  ldr r3, [sp, #36]\n"
    "  add r1, r1, r3\n"
    "  ldr r3, [sp, #8]\n"
    "  add r2, r0, r3\n"
    "  ldr pc, [sp, #40]\n"
    "4:\n" /* pixel end */
    "  ldr r0, [sp, #48]\n"
    "  stmia r0!, {r4-r7}\n"
    "  str r0, [sp, #48]\n"
    "  ldr r3, [sp, #52]\n"
    "  cmp r0, r3\n"
    "  beq 5f\n"
    "  ldr r0, [sp, #0]\n"
    "  ldr r3, [sp, #44]\n"
    "  add r0, r0, r3\n"
    "  str r0, [sp, #0]\n"
    "  b 0b\n"
    "5:\n"
    "  add sp, sp, #60\n"
    "  pop {r4-r11, pc}\n"
    "  .size ob_ob1_usad_px4, .-ob_ob1_usad_px4\n"
    "  .text\n");
#else
static void ob_ob1_usad_px4(uint32_t *out, const int8_t *in, const ob_px_args *a) {
  for (int32_t n = a->count; n > 0; --n, in += a->in_step, out += OB_GROUP) {
    uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const int8_t *x = in;
    const uint32_t *m = a->masks;
    for (int32_t r = 0; r < a->rows; ++r) {
      for (int32_t i = 0; i < a->row_bytes; i += 8) {
        const uint32_t x0 = load32(x) ^ OB_FLIP;
        const uint32_t x1 = load32(x + 4) ^ OB_FLIP;
        x += 8;
        a0 = ob_usada8(x1, m[1], ob_usada8(x0, m[0], a0));
        a1 = ob_usada8(x1, m[3], ob_usada8(x0, m[2], a1));
        a2 = ob_usada8(x1, m[5], ob_usada8(x0, m[4], a2));
        a3 = ob_usada8(x1, m[7], ob_usada8(x0, m[6], a3));
        m += 8;
      }
      x += a->in_skip;
      m += a->mask_skip / 4;
    }
    out[0] = a0;
    out[1] = a1;
    out[2] = a2;
    out[3] = a3;
  }
}
#endif

/* Largest (k_h + 1) * (k_w + 1) for which border pixels take the fast path too (a prefix
 * sum table of the 1 bits per tap and channel lives on the stack: 3x3 kernels). */
#define OB_PREFIX_MAX 16
/* Output pixels whose accumulators are buffered before requantization. */
#define OB_CHUNK 16

/* Requantizes `count` buffered pixels (OB_GROUP words each, w[j] = A with
 * 127 * T + bias = 127 * C[o] + bias - 127 * A) of output channel oc to out, out_step
 * bytes apart: TFLite's MultiplyByQuantizedMultiplier taken apart. x << lshift wraps as
 * TFLite's does, so (127 C + bias - 127 A) << lshift = k - m * A modulo 2^32.
 * out_multiplier >= 0, so the saturating case of the doubling high multiply never
 * occurs and it is (a * b + 2^30) >> 31 for either sign of a * b.
 * Fast form, when |a| < 2^30 for every possible A (|T| <= 255 * n_all) and the right
 * shift e is in [1, 22]: the high multiply is SMMULR(2a, b) (so |h| <= 2^30), the
 * rounding division (h + 2^(e-1) - (h < 0)) >> e. */
typedef struct {
  uint32_t k, m;   /* fast form: 2k and 2m */
  int32_t mult;
  int32_t rshift;
  int32_t nudge;   /* fast form: 2^(e-1) + out_offset * 2^e */
  int32_t mask;    /* general form: 2^e - 1 */
  int fast;
} ob_rq;

static void rq_init(ob_rq *r, const ob_onebit_conv2d_params *p, int32_t oc, int32_t c_full,
                    int32_t n_all, const int32_t *bias) {
  const int32_t shift = p->out_shift[oc];
  const int32_t lshift = shift > 0 ? shift : 0;
  const int32_t rshift = shift > 0 ? 0 : -shift;
  const int32_t b = bias != NULL ? bias[oc] : 0;
  const int32_t out_offset = p->output_offset;
  const int64_t bound = ((int64_t)ONEBIT_CONV2D_MAGNITUDE * 255 * n_all +
                         (b < 0 ? -(int64_t)b : (int64_t)b)) << lshift;
  r->k = ((uint32_t)ONEBIT_CONV2D_MAGNITUDE * (uint32_t)c_full + (uint32_t)b) << lshift;
  r->m = (uint32_t)ONEBIT_CONV2D_MAGNITUDE << lshift;
  r->mult = p->out_multiplier[oc];
  r->rshift = rshift;
  r->mask = (int32_t)(((int64_t)1 << rshift) - 1);
  r->fast = bound < ((int64_t)1 << 30) && rshift >= 1 && rshift <= 22 && out_offset >= -128 &&
            out_offset <= 128;
  r->nudge = 0;
  if (r->fast) {
    r->k <<= 1;
    r->m <<= 1;
    /* |h| <= 2^30 and |out_offset * 2^e| <= 2^29, so h + nudge - (h < 0) cannot overflow,
     * and adding out_offset * 2^e before the shift adds out_offset after it. */
    r->nudge = ((int32_t)1 << (rshift - 1)) + (int32_t)((uint32_t)out_offset << rshift);
  }
}

static void requant_channel(const ob_rq *r, const ob_onebit_conv2d_params *p, const uint32_t *w,
                            int32_t count, int8_t *out, int32_t out_step) {
  const int32_t act_min = p->act_min, act_max = p->act_max;
  const uint32_t k = r->k, m = r->m;
  const int32_t mult = r->mult, rshift = r->rshift;
  const int8_t *end = out + count * out_step;
  if (r->fast) {
    const int32_t nudge = r->nudge;
    for (; out != end; w += OB_GROUP, out += out_step) {
      const int32_t h = ob_smmulr((int32_t)(k - m * w[0]), mult);
      int32_t v = (h + nudge + (h >> 31)) >> rshift;
      v = v < act_min ? act_min : v;
      v = v > act_max ? act_max : v;
      *out = (int8_t)v;
    }
    return;
  }
  /* Clamped before the offset is added, as ob_conv2d_requantize does: no overflow. */
  const int32_t out_offset = p->output_offset;
  const int32_t low = act_min - out_offset, high = act_max - out_offset;
  const int32_t mask = r->mask;
  const int32_t half = mask >> 1;
  for (; out != end; w += OB_GROUP, out += out_step) {
    const int32_t a = (int32_t)(k - m * w[0]);
    const int32_t h = (int32_t)(((int64_t)a * mult + ((int64_t)1 << 30)) >> 31);
    int32_t v = (h >> rshift) + ((h & mask) > half - (h >> 31) ? 1 : 0);
    v = v < low ? low : v;
    v = v > high ? high : v;
    *out = (int8_t)(v + out_offset);
  }
}

/* Border pixel of a large kernel (no prefix table): adds C[o] - C_rect to w[0..3],
 * counting the 1 bits of the rectangle of in-image taps here. */
static __attribute__((noinline)) void rect_slow(uint32_t *w, const uint8_t *const *filters,
                                                const int32_t *base, int32_t pd, int32_t full,
                                                int32_t kw, int32_t ky0, int32_t ky1,
                                                int32_t kx0, int32_t kx1, int32_t pn, int32_t qz) {
  for (int c = 0; c < OB_GROUP; ++c) {
    int32_t n1 = 0;
    for (int32_t y = ky0; y < ky1; ++y) {
      const uint8_t *wr = filters[c] + (y * kw + kx0) * pd;
      for (int32_t x = kx0; x < kx1; ++x, wr += pd) {
        for (int32_t d = 0; d < full; ++d) n1 += (int32_t)popcount8(wr[d]);
      }
    }
    w[c] += (uint32_t)base[c] - (uint32_t)(pn - qz * n1);
  }
}

/* All output pixels of a group of nc <= 4 channels on the fast path. Interior pixels: the
 * USAD over the whole window, T = C[o] - USAD. Border pixels: the USAD over the rectangle
 * of in-image taps, with C over that rectangle from prefix sums of the 1 bits (taps
 * outside the image contribute nothing); buffered as A = USAD + C[o] - C_rect. */
static __attribute__((noinline)) void conv_group_fast(
    const ob_onebit_conv2d_params *p, const int8_t *input, const uint8_t *const *filters_in,
    const int32_t *base, const int32_t *bias, int8_t *output, int32_t oc0,
    const uint32_t *masks, const int32_t (*tap_ones)[OB_GROUP], int nc) {
  const int32_t pd = ONEBIT_PACKED_DEPTH(p->in_c);
  const int32_t full = p->in_c >> 3;
  const int32_t zp = -p->input_offset;
  const int32_t kh = p->k_h, kw = p->k_w;
  const int32_t tap_mask_words = full * 2 * OB_GROUP; /* expanded mask words per tap */
  const uint8_t *filters[OB_GROUP];
  for (int c = 0; c < OB_GROUP; ++c) filters[c] = filters_in[c < nc ? c : 0];
  int32_t pref[OB_PREFIX_MAX][OB_GROUP]; /* pref[y * (kw + 1) + x][c]: 1 bits, taps < (y, x) */
  const int use_pref = (kh + 1) * (kw + 1) <= OB_PREFIX_MAX;
  if (use_pref) {
    for (int32_t x = 0; x <= kw; ++x) {
      for (int c = 0; c < OB_GROUP; ++c) pref[x][c] = 0;
    }
    for (int32_t y = 0; y < kh; ++y) {
      int32_t row[OB_GROUP] = {0, 0, 0, 0};
      for (int c = 0; c < OB_GROUP; ++c) pref[(y + 1) * (kw + 1)][c] = 0;
      for (int32_t x = 0; x < kw; ++x) {
        for (int c = 0; c < OB_GROUP; ++c) {
          row[c] += tap_ones[y * kw + x][c];
          pref[(y + 1) * (kw + 1) + x + 1][c] = pref[y * (kw + 1) + x + 1][c] + row[c];
        }
      }
    }
  }
  const int32_t pz = 128 + zp, qz = 1 + 2 * zp;
  const int32_t row_stride = p->in_w * p->in_c;
  /* Interior output columns: [ox_lo, ox_hi). */
  int32_t ox_lo = (p->pad_left + p->stride_w - 1) / p->stride_w;
  int32_t ox_hi = p->in_w - kw + p->pad_left < 0 ? 0 : (p->in_w - kw + p->pad_left) / p->stride_w + 1;
  ox_hi = ox_hi > p->out_w ? p->out_w : ox_hi;
  ox_lo = ox_lo > ox_hi ? ox_hi : ox_lo;
  uint32_t buf[OB_CHUNK * OB_GROUP];
  ob_rq rq[OB_GROUP];
  for (int c = 0; c < nc; ++c) rq_init(&rq[c], p, oc0 + c, base[c], kh * kw * full * 8, bias);
  for (int32_t oy = 0; oy < p->out_h; ++oy) {
    const int32_t in_y0 = oy * p->stride_h - p->pad_top;
    int32_t ky0 = 0, ky1 = kh;
    if (in_y0 < 0) ky0 = (-in_y0 + p->dilation_h - 1) / p->dilation_h;
    if (in_y0 + (kh - 1) * p->dilation_h >= p->in_h) {
      ky1 = p->in_h - in_y0 <= 0 ? 0 : (p->in_h - in_y0 + p->dilation_h - 1) / p->dilation_h;
    }
    if (ky0 > kh) ky0 = kh;
    if (ky1 < ky0) ky1 = ky0;
    const int row_full = ky0 == 0 && ky1 == kh;
    int8_t *out_row = output + oy * p->out_w * p->out_c + oc0;
    for (int32_t ox_c = 0; ox_c < p->out_w; ox_c += OB_CHUNK) {
      const int32_t n = p->out_w - ox_c < OB_CHUNK ? p->out_w - ox_c : OB_CHUNK;
      for (int32_t j = 0; j < n;) {
        const int32_t ox = ox_c + j;
        const int32_t in_x0 = ox * p->stride_w - p->pad_left;
        if (row_full && ox >= ox_lo && ox < ox_hi) {
          const int32_t run = (ox_hi - ox < n - j) ? ox_hi - ox : n - j;
          ob_px_args a = {kw * p->in_c, kh, p->dilation_h * row_stride - kw * p->in_c, 0,
                          run, p->stride_w * p->in_c, masks};
          ob_ob1_usad_px4(buf + j * OB_GROUP, input + in_y0 * row_stride + in_x0 * p->in_c, &a);
          j += run;
          continue;
        }
        uint32_t *w = buf + j * OB_GROUP;
        ++j;
        int32_t kx0 = in_x0 < 0 ? -in_x0 : 0;
        int32_t kx1 = p->in_w - in_x0;
        kx0 = kx0 > kw ? kw : kx0;
        kx1 = kx1 > kw ? kw : (kx1 < kx0 ? kx0 : kx1);
        for (int c = 0; c < OB_GROUP; ++c) w[c] = 0;
        if (ky1 > ky0 && kx1 > kx0) {
          const int32_t nx = kx1 - kx0;
          ob_px_args a = {nx * p->in_c, ky1 - ky0, p->dilation_h * row_stride - nx * p->in_c,
                          (kw - nx) * tap_mask_words * 4, 1, 0,
                          masks + (ky0 * kw + kx0) * tap_mask_words};
          ob_ob1_usad_px4(w,
                          input + (in_y0 + ky0 * p->dilation_h) * row_stride +
                              (in_x0 + kx0) * p->in_c,
                          &a);
        }
        const int32_t n_rect = (ky1 - ky0) * (kx1 - kx0) * full * 8;
        const int32_t i11 = ky1 * (kw + 1) + kx1, i10 = ky1 * (kw + 1) + kx0;
        const int32_t i01 = ky0 * (kw + 1) + kx1, i00 = ky0 * (kw + 1) + kx0;
        if (use_pref) {
          for (int c = 0; c < OB_GROUP; ++c) {
            const int32_t n1 = pref[i11][c] - pref[i10][c] - pref[i01][c] + pref[i00][c];
            w[c] += (uint32_t)base[c] - (uint32_t)(pz * n_rect - qz * n1);
          }
        } else {
          rect_slow(w, filters, base, pd, full, kw, ky0, ky1, kx0, kx1, pz * n_rect, qz);
        }
      }
      for (int c = 0; c < nc; ++c) {
        requant_channel(&rq[c], p, buf + c, n, out_row + ox_c * p->out_c + c,
                        p->out_c);
      }
    }
  }
}

static inline __attribute__((always_inline)) void conv_group(
    const ob_onebit_conv2d_params *p, const int8_t *input, const uint8_t *packed_filter,
    const int32_t *bias, int8_t *output, int32_t oc0, uint32_t *masks, const int nc) {
  const int32_t pd = ONEBIT_PACKED_DEPTH(p->in_c);
  const int32_t filter_size = p->k_h * p->k_w * pd;
  const int32_t full = p->in_c >> 3;
  const int32_t zp = -p->input_offset;
  const int32_t n_all = p->k_h * p->k_w * full * 8; /* channels summed by USADA8 */
  const uint32_t pad = (uint32_t)(128 + zp) * 0x01010101u;
  const int32_t taps = p->k_h * p->k_w;
  const uint8_t *filters[OB_GROUP];
  int32_t base[OB_GROUP]; /* C[o]: T = C[o] - USAD (+ the partial-byte channels) */
  /* 1 bits per tap and channel, for the fast path's prefix sums (taps <= OB_PREFIX_MAX). */
  int32_t tap_ones[OB_PREFIX_MAX][OB_GROUP];
  const int count_taps = taps <= OB_PREFIX_MAX;
  /* One pass over each filter's full bytes: its 1 bits (per tap where kept) and, with
   * scratch, its expanded masks, once for all output pixels. */
  for (int c = 0; c < nc; ++c) {
    const uint8_t *f = packed_filter + (oc0 + c) * filter_size;
    filters[c] = f;
    uint32_t *m = masks != NULL ? masks + 2 * c : NULL;
    int32_t n1 = 0;
    for (int32_t tap = 0; tap < taps; ++tap, f += pd) {
      int32_t ones = 0;
      for (int32_t d = 0; d < full; ++d) {
        ones += k_ones[f[d]];
        if (m != NULL) {
          const uint32_t *e = k_masks[f[d]];
          m[0] = e[0];
          m[1] = e[1];
          m += 2 * OB_GROUP;
        }
      }
      if (count_taps) tap_ones[tap][c] = ones;
      n1 += ones;
    }
    base[c] = (128 + zp) * n_all - (1 + 2 * zp) * n1;
  }
  for (int c = nc; c < OB_GROUP && count_taps; ++c) {
    for (int32_t tap = 0; tap < taps; ++tap) tap_ones[tap][c] = tap_ones[tap][0];  /* unused lanes */
  }
  if (masks != NULL && (p->in_c & 7) == 0 && p->dilation_w == 1 &&
      ((uintptr_t)input & 3u) == 0) {
    conv_group_fast(p, input, filters, base, bias, output, oc0, masks, (const int32_t(*)[OB_GROUP])tap_ones, nc);
    return;
  }
  for (int32_t oy = 0; oy < p->out_h; ++oy) {
    const int32_t in_y0 = oy * p->stride_h - p->pad_top;
    for (int32_t ox = 0; ox < p->out_w; ++ox) {
      const int32_t in_x0 = ox * p->stride_w - p->pad_left;
      int32_t t[OB_GROUP];
      conv_pixel(p, input, filters, masks, in_y0, in_x0, pad, t, nc);
      int8_t *out = output + (oy * p->out_w + ox) * p->out_c + oc0;
      for (int c = 0; c < nc; ++c) {
        const int32_t oc = oc0 + c;
        int32_t acc = ONEBIT_CONV2D_MAGNITUDE * (base[c] + t[c]);
        if (bias != NULL) {
          acc = ob_wrapping_add(acc, bias[oc]);
        }
        out[c] = ob_conv2d_requantize(p, oc, acc);
      }
    }
  }
}

int32_t ob_onebit_conv2d_scratch_bytes(const ob_onebit_conv2d_params *params) {
  if (params == NULL || params->k_h < 1 || params->k_w < 1 || params->in_c < 8) {
    return 0;
  }
  /* The expanded masks of one group: 8 bytes per full weight byte and channel. */
  return params->k_h * params->k_w * (params->in_c >> 3) * 8 * OB_GROUP;
}

ob_status ob_onebit_conv2d_ex(const ob_onebit_conv2d_params *params, const int8_t *input,
                              const uint8_t *packed_filter, const int32_t *bias, int8_t *output,
                              void *scratch) {
  const ob_status check = ob_onebit_conv2d_variant_check(params, input, packed_filter, output);
  if (check != OB_OK) {
    return check;
  }
  uint32_t *masks = ob_onebit_conv2d_scratch_bytes(params) > 0 ? (uint32_t *)scratch : NULL;
  int32_t oc = 0;
  for (; oc + OB_GROUP <= params->out_c; oc += OB_GROUP) {
    conv_group(params, input, packed_filter, bias, output, oc, masks, 4);
  }
  switch (params->out_c - oc) {
    case 3: conv_group(params, input, packed_filter, bias, output, oc, masks, 3); break;
    case 2: conv_group(params, input, packed_filter, bias, output, oc, masks, 2); break;
    case 1: conv_group(params, input, packed_filter, bias, output, oc, masks, 1); break;
    default: break;
  }
  return OB_OK;
}

ob_status ob_onebit_conv2d(const ob_onebit_conv2d_params *params, const int8_t *input,
                           const uint8_t *packed_filter, const int32_t *bias, int8_t *output) {
  return ob_onebit_conv2d_ex(params, input, packed_filter, bias, output, NULL);
}
