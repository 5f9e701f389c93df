/* ONEBIT_CONV2D for Cortex-M cores without the DSP extension (M3; plain C, so it builds
 * for Thumb-1 M0+ too): bit-exact with the portable reference ../onebit_conv2d.c (the
 * oracle), which the build replaces with this file.
 *
 * The maths. Let u = x + 128 (the input byte with its top bit flipped, 0..255) and
 * p = 128 + zp, so that x - zp = u - p. Over N input channels and taps of which n1 have
 * a 1 bit (+127), with S1 = sum of u where the bit is 1 and Su = sum of all u:
 *     T = sum +-(u - p) = 2 S1 - Su - p (2 n1 - N).
 * A tap outside the image must contribute nothing; it is fed u = p (x - zp = 0), which
 * keeps N and n1 the whole filter's, computed once per output channel and call.
 *
 * S1 without SIMD: split the four bytes u0..u3 of an input word into two words of 16-bit
 * lanes, e = u0 + u2 << 16 and o = u1 + u3 << 16, and put the bits in lane words the
 * other way round, We = b2 + b0 << 16, Wo = b3 + b1 << 16. The upper half of e * We
 * is u0 b0 + u2 b2, its lower half u0 b2 < 2^8: one MLA does two multiply-accumulates.
 * Over at most OB_FLUSH chunks of 8 channels the upper halves stay below 2^16 and the
 * lower ones never carry into them, so S1 += acc >> 16 then is exact. Su is summed in
 * the same lanes. Per 8 input channels: 2 loads, 2 EOR, 4 AND (split) and 4 ADD (Su) for
 * the pixel, then 4 MLA per output channel, with the lane words of the weights loaded
 * from the scratch of ob_onebit_conv2d_ex (expanded once per call and pair of output
 * channels) or made from a 16-entry table per weight nibble without scratch.
 *
 * Input channels beyond the last multiple of 8 (cin % 8) are summed as in the
 * reference, one by one, over the in-image taps only. */
#include "onebit_conv2d.h"

#include <stddef.h>
#include <string.h>

/* Output channels computed together (registers: 2 accumulators, 4 input lane words). */
#define OB_GROUP 2
#define OB_FLIP 0x80808080u
#define OB_LANES 0x00FF00FFu
/* Chunks of 8 channels summed before the 16-bit lanes are emptied: 32 * 8 * 255 < 2^16. */
#define OB_FLUSH 32

/* k_pairs[n] = {We, Wo} of the weight nibble n (channels c..c+3 of a byte). */
#define OB_BIT(n, i) (((n) >> (i)) & 1u)
#define OB_P(n) {OB_BIT(n, 2) | OB_BIT(n, 0) << 16, OB_BIT(n, 3) | OB_BIT(n, 1) << 16}
static const uint32_t k_pairs[16][2] = {OB_P(0u),  OB_P(1u),  OB_P(2u),  OB_P(3u),
                                        OB_P(4u),  OB_P(5u),  OB_P(6u),  OB_P(7u),
                                        OB_P(8u),  OB_P(9u),  OB_P(10u), OB_P(11u),
                                        OB_P(12u), OB_P(13u), OB_P(14u), OB_P(15u)};

static inline uint32_t load32(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v); /* one LDR on ARMv7-M; byte loads on ARMv6-M */
  return v;
}

/* The 4 lane words of weight byte b: We, Wo of the low nibble, then of the high one. */
static inline void lane_words(uint32_t b, uint32_t *w) {
  w[0] = k_pairs[b & 15u][0];
  w[1] = k_pairs[b & 15u][1];
  w[2] = k_pairs[b >> 4][0];
  w[3] = k_pairs[b >> 4][1];
}

static int32_t popcount8(uint32_t b) {
  b = b - ((b >> 1) & 0x55u);
  b = (b & 0x33u) + ((b >> 2) & 0x33u);
  return (int32_t)((b + (b >> 4)) & 0x0Fu);
}

/* T of nc <= OB_GROUP output channels at one output pixel, without the 2 n1 - N term:
 * t[c] = 2 S1 - Su + the cin % 8 tail. masks: the group's lane words per (tap, full
 * weight byte), or NULL (from the packed filters). */
static inline __attribute__((always_inline)) void conv_pixel(
    const ob_onebit_conv2d_params *p, const int8_t *input, const uint8_t *const *filters,
    const uint32_t *masks, int32_t in_y0, int32_t in_x0, int32_t *t, const int nc) {
  const int32_t pd = ONEBIT_PACKED_DEPTH(p->in_c);
  const int32_t full = p->in_c >> 3;
  const uint32_t pad = (uint32_t)(128 - p->input_offset) * 0x00010001u; /* u = p, as lanes */
  uint32_t acc0 = 0, acc1 = 0, su = 0;
  int32_t s1[OB_GROUP] = {0, 0}, tail[OB_GROUP] = {0, 0}, sum_u = 0;
  int32_t left = OB_FLUSH;
  for (int32_t ky = 0; ky < p->k_h; ++ky) {
    const int32_t in_y = in_y0 + ky * p->dilation_h;
    for (int32_t kx = 0; kx < p->k_w; ++kx) {
      const int32_t in_x = in_x0 + kx * p->dilation_w;
      const int inside = in_y >= 0 && in_y < p->in_h && in_x >= 0 && in_x < p->in_w;
      const int8_t *in = inside ? input + (in_y * p->in_w + in_x) * p->in_c : NULL;
      const int32_t tap = ky * p->k_w + kx;
      const uint32_t *m = masks != NULL ? masks + tap * full * 4 * OB_GROUP : NULL;
      for (int32_t d = 0; d < full; ++d) {
        uint32_t e0 = pad, o0 = pad, e1 = pad, o1 = pad;
        if (in != NULL) {
          const uint32_t w0 = load32(in + 8 * d) ^ OB_FLIP, w1 = load32(in + 8 * d + 4) ^ OB_FLIP;
          e0 = w0 & OB_LANES;
          o0 = (w0 >> 8) & OB_LANES;
          e1 = w1 & OB_LANES;
          o1 = (w1 >> 8) & OB_LANES;
        }
        su += e0 + o0 + e1 + o1;
        uint32_t w[4 * OB_GROUP];
        const uint32_t *wc = m;
        if (m != NULL) {
          m += 4 * OB_GROUP;
        } else {
          for (int c = 0; c < nc; ++c) lane_words(filters[c][tap * pd + d], w + 4 * c);
          wc = w;
        }
        acc0 += e0 * wc[0] + o0 * wc[1] + e1 * wc[2] + o1 * wc[3];
        if (nc > 1) acc1 += e0 * wc[4] + o0 * wc[5] + e1 * wc[6] + o1 * wc[7];
        if (--left == 0) {
          s1[0] += (int32_t)(acc0 >> 16);
          s1[1] += (int32_t)(acc1 >> 16);
          sum_u += (int32_t)((su & 0xFFFFu) + (su >> 16));
          acc0 = acc1 = su = 0;
          left = OB_FLUSH;
        }
      }
      if (in != NULL) {
        for (int32_t ic = full * 8; ic < p->in_c; ++ic) {
          const int32_t v = (int32_t)in[ic] + p->input_offset;
          for (int c = 0; c < nc; ++c) {
            tail[c] += ((filters[c][tap * pd + (ic >> 3)] >> (ic & 7)) & 1u) ? v : -v;
          }
        }
      }
    }
  }
  s1[0] += (int32_t)(acc0 >> 16);
  s1[1] += (int32_t)(acc1 >> 16);
  sum_u += (int32_t)((su & 0xFFFFu) + (su >> 16));
  for (int c = 0; c < nc; ++c) t[c] = 2 * s1[c] - sum_u + tail[c];
}

static inline __attribute__((always_inline)) void conv_group(
    const ob_onebit_conv2d_params *p, const int8_t *input, const uint8_t *packed_filter,
    const int32_t *bias, int8_t *output, int32_t oc0, uint32_t *masks, const int nc) {
  const int32_t pd = ONEBIT_PACKED_DEPTH(p->in_c);
  const int32_t full = p->in_c >> 3;
  const int32_t taps = p->k_h * p->k_w;
  const uint8_t *filters[OB_GROUP];
  int32_t base[OB_GROUP]; /* -p (2 n1 - N) over the full weight bytes */
  for (int c = 0; c < nc; ++c) {
    filters[c] = packed_filter + (oc0 + c) * taps * pd;
    int32_t n1 = 0;
    for (int32_t tap = 0; tap < taps; ++tap) {
      for (int32_t d = 0; d < full; ++d) n1 += popcount8(filters[c][tap * pd + d]);
    }
    base[c] = -(128 - p->input_offset) * (2 * n1 - taps * full * 8);
  }
  if (masks != NULL) {
    for (int32_t tap = 0; tap < taps; ++tap) {
      for (int32_t d = 0; d < full; ++d) {
        uint32_t *m = masks + (tap * full + d) * 4 * OB_GROUP;
        for (int c = 0; c < nc; ++c) lane_words(filters[c][tap * pd + d], m + 4 * c);
      }
    }
  }
  for (int32_t oy = 0; oy < p->out_h; ++oy) {
    const int32_t in_y0 = oy * p->stride_h - p->pad_top;
    for (int32_t ox = 0; ox < p->out_w; ++ox) {
      int32_t t[OB_GROUP];
      conv_pixel(p, input, filters, masks, in_y0, ox * p->stride_w - p->pad_left, t, nc);
      int8_t *out = output + (oy * p->out_w + ox) * p->out_c + oc0;
      for (int c = 0; c < nc; ++c) {
        const int32_t oc = oc0 + c;
        int32_t acc = ONEBIT_CONV2D_MAGNITUDE * (base[c] + t[c]);
        if (bias != NULL) acc = ob_wrapping_add(acc, bias[oc]);
        out[c] = ob_conv2d_requantize(p, oc, acc);
      }
    }
  }
}

int32_t ob_onebit_conv2d_scratch_bytes(const ob_onebit_conv2d_params *params) {
  if (params == NULL || params->k_h < 1 || params->k_w < 1 || params->in_c < 8) {
    return 0;
  }
  /* The lane words of one group: 16 bytes per full weight byte and channel. */
  return params->k_h * params->k_w * (params->in_c >> 3) * 16 * OB_GROUP;
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
    conv_group(params, input, packed_filter, bias, output, oc, masks, 2);
  }
  if (oc < params->out_c) conv_group(params, input, packed_filter, bias, output, oc, masks, 1);
  return OB_OK;
}

ob_status ob_onebit_conv2d(const ob_onebit_conv2d_params *params, const int8_t *input,
                           const uint8_t *packed_filter, const int32_t *bias, int8_t *output) {
  return ob_onebit_conv2d_ex(params, input, packed_filter, bias, output, NULL);
}
