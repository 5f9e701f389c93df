"""TFLite's int8 requantization parameters, computed exactly as TFLite's kernels do.

Every kernel in firmware/kernels/ takes its scales as precomputed integers: fixed-point
multipliers, shifts, offsets and activation clamps. This module computes them from the
tensors' float32 scales and zero points the way ai-edge-litert's Prepare functions do
(and, for MEAN, the adjustment its Eval does), so that the C kernels can equal TFLite's
int8 reference kernels bit for bit. Where TFLite mixes float32 and double arithmetic, so
do we: a different rounding of one intermediate changes a multiplier's last bit.

Each params dataclass lists the fields of the C struct of the same op, with the same
names and order, so the code generator can emit `{.name = value, ...}` from `fields()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mcu_onebit.errors import OnebitError

INT8_MIN = -128
INT8_MAX = 127
# TFLite's left shift before rescaling the two int8 inputs of ADD (add.cc, Prepare).
ADD_LEFT_SHIFT = 20

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


@dataclass(frozen=True)
class TensorQuant:
    """A tensor's per-tensor quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


def _round_half_away(value: float) -> int:
    """std::round (TfLiteRound): nearest integer, halves away from zero, exactly."""
    magnitude = abs(value)
    floor = math.floor(magnitude)
    # magnitude - floor is exact in binary floating point, so the comparison is too.
    rounded = floor + 1 if magnitude - floor >= 0.5 else floor
    return int(rounded) if value >= 0 else -int(rounded)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real ~= multiplier * 2**(shift - 31).

    multiplier is in [2**30, 2**31) or 0. A mantissa that rounds up to 2**31 becomes
    2**30 with shift + 1; a multiplier below about 2**-32 (shift < -31) flushes to
    (0, 0), which makes the result exactly 0.
    """
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real_multiplier!r}")
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real_multiplier)
    q_fixed = _round_half_away(mantissa * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one_exp(real_multiplier: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplierSmallerThanOneExp: as quantize_multiplier, for 0 < M < 1."""
    if not 0.0 < real_multiplier < 1.0:
        raise ValueError(f"multiplier must be in (0, 1), got {real_multiplier!r}")
    multiplier, shift = quantize_multiplier(real_multiplier)
    if shift > 0:
        raise ValueError(f"multiplier {real_multiplier!r} rounds to a shift of {shift} > 0")
    return multiplier, shift


def _quantize_float32(value: float, quant: TensorQuant) -> int:
    # TFLite's kernel_util Quantize: float32 division and std::round on the float.
    quotient = float(np.float32(value) / np.float32(quant.scale))
    return quant.zero_point + _round_half_away(quotient)


def activation_range(activation: str, output: TensorQuant) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for an int8 output: (act_min, act_max)."""
    if activation == "NONE":
        return INT8_MIN, INT8_MAX
    if activation == "RELU":
        return max(INT8_MIN, _quantize_float32(0.0, output)), INT8_MAX
    if activation == "RELU6":
        return (max(INT8_MIN, _quantize_float32(0.0, output)),
                min(INT8_MAX, _quantize_float32(6.0, output)))
    if activation == "RELU_N1_TO_1":
        return (max(INT8_MIN, _quantize_float32(-1.0, output)),
                min(INT8_MAX, _quantize_float32(1.0, output)))
    raise OnebitError(f"fused activation {activation!r} is not supported; "
                      f"use one of {', '.join(ACTIVATIONS)}")


def broadcast_period(operand_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    """How many elements an operand has when it repeats along the output's leading axes.

    The kernels read operand element i % period for output element i, which is TFLite's
    broadcasting when the operand's shape without leading 1s is a suffix of the output
    shape: same shape, [C] or [1, 1, 1, C] per-channel constants, scalars.
    """
    trimmed = list(operand_shape)
    while trimmed and trimmed[0] == 1:
        trimmed.pop(0)
    if trimmed and list(output_shape[len(output_shape) - len(trimmed):]) != trimmed:
        raise OnebitError(
            f"an operand of shape {list(operand_shape)} broadcasts to {list(output_shape)} "
            "along inner axes; only same-shape, per-channel [..., C] and scalar operands "
            "are supported")
    return math.prod(trimmed)


@dataclass(frozen=True)
class ConvQuant:
    """The quantization part of ob_onebit_conv2d_params (firmware/kernels/onebit_conv2d.h).

    Fields, as in the C struct: input_offset (-input zero point), output_offset (output
    zero point), act_min, act_max, out_multiplier and out_shift (one per output channel,
    the C arrays' contents).
    """

    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    out_multiplier: tuple[int, ...]
    out_shift: tuple[int, ...]


def conv_quant(input: TensorQuant, filter_scales: Sequence[float], output: TensorQuant,
               activation: str) -> ConvQuant:
    """As TFLite's PopulateConvolutionQuantizationParams for int8 per-channel CONV_2D."""
    multipliers, shifts = [], []
    for filter_scale in filter_scales:
        # double(input_scale) * double(filter_scale) / double(output_scale), in that order.
        effective = (float(np.float32(input.scale)) * float(np.float32(filter_scale))
                     / float(np.float32(output.scale)))
        multiplier, shift = quantize_multiplier(effective)
        multipliers.append(multiplier)
        shifts.append(shift)
    act_min, act_max = activation_range(activation, output)
    return ConvQuant(input_offset=-input.zero_point, output_offset=output.zero_point,
                     act_min=act_min, act_max=act_max, out_multiplier=tuple(multipliers),
                     out_shift=tuple(shifts))


@dataclass(frozen=True)
class AddParams:
    """ob_add_params (firmware/kernels/add.h), field for field.

    size: output elements; input1_period, input2_period: see broadcast_period;
    left_shift; input{1,2}_offset (-zero point), input{1,2}_multiplier, input{1,2}_shift;
    output_offset (+zero point), output_multiplier, output_shift; act_min, act_max.
    """

    size: int
    input1_period: int
    input2_period: int
    left_shift: int
    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int


def add_params(input1: TensorQuant, input2: TensorQuant, output: TensorQuant,
               activation: str, input1_shape: Sequence[int], input2_shape: Sequence[int],
               output_shape: Sequence[int]) -> AddParams:
    """As TFLite's add.cc Prepare for int8."""
    s1, s2, so = np.float32(input1.scale), np.float32(input2.scale), np.float32(output.scale)
    # `2 * std::max(float, float)` is a float32 product, widened to double afterwards.
    twice_max = float(np.float32(2) * max(s1, s2))
    real1 = float(s1) / twice_max
    real2 = float(s2) / twice_max
    # `(1 << left_shift) * output_scale` is float32 too.
    real_out = twice_max / float(np.float32(1 << ADD_LEFT_SHIFT) * so)
    m1, sh1 = quantize_multiplier_smaller_than_one_exp(real1)
    m2, sh2 = quantize_multiplier_smaller_than_one_exp(real2)
    mo, sho = quantize_multiplier_smaller_than_one_exp(real_out)
    act_min, act_max = activation_range(activation, output)
    return AddParams(
        size=math.prod(output_shape),
        input1_period=broadcast_period(input1_shape, output_shape),
        input2_period=broadcast_period(input2_shape, output_shape),
        left_shift=ADD_LEFT_SHIFT,
        input1_offset=-input1.zero_point, input1_multiplier=m1, input1_shift=sh1,
        input2_offset=-input2.zero_point, input2_multiplier=m2, input2_shift=sh2,
        output_offset=output.zero_point, output_multiplier=mo, output_shift=sho,
        act_min=act_min, act_max=act_max)


@dataclass(frozen=True)
class MulParams:
    """ob_mul_params (firmware/kernels/mul.h), field for field.

    size, input1_period, input2_period (as AddParams); input1_offset, input2_offset
    (-zero points); output_offset (+zero point); output_multiplier, output_shift;
    act_min, act_max.
    """

    size: int
    input1_period: int
    input2_period: int
    input1_offset: int
    input2_offset: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int


def mul_params(input1: TensorQuant, input2: TensorQuant, output: TensorQuant,
               activation: str, input1_shape: Sequence[int], input2_shape: Sequence[int],
               output_shape: Sequence[int]) -> MulParams:
    """As TFLite's mul.cc Prepare for int8."""
    # `input1_scale * input2_scale / output_scale` is evaluated entirely in float32.
    real = float(np.float32(input1.scale) * np.float32(input2.scale)
                 / np.float32(output.scale))
    multiplier, shift = quantize_multiplier(real)
    act_min, act_max = activation_range(activation, output)
    return MulParams(
        size=math.prod(output_shape),
        input1_period=broadcast_period(input1_shape, output_shape),
        input2_period=broadcast_period(input2_shape, output_shape),
        input1_offset=-input1.zero_point, input2_offset=-input2.zero_point,
        output_offset=output.zero_point, output_multiplier=multiplier, output_shift=shift,
        act_min=act_min, act_max=act_max)


@dataclass(frozen=True)
class MeanParams:
    """ob_mean_params (firmware/kernels/mean.h), field for field.

    in_h, in_w, channels; input_offset (-zero point); output_offset (+zero point);
    multiplier, shift: input_scale / output_scale with 1 / (in_h * in_w) folded in.
    """

    in_h: int
    in_w: int
    channels: int
    input_offset: int
    output_offset: int
    multiplier: int
    shift: int


def mean_params(input: TensorQuant, output: TensorQuant, input_shape: Sequence[int],
                axes: Sequence[int]) -> MeanParams:
    """As TFLite's reduce.cc for int8 MEAN over axes (1, 2) of [1, H, W, C].

    Prepare quantizes input_scale / output_scale (in double); Eval then folds the
    division by the element count n into it: with s = min(floor(log2 n), 32, 31 + shift),
    multiplier = (multiplier << s) // n and shift -= s.
    """
    if len(input_shape) != 4 or input_shape[0] != 1:
        raise OnebitError(f"MEAN of a tensor of shape {list(input_shape)} is not supported; "
                          "only [1, H, W, C]")
    if sorted(a % 4 for a in axes) != [1, 2]:
        raise OnebitError(f"MEAN over axes {list(axes)} is not supported; only (1, 2)")
    _, in_h, in_w, channels = (int(d) for d in input_shape)
    real = float(np.float32(input.scale)) / float(np.float32(output.scale))
    multiplier, shift = quantize_multiplier(real)
    count = in_h * in_w
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << fold) // count
    shift -= fold
    return MeanParams(in_h=in_h, in_w=in_w, channels=channels, input_offset=-input.zero_point,
                      output_offset=output.zero_point, multiplier=multiplier, shift=shift)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite's double-rounding MultiplyByQuantizedMultiplier on int32 values, in numpy.

    x, multiplier and shift broadcast against each other (e.g. per-channel multipliers
    along the last axis). The numpy twin of ob_multiply_by_quantized_multiplier in
    firmware/kernels/ob_common.h, for Python oracles; returns int64 holding int32 values.
    """
    x = np.asarray(x, np.int64)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # x * (1 << left) in int32 wraps in TFLite.
    a = _wrap_int32(x << left)
    # SaturatingRoundingDoublingHighMul; a * multiplier fits int64 (both are int32).
    ab = a * multiplier
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # truncating division
    high = np.where((a == -(1 << 31)) & (multiplier == -(1 << 31)), (1 << 31) - 1, high)
    # RoundingDivideByPOT.
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def mul_values(p: MulParams, input1: np.ndarray, input2: np.ndarray) -> np.ndarray:
    """ob_mul's arithmetic (firmware/kernels/mul.c) on int8 operands of one shape."""
    product = (np.asarray(input1, np.int64) + p.input1_offset) * (np.asarray(input2, np.int64) + p.input2_offset)
    out = multiply_by_quantized_multiplier(product, p.output_multiplier, p.output_shift) + p.output_offset
    return np.clip(out, p.act_min, p.act_max).astype(np.int8)


def add_values(p: AddParams, input1: np.ndarray, input2: np.ndarray) -> np.ndarray:
    """ob_add's arithmetic (firmware/kernels/add.c) on int8 operands of one shape."""
    def rescale(x, offset, multiplier, shift):
        return multiply_by_quantized_multiplier((np.asarray(x, np.int64) + offset) << p.left_shift, multiplier, shift)

    total = (rescale(input1, p.input1_offset, p.input1_multiplier, p.input1_shift)
             + rescale(input2, p.input2_offset, p.input2_multiplier, p.input2_shift))
    out = multiply_by_quantized_multiplier(total, p.output_multiplier, p.output_shift) + p.output_offset
    return np.clip(out, p.act_min, p.act_max).astype(np.int8)


@dataclass(frozen=True)
class AveragePoolParams:
    """ob_average_pool_params (firmware/kernels/average_pool.h), field for field."""

    in_h: int
    in_w: int
    channels: int
    out_h: int
    out_w: int
    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    act_min: int
    act_max: int


def average_pool_params(input: TensorQuant, output: TensorQuant, input_shape: Sequence[int],
                        output_shape: Sequence[int], filter_hw: tuple[int, int],
                        stride_hw: tuple[int, int], pad_before_hw: tuple[int, int],
                        activation: str) -> AveragePoolParams:
    """As TFLite's pooling.cc for int8 AVERAGE_POOL_2D, which requires one quantization."""
    if input != output:
        raise OnebitError("AVERAGE_POOL_2D with different input and output quantization is not "
                          "valid int8 TFLite; re-convert the model")
    _, in_h, in_w, channels = (int(d) for d in input_shape)
    act_min, act_max = activation_range(activation, output)
    return AveragePoolParams(
        in_h=in_h, in_w=in_w, channels=channels, out_h=int(output_shape[1]), out_w=int(output_shape[2]),
        filter_h=filter_hw[0], filter_w=filter_hw[1], stride_h=stride_hw[0], stride_w=stride_hw[1],
        pad_top=pad_before_hw[0], pad_left=pad_before_hw[1], act_min=act_min, act_max=act_max)


@dataclass(frozen=True)
class PadParams:
    """ob_pad_params (firmware/kernels/pad.h), field for field."""

    in_h: int
    in_w: int
    in_c: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    pad_front: int
    pad_back: int
    pad_value: int


def pad_params(input: TensorQuant, output: TensorQuant, input_shape: Sequence[int],
               paddings: np.ndarray) -> PadParams:
    """As TFLite's pad.cc for int8 [1, H, W, C] without constant_values: new elements are
    the output zero point."""
    paddings = np.asarray(paddings).reshape(-1, 2)
    if len(input_shape) != 4 or input_shape[0] != 1 or paddings.shape != (4, 2) or paddings[0].any():
        raise OnebitError(f"PAD of shape {list(input_shape)} with paddings {paddings.tolist()} is not "
                          "supported; only [1, H, W, C] padded along H, W or C")
    if input != output:
        raise OnebitError("PAD with different input and output quantization is not supported")
    _, in_h, in_w, in_c = (int(d) for d in input_shape)
    (top, bottom), (left, right), (front, back) = (tuple(int(v) for v in row) for row in paddings[1:])
    return PadParams(in_h=in_h, in_w=in_w, in_c=in_c, pad_top=top, pad_bottom=bottom, pad_left=left,
                     pad_right=right, pad_front=front, pad_back=back, pad_value=output.zero_point)


@dataclass(frozen=True)
class MaximumParams:
    """ob_maximum_params (firmware/kernels/maximum.h), field for field."""

    size: int
    input1_period: int
    input2_period: int


def maximum_params(input1: TensorQuant, input2: TensorQuant, output: TensorQuant,
                   input1_shape: Sequence[int], input2_shape: Sequence[int],
                   output_shape: Sequence[int]) -> MaximumParams:
    """TFLite's int8 MAXIMUM compares raw values: all three tensors share one quantization."""
    if not input1 == input2 == output:
        raise OnebitError("MAXIMUM with different input and output quantizations is not supported")
    return MaximumParams(size=math.prod(output_shape),
                         input1_period=broadcast_period(input1_shape, output_shape),
                         input2_period=broadcast_period(input2_shape, output_shape))
