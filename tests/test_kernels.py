"""The C kernels equal TFLite's int8 reference kernels, bit for bit.

The C sources in firmware/kernels/ are compiled once per session with the host compiler
and called through ctypes. The oracle is ai-edge-litert running a one-operator model
with the BUILTIN_REF resolver (tests/tflite_builder.py); the numpy reference of
ONEBIT_CONV2D and the Python parameter code are checked against the same oracle.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import re

import numpy as np
import pytest
from flatbuffers import flexbuffers
from hypothesis import given, settings
from hypothesis import strategies as st

from mcu_onebit.cheader import read_defines
from mcu_onebit.converters import onebit_conv2d as oc
from mcu_onebit.converters import quant
from mcu_onebit.converters.quant import TensorQuant
from mcu_onebit.errors import OnebitError
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

import tflite_builder as tb

KERNELS = firmware_dir() / "kernels"
SOURCES = ["ob_common.c", "onebit_conv2d.c", "add.c", "mul.c", "mean.c", "average_pool.c", "pad.c", "maximum.c"]

# Test-only exports of what C keeps in macros and static inline functions.
SHIM = """
#include "onebit_conv2d.h"
int32_t obt_packed_depth(int32_t cin) { return ONEBIT_PACKED_DEPTH(cin); }
int32_t obt_magnitude(void) { return ONEBIT_CONV2D_MAGNITUDE; }
int32_t obt_status_count(void) { return OB_STATUS_COUNT; }
int32_t obt_mbqm(int32_t x, int32_t m, int32_t s) {
  return ob_multiply_by_quantized_multiplier(x, m, s);
}
int32_t obt_params_valid(const ob_onebit_conv2d_params *p) { return ob_conv2d_params_valid(p); }
"""


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    build = tmp_path_factory.mktemp("kernels")
    shim = build / "shim.c"
    shim.write_text(SHIM)
    path = build_shared_library([KERNELS / s for s in SOURCES] + [shim], [KERNELS],
                                build / "libobkernels.so")
    library = ctypes.CDLL(str(path))
    library.ob_status_str.restype = ctypes.c_char_p
    for name in ("obt_packed_depth", "obt_magnitude", "obt_status_count", "obt_mbqm", "obt_params_valid"):
        getattr(library, name).restype = ctypes.c_int32
    return library


def _struct_type(params_class, name: str):
    """A ctypes struct laid out from a params dataclass: every int is int32_t, every tuple
    a `const int32_t *`. Wrong field order in the dataclass shows up as wrong results."""
    fields = []
    for field in dataclasses.fields(params_class):
        is_array = "tuple" in str(field.type)
        fields.append((field.name, ctypes.POINTER(ctypes.c_int32) if is_array else ctypes.c_int32))
    return type(name, (ctypes.Structure,), {"_fields_": fields})


ConvStruct = _struct_type(oc.OnebitConv2DParams, "ConvStruct")
AddStruct = _struct_type(quant.AddParams, "AddStruct")
MulStruct = _struct_type(quant.MulParams, "MulStruct")
MeanStruct = _struct_type(quant.MeanParams, "MeanStruct")
PoolStruct = _struct_type(quant.AveragePoolParams, "PoolStruct")
PadStruct = _struct_type(quant.PadParams, "PadStruct")
MaxStruct = _struct_type(quant.MaximumParams, "MaxStruct")


def _to_struct(params, struct_type):
    keep = []  # the arrays must outlive the call
    values = {}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        if isinstance(value, tuple):
            array = (ctypes.c_int32 * len(value))(*value)
            keep.append(array)
            value = ctypes.cast(array, ctypes.POINTER(ctypes.c_int32))
        values[field.name] = value
    return struct_type(**values), keep


def _ptr(array: np.ndarray, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def c_onebit_conv2d(lib, x, packed, bias, params: oc.OnebitConv2DParams) -> np.ndarray:
    struct, _keep = _to_struct(params, ConvStruct)
    x = np.ascontiguousarray(x, np.int8)
    packed = np.ascontiguousarray(packed, np.uint8)
    out = np.zeros((1, params.out_h, params.out_w, params.out_c), np.int8)
    bias_ptr = None
    if bias is not None:
        bias = np.ascontiguousarray(bias, np.int32)
        bias_ptr = _ptr(bias, ctypes.c_int32)
    status = lib.ob_onebit_conv2d(ctypes.byref(struct), _ptr(x, ctypes.c_int8),
                                  _ptr(packed, ctypes.c_uint8), bias_ptr,
                                  _ptr(out, ctypes.c_int8))
    assert status == 0, lib.ob_status_str(status)
    return out


def c_binary(lib, fn: str, params, struct_type, a, b, out_shape) -> np.ndarray:
    struct, _keep = _to_struct(params, struct_type)
    a = np.ascontiguousarray(a, np.int8)
    b = np.ascontiguousarray(b, np.int8)
    out = np.zeros(out_shape, np.int8)
    status = getattr(lib, fn)(ctypes.byref(struct), _ptr(a, ctypes.c_int8),
                              _ptr(b, ctypes.c_int8), _ptr(out, ctypes.c_int8))
    assert status == 0, lib.ob_status_str(status)
    return out


def c_mean(lib, params: quant.MeanParams, x) -> np.ndarray:
    struct, _keep = _to_struct(params, MeanStruct)
    x = np.ascontiguousarray(x, np.int8)
    out = np.zeros(params.channels, np.int8)
    status = lib.ob_mean(ctypes.byref(struct), _ptr(x, ctypes.c_int8), _ptr(out, ctypes.c_int8))
    assert status == 0, lib.ob_status_str(status)
    return out


def _f32(value: float) -> float:
    return float(np.float32(value))


def _int8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, shape, dtype=np.int8)


# --- (a) ONEBIT_CONV2D: C == numpy reference == TFLite CONV_2D on +-127 filters ---------


def _tflite_bias(bias, out_c):
    # litert's int8 CONV_2D requires a bias tensor; a zero bias is what our NULL means.
    return np.zeros(out_c, np.int32) if bias is None else bias


def _run_conv_case(lib, rng, *, in_shape, out_c, k, stride, dilation, padding, activation,
                   input_q, output_q, filter_scales, bias):
    filt = rng.choice(np.array([-127, 127], np.int8), size=(out_c, k[0], k[1], in_shape[3]))
    x = _int8(rng, in_shape)
    expected = tb.run_reference(
        tb.conv2d_model(in_shape, input_q, filt, filter_scales, _tflite_bias(bias, out_c),
                        output_q, stride, dilation, padding, activation), x)

    options = oc.OnebitConvOptions(stride[0], stride[1], dilation[0], dilation[1], padding,
                                   activation)
    conv_q = quant.conv_quant(TensorQuant(*input_q), filter_scales, TensorQuant(*output_q),
                              activation)
    params = oc.onebit_conv2d_params(in_shape, filt.shape, options, conv_q)
    packed = oc.pack_filter(filt)
    np.testing.assert_array_equal(oc.reference_onebit_conv2d(x, packed, bias, params), expected)
    np.testing.assert_array_equal(c_onebit_conv2d(lib, x, packed, bias, params), expected)
    return expected


CONV_GRID = [(k, s, p, c) for k in (1, 3) for s in (1, 2) for p in ("SAME", "VALID")
             for c in (1, 3, 5, 13, 37)]


@pytest.mark.parametrize("k,stride,padding,in_c", CONV_GRID)
def test_onebit_conv2d_matches_tflite(lib, k, stride, padding, in_c):
    rng = np.random.default_rng([k, stride, in_c, len(padding)])
    dilation = int(rng.choice([1, 2])) if k > 1 else 1
    extent = (k - 1) * dilation + 1
    h, w = (int(rng.integers(extent, extent + 8)) for _ in range(2))
    out_c = int(rng.choice([1, 3, 5, 8, 13, 37]))
    activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
    in_scale = _f32(10 ** rng.uniform(-3, 0))
    filter_scales = [_f32(s) for s in 10 ** rng.uniform(-4, -1, out_c)]
    # An output scale that keeps most results inside int8, so rounding is exercised.
    acc_std = 127 * 74 * math.sqrt(k * k * in_c)
    out_scale = _f32(in_scale * float(np.mean(filter_scales)) * acc_std / 60
                     * 10 ** rng.uniform(-0.5, 0.5))
    bias = (None if rng.random() < 0.25
            else rng.integers(-acc_std / 4, acc_std / 4, out_c).astype(np.int32))
    out = _run_conv_case(
        lib, rng, in_shape=(1, h, w, in_c), out_c=out_c, k=(k, k), stride=(stride, stride),
        dilation=(dilation, dilation), padding=padding, activation=activation,
        input_q=(in_scale, int(rng.integers(-128, 128))),
        output_q=(out_scale, int(rng.integers(-100, 100))), filter_scales=filter_scales,
        bias=bias)
    # Guard against a vacuous pass where everything saturates. (A fused ReLU may
    # legitimately clamp a whole small output, e.g. 1 channel with all-negative sums.)
    assert len(np.unique(out)) > 1 or out.size < 4 or activation != "NONE"


@pytest.mark.parametrize("input_q,filter_scale,output_q", [
    # input * filter / output = 1 - 2**-46: the mantissa rounds up to 2**31.
    ((1 + 2**-23, 0), 1 - 2**-23, (1.0, 0)),
    # ~1e-10 < 2**-32: TFLite flushes the multiplier to zero, every output is the zero point.
    ((1e-5, 3), 1e-5, (1.0, -7)),
    # ~1.37: a positive shift (acc is shifted left before the high multiply).
    ((1.0, 0), 0.5, (0.365, 0)),
], ids=["rounds-up-to-2^31", "flushed-to-zero", "positive-shift"])
def test_onebit_conv2d_requantization_edges(lib, input_q, filter_scale, output_q):
    rng = np.random.default_rng(7)
    in_shape = (1, 4, 4, 3)
    # Inputs within 1 of the zero point and a small bias keep many outputs off the clamps.
    filt = rng.choice(np.array([-127, 127], np.int8), size=(4, 1, 1, 3))
    x = (rng.integers(-1, 2, in_shape) + input_q[1]).astype(np.int8)
    bias = rng.integers(-60, 60, 4).astype(np.int32)
    expected = tb.run_reference(tb.conv2d_model(in_shape, input_q, filt, [filter_scale] * 4,
                                                bias, output_q, padding="VALID"), x)
    conv_q = quant.conv_quant(TensorQuant(*input_q), [filter_scale] * 4, TensorQuant(*output_q),
                              "NONE")
    params = oc.onebit_conv2d_params(in_shape, filt.shape, oc.OnebitConvOptions(padding="VALID"),
                                     conv_q)
    packed = oc.pack_filter(filt)
    np.testing.assert_array_equal(oc.reference_onebit_conv2d(x, packed, bias, params), expected)
    np.testing.assert_array_equal(c_onebit_conv2d(lib, x, packed, bias, params), expected)


def test_onebit_conv2d_rejects_bad_params(lib):
    filt = np.full((2, 1, 1, 3), 127, np.int8)
    params = oc.onebit_conv2d_params((1, 2, 2, 3), filt.shape, oc.OnebitConvOptions(),
                                     quant.conv_quant(TensorQuant(1.0, 0), [1.0, 1.0],
                                                      TensorQuant(1.0, 0), "NONE"))
    bad = dataclasses.replace(params, stride_h=0)
    struct, _keep = _to_struct(bad, ConvStruct)
    x = np.zeros((1, 2, 2, 3), np.int8)
    out = np.zeros((1, 2, 2, 2), np.int8)
    status = lib.ob_onebit_conv2d(ctypes.byref(struct), _ptr(x, ctypes.c_int8),
                                  _ptr(oc.pack_filter(filt), ctypes.c_uint8), None,
                                  _ptr(out, ctypes.c_int8))
    assert lib.ob_status_str(status) == b"OB_ERR_BAD_PARAMS"


_EDGES = [-2**31, -129, -128, -127, -1, 0, 1, 2, 127, 128, 129, 255, oc.DIM_MAX, oc.DIM_MAX + 1,
          oc.TAPS_MAX, oc.TAPS_MAX + 1, 2**16, 2**30, 2**31 - 1]


@st.composite
def _conv_params(draw):
    """A valid small parameter set with some fields replaced by edge values."""
    filt_shape = (3, 3, 3, 5)
    params = oc.onebit_conv2d_params((1, 6, 6, 5), filt_shape, oc.OnebitConvOptions(2, 2, 1, 1, "SAME", "RELU"),
                                     quant.conv_quant(TensorQuant(0.5, 3), [0.01, 0.02, 0.03],
                                                      TensorQuant(0.25, -2), "RELU"))
    changes = {}
    for field in draw(st.sets(st.sampled_from([f.name for f in dataclasses.fields(params)]), max_size=3)):
        if field in ("out_multiplier", "out_shift"):
            changes[field] = tuple(draw(st.sampled_from([-2**31, -1, 0, 1 << 30, -32, -31, 30, 31, 2**31 - 1]))
                                   for _ in range(params.out_c))
        else:
            changes[field] = draw(st.sampled_from(_EDGES))
    if "out_c" in changes and changes["out_c"] > params.out_c:  # the arrays C reads must exist
        changes.update(out_multiplier=(1 << 30,) * min(changes["out_c"], 64), out_shift=(0,) * min(changes["out_c"], 64))
    return dataclasses.replace(params, **changes)


@settings(max_examples=300, deadline=None)
@given(_conv_params())
def test_c_and_python_refuse_the_same_kernel_params(lib, params):
    """ob_conv2d_params_valid and params_problem: the same limits (docs/onebit_conv2d.md)."""
    if params.out_c > len(params.out_multiplier):
        return  # C would read past the arrays: not a question the check answers
    struct, _keep = _to_struct(params, ConvStruct)
    assert bool(lib.obt_params_valid(ctypes.byref(struct))) == (oc.params_problem(params) is None), params


def test_params_limits_keep_the_accumulator_in_int32():
    # |x - zero point| <= 255 and |w| <= 128 for both conv kernels.
    assert 255 * 128 * oc.TAPS_MAX <= 2**31 - 1 < 255 * 128 * (oc.TAPS_MAX + 1)
    # The furthest tap (out - 1) * stride + (k - 1) * dilation, every side at the limit.
    assert 2 * (oc.DIM_MAX - 1) * oc.DIM_MAX <= 2**31 - 1


# --- (b) packing and options -------------------------------------------------------


def test_pack_bit_layout_worked_example():
    # From the spec: 10 input channels, +127 at channels 0, 3 and 9, -127 elsewhere.
    # Byte 0 holds channels 0..7 LSB first: bits 0 and 3 -> 0b00001001. Byte 1 holds
    # channels 8, 9 in bits 0, 1, padding bits 0 -> 0b00000010.
    filt = np.full((1, 1, 1, 10), -127, np.int8)
    filt[..., [0, 3, 9]] = 127
    np.testing.assert_array_equal(oc.pack_filter(filt), np.array([[[[0b1001, 0b10]]]], np.uint8))


@pytest.mark.parametrize("in_c", [1, 7, 8, 9, 13, 37, 64])
def test_pack_unpack_round_trip(in_c):
    rng = np.random.default_rng(in_c)
    filt = rng.choice(np.array([-127, 127], np.int8), size=(3, 2, 3, in_c))
    packed = oc.pack_filter(filt)
    assert packed.dtype == np.uint8 and packed.shape == (3, 2, 3, (in_c + 7) // 8)
    np.testing.assert_array_equal(oc.unpack_filter(packed, in_c), filt)


@pytest.mark.parametrize("value", [0, 1, 126, -126, -128])
def test_pack_rejects_values_other_than_pm127(value):
    filt = np.full((2, 1, 1, 4), 127, np.int8)
    filt[1, 0, 0, 2] = value
    with pytest.raises(ValueError, match=r"\(1, 0, 0, 2\)"):
        oc.pack_filter(filt)


def test_unpack_rejects_set_padding_bits_and_wrong_depth():
    with pytest.raises(ValueError, match="padding bits"):
        oc.unpack_filter(np.full((1, 1, 1, 1), 0b100000, np.uint8), 5)
    with pytest.raises(ValueError, match="depth"):
        oc.unpack_filter(np.zeros((1, 1, 1, 2), np.uint8), 5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("activation", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_options_round_trip(padding, activation):
    data = oc.encode_options(2, 1, 1, 3, padding, activation)
    assert oc.decode_options(data) == oc.OnebitConvOptions(2, 1, 1, 3, padding, activation)
    assert set(flexbuffers.Loads(data)) == {*oc.INT_OPTIONS, *oc.STRING_OPTIONS}
    assert flexbuffers.Loads(data)["version"] == read_defines(oc.HEADER)["ONEBIT_CONV2D_OPTIONS_VERSION"]


def test_options_reject_unknown_version_and_missing_keys():
    fields = flexbuffers.Loads(oc.encode_options(1, 1, 1, 1, "SAME", "NONE"))
    with pytest.raises(ValueError, match="version 2 is not known"):
        oc.decode_options(flexbuffers.Dumps({**fields, "version": 2}))
    del fields["padding"]
    with pytest.raises(ValueError, match="lack padding"):
        oc.decode_options(flexbuffers.Dumps(fields))
    with pytest.raises(ValueError, match="padding must be one of"):
        oc.encode_options(1, 1, 1, 1, "FULL", "NONE")


@pytest.mark.parametrize("in_size,k,stride,dilation", [
    (5, 3, 1, 1), (5, 3, 2, 1), (6, 3, 2, 1), (7, 3, 2, 2), (4, 1, 2, 1), (6, 4, 3, 1), (1, 3, 1, 1)])
def test_padding_matches_tflite_formula(in_size, k, stride, dilation):
    # tf.nn semantics: SAME out = ceil(in / s), total padding split with the extra after.
    effective = (k - 1) * dilation + 1
    out = -(-in_size // stride)
    total = max((out - 1) * stride + effective - in_size, 0)
    assert oc.same_padding(in_size, k, stride, dilation) == (out, total // 2)
    if in_size >= effective:
        assert oc.valid_padding(in_size, k, stride, dilation) == (
            (in_size - effective) // stride + 1, 0)
    else:
        with pytest.raises(ValueError):
            oc.valid_padding(in_size, k, stride, dilation)


# --- (c) C and Python agree on the spec's constants and structs --------------------


def test_c_and_python_constants_agree(lib):
    for cin in range(1, 100):
        assert lib.obt_packed_depth(cin) == oc.packed_depth(cin)
        assert oc.pack_filter(np.full((1, 1, 1, cin), 127, np.int8)).shape[-1] == oc.packed_depth(cin)
    assert lib.obt_magnitude() == oc.MAGNITUDE


def test_every_status_has_a_name(lib):
    names = [lib.ob_status_str(s).decode() for s in range(lib.obt_status_count())]
    assert names[0] == "OB_OK"
    assert all(n.startswith("OB_") and n != "OB_STATUS_UNKNOWN" for n in names)
    assert len(set(names)) == len(names)
    assert lib.ob_status_str(lib.obt_status_count()) == b"OB_STATUS_UNKNOWN"


def _c_struct_fields(header: str, struct_name: str) -> list[str]:
    text = (KERNELS / header).read_text()
    body = re.search(r"typedef struct \{(.*?)\}\s*" + struct_name + ";", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    names = []
    for declaration in body.split(";"):
        declaration = declaration.strip()
        if declaration:
            _, names_part = re.match(r"((?:const\s+)?\w+\s*\**)\s*(.*)", declaration).groups()
            names += [n.strip().lstrip("*") for n in names_part.split(",")]
    return names


@pytest.mark.parametrize("header,struct_name,params_class", [
    ("onebit_conv2d.h", "ob_onebit_conv2d_params", oc.OnebitConv2DParams),
    ("add.h", "ob_add_params", quant.AddParams),
    ("mul.h", "ob_mul_params", quant.MulParams),
    ("mean.h", "ob_mean_params", quant.MeanParams),
    ("average_pool.h", "ob_average_pool_params", quant.AveragePoolParams),
    ("pad.h", "ob_pad_params", quant.PadParams),
    ("maximum.h", "ob_maximum_params", quant.MaximumParams),
])
def test_params_dataclasses_match_c_structs(header, struct_name, params_class):
    assert _c_struct_fields(header, struct_name) == [f.name for f in dataclasses.fields(params_class)]


# --- (d) ADD, MUL, MEAN: C == TFLite ----------------------------------------------

BROADCASTS = ["same-shape", "const-same-shape", "const-[C]", "const-[1,1,1,C]", "const-[1]"]


def _binary_case(rng, broadcast):
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.choice([1, 3, 8, 13])))
    shape2 = {"same-shape": shape, "const-same-shape": shape, "const-[C]": (shape[3],),
              "const-[1,1,1,C]": (1, 1, 1, shape[3]), "const-[1]": (1,)}[broadcast]
    def q():
        return _f32(10 ** rng.uniform(-3, 0)), int(rng.integers(-128, 128))
    activation = str(rng.choice(["NONE", "RELU", "RELU6"]))
    return shape, shape2, q(), q(), activation


def _binary_inputs(rng, broadcast, shape, shape2):
    x1 = _int8(rng, shape)
    x2 = _int8(rng, shape2)
    const2 = None if broadcast == "same-shape" else x2
    return x1, x2, const2


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("broadcast", BROADCASTS)
def test_add_matches_tflite(lib, broadcast, seed):
    rng = np.random.default_rng([1, seed, len(broadcast)])
    shape, shape2, q1, q2, activation = _binary_case(rng, broadcast)
    # ADD's output range is about the sum of the input ranges.
    out_q = (_f32((q1[0] + q2[0]) * 10 ** rng.uniform(-0.3, 0.5)), int(rng.integers(-128, 128)))
    x1, x2, const2 = _binary_inputs(rng, broadcast, shape, shape2)
    model = tb.add_model(shape, q1, shape2, q2, shape, out_q, activation, const2)
    expected = tb.run_reference(model, x1) if const2 is not None else tb.run_reference(model, x1, x2)
    params = quant.add_params(TensorQuant(*q1), TensorQuant(*q2), TensorQuant(*out_q), activation,
                              shape, shape2, shape)
    np.testing.assert_array_equal(c_binary(lib, "ob_add", params, AddStruct, x1, x2, shape),
                                  expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("broadcast", BROADCASTS)
def test_mul_matches_tflite(lib, broadcast, seed):
    rng = np.random.default_rng([2, seed, len(broadcast)])
    shape, shape2, q1, q2, activation = _binary_case(rng, broadcast)
    # MUL's output range is about the product of the input ranges.
    out_q = (_f32(q1[0] * q2[0] * 128 * 10 ** rng.uniform(-0.5, 0.5)), int(rng.integers(-128, 128)))
    x1, x2, const2 = _binary_inputs(rng, broadcast, shape, shape2)
    model = tb.mul_model(shape, q1, shape2, q2, shape, out_q, activation, const2)
    expected = tb.run_reference(model, x1) if const2 is not None else tb.run_reference(model, x1, x2)
    params = quant.mul_params(TensorQuant(*q1), TensorQuant(*q2), TensorQuant(*out_q), activation,
                              shape, shape2, shape)
    np.testing.assert_array_equal(c_binary(lib, "ob_mul", params, MulStruct, x1, x2, shape),
                                  expected)


def _all_int8_pairs():
    values = np.arange(-128, 128, dtype=np.int8)
    shape = (1, 256, 256, 1)
    return np.repeat(values, 256).reshape(shape), np.tile(values, 256).reshape(shape), shape


def test_mul_multiplier_is_computed_in_float32(lib):
    """TFLite's MUL computes input1_scale * input2_scale / output_scale in float32.

    Find scales where the same expression in double gives a multiplier that changes some
    output, then check every int8 pair against TFLite: only the float32 reading passes.
    """
    rng = np.random.default_rng(5)
    products = np.arange(-128, 128).repeat(256) * np.tile(np.arange(-128, 128), 256)
    for _ in range(5000):
        s1, s2 = (_f32(10 ** rng.uniform(-3, 0)) for _ in range(2))
        so = _f32(s1 * s2 * 128 * 10 ** rng.uniform(-0.5, 0.5))
        params = quant.mul_params(TensorQuant(s1, 0), TensorQuant(s2, 0), TensorQuant(so, 0),
                                  "NONE", (1,), (1,), (1,))
        in_double = quant.quantize_multiplier(s1 * s2 / so)
        if in_double == (params.output_multiplier, params.output_shift):
            continue
        as_float = quant.multiply_by_quantized_multiplier(products, params.output_multiplier,
                                                          params.output_shift)
        as_double = quant.multiply_by_quantized_multiplier(products, *in_double)
        if (np.clip(as_float, -128, 127) != np.clip(as_double, -128, 127)).any():
            break
    else:
        pytest.fail("no scales found where float32 and double multipliers differ")
    x1, x2, shape = _all_int8_pairs()
    expected = tb.run_reference(tb.mul_model(shape, (s1, 0), shape, (s2, 0), shape, (so, 0)),
                                x1, x2)
    params = quant.mul_params(TensorQuant(s1, 0), TensorQuant(s2, 0), TensorQuant(so, 0), "NONE",
                              shape, shape, shape)
    np.testing.assert_array_equal(c_binary(lib, "ob_mul", params, MulStruct, x1, x2, shape),
                                  expected)


@pytest.mark.parametrize("seed", range(3))
def test_add_every_int8_pair(lib, seed):
    rng = np.random.default_rng([4, seed])
    q1, q2 = ((_f32(10 ** rng.uniform(-3, 0)), int(rng.integers(-128, 128))) for _ in range(2))
    out_q = (_f32((q1[0] + q2[0]) * 10 ** rng.uniform(-0.3, 0.3)), int(rng.integers(-128, 128)))
    x1, x2, shape = _all_int8_pairs()
    expected = tb.run_reference(tb.add_model(shape, q1, shape, q2, shape, out_q), x1, x2)
    params = quant.add_params(TensorQuant(*q1), TensorQuant(*q2), TensorQuant(*out_q), "NONE",
                              shape, shape, shape)
    np.testing.assert_array_equal(c_binary(lib, "ob_add", params, AddStruct, x1, x2, shape),
                                  expected)


def test_broadcast_along_inner_axes_is_refused():
    with pytest.raises(OnebitError, match="inner axes"):
        quant.broadcast_period((1, 4, 1, 3), (1, 4, 5, 3))


@pytest.mark.parametrize("keep_dims", [True, False])
@pytest.mark.parametrize("axes", [(1, 2), (2, 1), (-3, -2)])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 5), (7, 9), (16, 16), (32, 33)])
def test_mean_matches_tflite(lib, hw, axes, keep_dims):
    rng = np.random.default_rng([3, hw[0], hw[1], axes[0] % 4, keep_dims])
    shape = (1, hw[0], hw[1], int(rng.choice([1, 3, 13, 37])))
    in_q = (_f32(10 ** rng.uniform(-3, 0)), int(rng.integers(-128, 128)))
    # Same quantization in and out half of the time: TF's converter emits that for
    # global average pooling, and older TFLite took a separate path for it.
    same = rng.random() < 0.5
    out_q = in_q if same else (_f32(in_q[0] * 10 ** rng.uniform(-1, 0.5)), int(rng.integers(-128, 128)))
    x = _int8(rng, shape)
    expected = tb.run_reference(tb.mean_model(shape, in_q, out_q, axes, keep_dims), x)
    params = quant.mean_params(TensorQuant(*in_q), TensorQuant(*out_q), shape, axes)
    np.testing.assert_array_equal(c_mean(lib, params, x), expected.reshape(-1))


# --- (e) QuantizeMultiplier edge cases ---------------------------------------------

# Expected values worked by hand from TFLite's QuantizeMultiplier: frexp, then
# round(q * 2**31) half away from zero, 2**31 -> 2**30 with shift + 1, shift < -31 -> 0.
@pytest.mark.parametrize("real,expected", [
    (0.0, (0, 0)),
    (0.5, (2**30, 0)),
    (1.0, (2**30, 1)),
    (0.75, (3 * 2**29, 0)),
    (1 - 2**-40, (2**30, 1)),  # rounds up to 2**31
    ((2**30 + 0.5) / 2**31, (2**30 + 1, 0)),  # a tie: away from zero, not to even
    ((2**30 + 1.5) / 2**31, (2**30 + 2, 0)),
    (2**-31, (2**30, -30)),
    (2**-32, (2**30, -31)),
    ((1 - 2**-40) * 2**-32, (2**30, -31)),  # rounds up out of the flush range
    (2**-33, (0, 0)),  # flushed
    (1e-12, (0, 0)),
    (1000.0, (round(1000 / 1024 * 2**31), 10)),
])
def test_quantize_multiplier_edges(real, expected):
    assert quant.quantize_multiplier(real) == expected


def test_quantize_multiplier_smaller_than_one_exp_range():
    assert quant.quantize_multiplier_smaller_than_one_exp(0.25) == (2**30, -1)
    for bad in (0.0, 1.0, 1 - 2**-40, -0.5):  # 1 - 2**-40 rounds to a shift of 1
        with pytest.raises(ValueError):
            quant.quantize_multiplier_smaller_than_one_exp(bad)


def test_c_fixed_point_helper_matches_numpy_twin(lib):
    rng = np.random.default_rng(11)
    xs = list(rng.integers(-2**31, 2**31, 300)) + [0, 1, -1, 2**31 - 1, -2**31, 2**15, -2**15 - 1]
    for multiplier, shift in [(2**30, 0), (2**31 - 1, -31), (1518500250, -5), (2**30, 1),
                              (1932735283, 4), (2**30 + 1, -1), (1, 0)]:
        # Large x with a positive shift wraps in int32, as in TFLite; both sides emulate it.
        want = quant.multiply_by_quantized_multiplier(np.array(xs), multiplier, shift)
        got = [lib.obt_mbqm(int(x), multiplier, shift) for x in xs]
        assert got == list(want), (multiplier, shift)
    # x * 0.5 * 2**-1 and x * 0.5 * 2**-2 land on halves, which round away from zero.
    assert lib.obt_mbqm(2, 2**30, -1) == 1 and lib.obt_mbqm(-2, 2**30, -1) == -1
    assert lib.obt_mbqm(4, 2**30, -2) == 1 and lib.obt_mbqm(-4, 2**30, -2) == -1


# --- AVERAGE_POOL_2D and PAD (the WRN shortcut): C == TFLite ---------------------------

def c_unary(lib, fn: str, params, struct_type, x, out_size: int) -> np.ndarray:
    struct, _keep = _to_struct(params, struct_type)
    x = np.ascontiguousarray(x, np.int8)
    out = np.zeros(out_size, np.int8)
    status = getattr(lib, fn)(ctypes.byref(struct), _ptr(x, ctypes.c_int8), _ptr(out, ctypes.c_int8))
    assert status == 0, lib.ob_status_str(status)
    return out


@pytest.mark.parametrize("seed", range(24))
def test_average_pool_matches_tflite(lib, seed):
    rng = np.random.default_rng([5, seed])
    shape = (1, int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.choice([1, 3, 13, 16])))
    filter_hw = (int(rng.choice([1, 2, 3])), int(rng.choice([1, 2, 3])))
    stride_hw = (int(rng.choice([1, 2])), int(rng.choice([1, 2])))
    padding = str(rng.choice(["SAME", "VALID"]))
    if padding == "VALID" and (shape[1] < filter_hw[0] or shape[2] < filter_hw[1]):
        padding = "SAME"
    activation = str(rng.choice(["NONE", "RELU"]))
    q = (_f32(10 ** rng.uniform(-3, 0)), int(rng.integers(-128, 128)))
    x = _int8(rng, shape)
    expected = tb.run_reference(tb.average_pool_model(shape, q, filter_hw, stride_hw, padding, activation), x)
    out_h, pad_top = oc.compute_padding(padding, shape[1], filter_hw[0], stride_hw[0], 1)
    out_w, pad_left = oc.compute_padding(padding, shape[2], filter_hw[1], stride_hw[1], 1)
    params = quant.average_pool_params(TensorQuant(*q), TensorQuant(*q), shape, expected.shape, filter_hw,
                                       stride_hw, (pad_top, pad_left), activation)
    assert (params.out_h, params.out_w) == (out_h, out_w)
    np.testing.assert_array_equal(c_unary(lib, "ob_average_pool", params, PoolStruct, x, expected.size),
                                  expected.reshape(-1))


@pytest.mark.parametrize("seed", range(12))
def test_pad_matches_tflite(lib, seed):
    rng = np.random.default_rng([6, seed])
    shape = (1, int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.choice([1, 3, 16])))
    paddings = np.zeros((4, 2), np.int32)
    paddings[1:] = rng.integers(0, 4, (3, 2))
    q = (_f32(10 ** rng.uniform(-3, 0)), int(rng.integers(-128, 128)))
    x = _int8(rng, shape)
    expected = tb.run_reference(tb.pad_model(shape, q, paddings), x)
    params = quant.pad_params(TensorQuant(*q), TensorQuant(*q), shape, paddings)
    np.testing.assert_array_equal(c_unary(lib, "ob_pad", params, PadStruct, x, expected.size), expected.reshape(-1))


@pytest.mark.parametrize("seed", range(8))
def test_maximum_matches_tflite(lib, seed):
    """The shifted ReLU of McDonnell 2019: MAXIMUM with a scalar (or per-channel) constant."""
    rng = np.random.default_rng([7, seed])
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.choice([1, 3, 16])))
    constant = _int8(rng, (1,) if seed % 2 else (shape[3],))
    q = (_f32(10 ** rng.uniform(-3, 0)), int(rng.integers(-128, 128)))
    x = _int8(rng, shape)
    expected = tb.run_reference(tb.maximum_model(shape, q, constant), x)
    params = quant.maximum_params(TensorQuant(*q), TensorQuant(*q), TensorQuant(*q), shape, constant.shape, shape)
    np.testing.assert_array_equal(
        c_binary(lib, "ob_maximum", params, MaxStruct, x, constant, expected.shape), expected)
