"""The Python side of the ONEBIT_CONV2D custom op (docs/onebit_conv2d.md).

ONEBIT_CONV2D is TFLite's int8 per-channel CONV_2D restricted to filters whose every
value is +-127, with the filter stored as one bit per weight. This module packs and
unpacks filters, encodes and decodes the custom options, computes TFLite's padding, and
holds a numpy reference of the op written from the specification: the Python oracle the
C kernel (firmware/kernels/onebit_conv2d.c) is tested against, next to TFLite itself.

The spec's constants (the options table, version, magnitude, limits) are read from
firmware/kernels/onebit_conv2d.h, their single source.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from flatbuffers import flexbuffers

from mcu_onebit.cheader import read_defines, read_tables

from . import flexverify
from .quant import ConvQuant, multiply_by_quantized_multiplier

HEADER = "kernels/onebit_conv2d.h"
_SPEC = read_defines(HEADER)
_TABLES = read_tables(HEADER)
OP_NAME: str = _SPEC["ONEBIT_CONV2D_OP_NAME"]
OPTIONS_VERSION: int = _SPEC["ONEBIT_CONV2D_OPTIONS_VERSION"]
MAGNITUDE: int = _SPEC["ONEBIT_CONV2D_MAGNITUDE"]
DIM_MAX: int = _SPEC["ONEBIT_CONV2D_DIM_MAX"]
TAPS_MAX: int = _SPEC["ONEBIT_CONV2D_TAPS_MAX"]


def _number(token: str) -> int:
    """A table entry: a literal, or a constant of the header."""
    return int(_SPEC[token]) if token in _SPEC else int(token, 0)


# The options table (ONEBIT_OPTIONS_INTS and ONEBIT_OPTIONS_STRINGS), the one the C parser
# firmware/runtime/tflm/onebit_conv2d_options.cc expands: key -> inclusive range, and key ->
# the strings it may hold.
INT_OPTIONS: dict[str, tuple[int, int]] = {
    key: (_number(low), _number(high)) for key, low, high in _TABLES["ONEBIT_OPTIONS_INTS"]}
STRING_OPTIONS: dict[str, tuple[str, ...]] = {
    key: tuple(name for (name,) in _TABLES[names]) for key, names in _TABLES["ONEBIT_OPTIONS_STRINGS"]}
PADDINGS = STRING_OPTIONS["padding"]


def packed_depth(in_channels: int) -> int:
    """Bytes per filter tap: ONEBIT_PACKED_DEPTH(cin) of the header."""
    return (in_channels + 7) // 8


def pack_filter(filter_int8: np.ndarray) -> np.ndarray:
    """int8 filter [O, KH, KW, I] of +-127 -> uint8 [O, KH, KW, ceil(I / 8)].

    Bit (i % 8) of byte (i // 8), least significant first, is 1 for +127 and 0 for -127;
    padding bits are 0.
    """
    filt = np.asarray(filter_int8)
    if filt.ndim != 4:
        raise ValueError(f"filter must be [O, KH, KW, I], got shape {filt.shape}")
    bad = (filt != MAGNITUDE) & (filt != -MAGNITUDE)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"filter is not all +-{MAGNITUDE}: {int(filt[where])} at {where} "
                         f"({int(bad.sum())} such values)")
    return np.packbits(filt > 0, axis=-1, bitorder="little")


def unpack_filter(packed: np.ndarray, in_channels: int) -> np.ndarray:
    """The inverse of pack_filter: uint8 [O, KH, KW, ceil(I / 8)] -> int8 +-127 [O, KH, KW, I]."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 4:
        raise ValueError(f"packed filter must be uint8 [O, KH, KW, D], got {packed.dtype} "
                         f"{packed.shape}")
    if packed.shape[-1] != packed_depth(in_channels):
        raise ValueError(f"packed depth {packed.shape[-1]} does not fit {in_channels} input "
                         f"channels (expected {packed_depth(in_channels)})")
    bits = np.unpackbits(packed, axis=-1, bitorder="little")
    if bits[..., in_channels:].any():
        raise ValueError("padding bits of the packed filter must be 0")
    signs = bits[..., :in_channels].astype(np.int8)
    return (signs * 2 - 1) * np.int8(MAGNITUDE)


def im2col_filter(packed: np.ndarray, in_channels: int, depth: int) -> np.ndarray:
    """The filter of the im2col stem (firmware/kernels/onebit_conv2d_im2col.h): uint8
    [O, KH, KW, ceil(I / 8)] -> [O, 1, 1, depth / 8], bit (ky * KW + kx) * I + c the weight
    of tap (ky, kx), channel c, then 0 bits for the zero-point bytes up to depth."""
    signs = unpack_filter(packed, in_channels)
    flat = signs.reshape(signs.shape[0], 1, 1, -1)
    if depth % 8 or depth < flat.shape[3]:
        raise ValueError(f"depth {depth} is not a multiple of 8 holding {flat.shape[3]} taps")
    tail = np.full((*flat.shape[:3], depth - flat.shape[3]), -MAGNITUDE, np.int8)
    return pack_filter(np.concatenate([flat, tail], axis=3))


@dataclass(frozen=True)
class OnebitConvOptions:
    """The op's custom options: one field per key of the options table (onebit_conv2d.h)."""

    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    padding: str = "SAME"  # one of STRING_OPTIONS["padding"]
    activation: str = "NONE"  # one of STRING_OPTIONS["activation"]
    version: int = OPTIONS_VERSION

    def __post_init__(self) -> None:
        for key, (low, high) in INT_OPTIONS.items():
            value = getattr(self, key)
            # bool is an int to Python, not to FlexBuffers (nor to the C parser).
            if type(value) is not int or not low <= value <= high:
                if key == "version":
                    raise ValueError(f"version {value!r} is not known to this mcu-onebit (it reads "
                                     f"version {low} to {high})")
                raise ValueError(f"{key} must be an integer in [{low}, {high}], got {value!r}")
        for key, names in STRING_OPTIONS.items():
            value = getattr(self, key)
            if value not in names:
                raise ValueError(f"{key} must be one of {names}, got {value!r}")


def encode_options(stride_h: int, stride_w: int, dilation_h: int, dilation_w: int,
                   padding: str, activation: str) -> bytes:
    """Custom-options bytes of an ONEBIT_CONV2D operator, at the current version."""
    options = OnebitConvOptions(stride_h, stride_w, dilation_h, dilation_w, padding, activation)
    return bytes(flexbuffers.Dumps(dataclasses.asdict(options)))


class _OtherType:
    """A FlexBuffer value that is neither an integer nor a string: no option takes it."""

    def __repr__(self) -> str:
        return "a FlexBuffer value of another type"


def _read_entries(data: bytes) -> list[tuple[bytes, int | str | _OtherType]]:
    """The (key, value) entries of a FlexBuffer map, in stored order. A value is an int for
    a FlexBuffer integer (signed or unsigned, inline or indirect), a str for a string
    (bytes as latin-1: no byte lost, none matches a name by accident), _OtherType for any
    other type: what the C parser tells apart, without flexbuffers' conversions."""
    data = bytes(data)
    if not flexverify.verify(data):  # what the C parser checks first
        raise ValueError(f"{OP_NAME} options are not a valid FlexBuffer")
    try:
        root = flexbuffers.GetRoot(data)
        entries = root.AsMap if root.IsMap else None
        if entries is None or len(entries.Keys) != len(entries.Values):
            keys = None
        else:
            keys, values = entries.Keys, entries.Values
            read = [values[i].AsInt if values[i].IsInt
                    else bytes(values[i].AsStringBytes).decode("latin-1") if values[i].IsString
                    else _OtherType()
                    for i in range(len(values))]
            keys = [bytes(keys[i].AsKeyBytes) for i in range(len(keys))]
    except (IndexError, KeyError, OverflowError, TypeError, ValueError, struct.error) as exc:  # flexbuffers on garbage
        raise ValueError(f"{OP_NAME} options are not a FlexBuffer ({type(exc).__name__}: {exc})") from None
    if entries is None:
        raise ValueError(f"{OP_NAME} options must be a FlexBuffer map")
    if keys is None:
        raise ValueError(f"{OP_NAME} options map has a different number of keys and values")
    return list(zip(keys, read))


def decode_options(data: bytes) -> OnebitConvOptions:
    """Parse custom-options bytes; ValueError names what is wrong.

    The rules are the C parser's (onebit_conv2d_options.cc), from the same table: a map
    with every key of the table once and no other, integer keys holding a FlexBuffer
    integer within the key's range, string keys a FlexBuffer string among its names
    (OnebitConvOptions checks the values).
    """
    fields: dict[str, int | str | _OtherType] = {}
    for raw_key, value in _read_entries(data):
        key = raw_key.decode("ascii", "replace")
        if key not in INT_OPTIONS and key not in STRING_OPTIONS:
            raise ValueError(f"{OP_NAME} options have an unknown key {key!r}")
        if key in fields:
            raise ValueError(f"{OP_NAME} options give {key} twice")
        fields[key] = value
    missing = [key for key in (*INT_OPTIONS, *STRING_OPTIONS) if key not in fields]
    if missing:
        raise ValueError(f"{OP_NAME} options lack {', '.join(missing)}")
    try:
        return OnebitConvOptions(**fields)
    except ValueError as exc:
        raise ValueError(f"{OP_NAME} options: {exc}") from None


def same_padding(in_size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME: (out_size, padding before); any odd padding goes after."""
    out = (in_size + stride - 1) // stride
    return out, _pad_before(in_size, k, stride, dilation, out)


def valid_padding(in_size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's VALID: (out_size, 0); ValueError when the filter is larger than the input."""
    effective = (k - 1) * dilation + 1
    out = (in_size + stride - effective) // stride
    if out < 1:
        raise ValueError(f"VALID padding: filter extent {effective} exceeds input size {in_size}")
    return out, _pad_before(in_size, k, stride, dilation, out)


def _pad_before(in_size: int, k: int, stride: int, dilation: int, out: int) -> int:
    # ComputePaddingWithOffset: half of the total, rounded down.
    total = (out - 1) * stride + (k - 1) * dilation + 1 - in_size
    return max(total, 0) // 2


def compute_padding(padding: str, in_size: int, k: int, stride: int,
                    dilation: int) -> tuple[int, int]:
    """(out_size, pad_before) for "SAME" or "VALID", as TFLite's ComputePaddingHeightWidth."""
    if padding == "SAME":
        return same_padding(in_size, k, stride, dilation)
    if padding == "VALID":
        return valid_padding(in_size, k, stride, dilation)
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


@dataclass(frozen=True)
class OnebitConv2DParams:
    """ob_onebit_conv2d_params (firmware/kernels/onebit_conv2d.h), field for field.

    in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_h, stride_w, dilation_h,
    dilation_w, pad_top, pad_left, input_offset, output_offset, act_min, act_max,
    out_multiplier and out_shift (per output channel; the C struct points at arrays
    holding these values).
    """

    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    k_h: int
    k_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_left: int
    input_offset: int
    output_offset: int
    act_min: int
    act_max: int
    out_multiplier: tuple[int, ...]
    out_shift: tuple[int, ...]


_INT32_MAX = 2**31 - 1


def params_problem(p: OnebitConv2DParams) -> str | None:
    """What ob_conv2d_params_valid (onebit_conv2d.h) refuses in `p`, in words; None when the
    kernels take it. The same rules: every product their index and accumulator arithmetic
    forms fits int32 (docs/onebit_conv2d.md, "Limits")."""
    sides = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w", "stride_h", "stride_w",
             "dilation_h", "dilation_w")
    for name in sides:
        if not 1 <= getattr(p, name) <= DIM_MAX:
            return f"{name} {getattr(p, name)} is outside 1..{DIM_MAX}"
    for name in ("pad_top", "pad_left"):
        if not 0 <= getattr(p, name) <= DIM_MAX:
            return f"{name} {getattr(p, name)} is outside 0..{DIM_MAX}"
    taps = p.k_h * p.k_w * p.in_c
    if taps > TAPS_MAX:
        return f"{p.k_h}x{p.k_w}x{p.in_c} = {taps} taps per output exceed {TAPS_MAX}"
    for what, count in (("input", p.in_h * p.in_w * p.in_c), ("output", p.out_h * p.out_w * p.out_c),
                        ("filter", taps * p.out_c)):
        if count > _INT32_MAX:
            return f"the {what} has {count} elements, more than int32 counts"
    if not -127 <= p.input_offset <= 128 or not -128 <= p.output_offset <= 127:
        return f"zero points {-p.input_offset} and {p.output_offset} are not int8"
    if not -128 <= p.act_min <= p.act_max <= 127:
        return f"activation range [{p.act_min}, {p.act_max}] is not an int8 range"
    if len(p.out_multiplier) < p.out_c or len(p.out_shift) < p.out_c:
        return f"{len(p.out_multiplier)} multipliers for {p.out_c} output channels"
    for m, e in zip(p.out_multiplier[:p.out_c], p.out_shift[:p.out_c]):
        if m < 0 or not -31 <= e <= 30:
            return f"requantization ({m}, {e}) is outside QuantizeMultiplier's range"
    return None


def onebit_conv2d_params(input_shape: Sequence[int], filter_shape: Sequence[int],
                         options: OnebitConvOptions, quant: ConvQuant) -> OnebitConv2DParams:
    """Kernel parameters from the [1, H, W, I] input, the unpacked [O, KH, KW, I] filter
    shape, the options and the requantization (quant.conv_quant)."""
    if len(input_shape) != 4 or input_shape[0] != 1:
        raise ValueError(f"input must be [1, H, W, C], got {list(input_shape)}")
    _, in_h, in_w, in_c = (int(d) for d in input_shape)
    out_c, k_h, k_w, filter_in_c = (int(d) for d in filter_shape)
    if filter_in_c != in_c:
        raise ValueError(f"filter has {filter_in_c} input channels, input has {in_c} "
                         "(grouped convolution is not supported)")
    if len(quant.out_multiplier) != out_c:
        raise ValueError(f"{len(quant.out_multiplier)} multipliers for {out_c} output channels")
    out_h, pad_top = compute_padding(options.padding, in_h, k_h, options.stride_h,
                                     options.dilation_h)
    out_w, pad_left = compute_padding(options.padding, in_w, k_w, options.stride_w,
                                      options.dilation_w)
    params = OnebitConv2DParams(
        in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c, k_h=k_h,
        k_w=k_w, stride_h=options.stride_h, stride_w=options.stride_w,
        dilation_h=options.dilation_h, dilation_w=options.dilation_w, pad_top=pad_top,
        pad_left=pad_left, input_offset=quant.input_offset, output_offset=quant.output_offset,
        act_min=quant.act_min, act_max=quant.act_max, out_multiplier=quant.out_multiplier,
        out_shift=quant.out_shift)
    problem = params_problem(params)
    if problem is not None:
        raise ValueError(f"{OP_NAME} parameters outside the kernels' limits: {problem}")
    return params


def reference_onebit_conv2d(input_int8: np.ndarray, packed: np.ndarray,
                            bias: np.ndarray | None, params: OnebitConv2DParams) -> np.ndarray:
    """The op from its specification, in numpy: int8 [1, H, W, I] -> int8 [1, OH, OW, O].

    T = sum over in-image taps and channels of sign * (x + input_offset), sign = +-1 from
    the bits; acc = 127 * T + bias; requantize per channel; add output_offset; clamp.
    """
    p = params
    x = np.asarray(input_int8)
    if x.shape != (1, p.in_h, p.in_w, p.in_c):
        raise ValueError(f"input shape {x.shape} does not match params")
    signs = unpack_filter(packed, p.in_c).astype(np.int64) // MAGNITUDE  # [O, KH, KW, I]
    if signs.shape[:3] != (p.out_c, p.k_h, p.k_w):
        raise ValueError(f"filter shape {signs.shape} does not match params")
    # Zero after the offset is "no contribution", which is how out-of-image taps count.
    extent_h = (p.out_h - 1) * p.stride_h + (p.k_h - 1) * p.dilation_h + 1
    extent_w = (p.out_w - 1) * p.stride_w + (p.k_w - 1) * p.dilation_w + 1
    shifted = np.zeros((p.pad_top + max(extent_h, p.in_h), p.pad_left + max(extent_w, p.in_w),
                        p.in_c), np.int64)
    shifted[p.pad_top:p.pad_top + p.in_h, p.pad_left:p.pad_left + p.in_w] = (
        x[0].astype(np.int64) + p.input_offset)
    t = np.zeros((p.out_h, p.out_w, p.out_c), np.int64)
    for ky in range(p.k_h):
        y0 = ky * p.dilation_h
        for kx in range(p.k_w):
            x0 = kx * p.dilation_w
            window = shifted[y0:y0 + (p.out_h - 1) * p.stride_h + 1:p.stride_h,
                             x0:x0 + (p.out_w - 1) * p.stride_w + 1:p.stride_w]
            t += window @ signs[:, ky, kx, :].T
    acc = MAGNITUDE * t
    if bias is not None:
        acc += np.asarray(bias, np.int64)
    out = multiply_by_quantized_multiplier(acc, np.asarray(p.out_multiplier, np.int64),
                                           np.asarray(p.out_shift, np.int64))
    out = np.clip(out + p.output_offset, p.act_min, p.act_max)
    return out.astype(np.int8)[np.newaxis]
