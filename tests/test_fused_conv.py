"""The fused ONEBIT_CONV2D (firmware/kernels/onebit_conv2d_fused.c) equals the unfused ops
it replaces, bit for bit: MUL and/or ADD by per-channel constants over the whole input
(fused as row-sized ops or as their channel table),
the conv, and the residual ADD over the whole output, each by the same C kernels. On
the host, with the portable reference and with every kernel variant (the DSP variant
emulates USADA8 in C), over random shapes, strides, dilations, paddings, zero points and
blocks of output rows per kernel call; and a whole fused graph against the twin on
qemu-m4 (tests/test_convert_equivalence.py covers the host build of whole graphs)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mcu_onebit import bench
from mcu_onebit.converters import onebit_conv2d as oc
from mcu_onebit.converters import quant
from mcu_onebit.converters.fusion import FusedConv, fused_scratch_bytes
from mcu_onebit.converters.quant import TensorQuant
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

import test_kernels as tk  # its ctypes layouts of the params structs

KERNELS = firmware_dir() / "kernels"
VARIANTS = ["reference"] + sorted(p.parent.name for p in KERNELS.glob("*/onebit_conv2d.c"))


ConvStruct, AddStruct, MulStruct = tk.ConvStruct, tk.AddStruct, tk.MulStruct
P8 = ctypes.POINTER(ctypes.c_int8)


class FusedStruct(ctypes.Structure):
    _fields_ = [("conv", ctypes.POINTER(ConvStruct)), ("in_mul", ctypes.POINTER(MulStruct)), ("mul_constant", P8),
                ("mul_constant_first", ctypes.c_int32), ("in_add", ctypes.POINTER(AddStruct)),
                ("add_constant", P8), ("add_constant_first", ctypes.c_int32),
                ("out_add", ctypes.POINTER(AddStruct)), ("residual_first", ctypes.c_int32),
                ("rows_per_call", ctypes.c_int32), ("in_table", P8)]


@pytest.fixture(scope="module", params=VARIANTS)
def lib(request, tmp_path_factory):
    sources = [p for p in KERNELS.glob("*.c") if p.name != "onebit_conv2d.c"]
    sources.append(bench.variant_source(request.param))
    build = tmp_path_factory.mktemp(request.param)
    return ctypes.CDLL(str(build_shared_library(sources, [KERNELS], build / "libfused.so")))


def _c(params, struct_type, keep: list):
    """params as struct_type, kept alive (with its arrays) in keep while C uses it."""
    struct, arrays = tk._to_struct(params, struct_type)
    keep += [struct, arrays]
    return struct


def _ptr(array: np.ndarray):
    return array.ctypes.data_as(P8)


def _q(rng) -> TensorQuant:
    return TensorQuant(float(np.float32(10 ** rng.uniform(-2, 0))), int(rng.integers(-128, 128)))


def _case(seed: int):
    """A random conv with a random batch norm before it (MUL, ADD or both, constant first
    or second) and, for stride 1, a residual ADD after it."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 3]))
    stride = int(rng.choice([1, 2]))
    dilation = int(rng.choice([1, 2])) if k == 3 and rng.random() < 0.3 else 1
    padding = str(rng.choice(["SAME", "VALID"]))
    extent = (k - 1) * dilation + 1
    h, w = (int(rng.integers(extent, extent + 9)) for _ in range(2))
    in_c = int(rng.choice([8, 16, 24, 5, 13]))
    out_c = int(rng.choice([8, 3, 16, 13])) if not (stride == 1 and padding == "SAME") else in_c
    conv = bench.random_case(rng, (1, h, w, in_c), out_c, k, stride, padding,
                             str(rng.choice(["NONE", "RELU"])), dilation, with_bias=rng.random() < 0.8)
    transform = str(rng.choice(["MUL", "ADD", "MUL+ADD", "none"]))
    residual = stride == 1 and padding == "SAME" and rng.random() < 0.7
    return rng, conv, transform, residual


@pytest.mark.parametrize("seed", range(24))
def test_fused_conv_equals_the_ops_it_replaces(lib, seed):
    rng, conv, transform, with_residual = _case(seed)
    if transform == "none" and not with_residual:
        transform = "MUL"
    p = conv.params
    in_shape, out_shape = (1, p.in_h, p.in_w, p.in_c), (1, p.out_h, p.out_w, p.out_c)
    row_in, row_out = [1, 1, p.in_w, p.in_c], [1, 1, p.out_w, p.out_c]
    keep: list = []
    x = conv.x
    conv_q = TensorQuant(float(np.float32(10 ** rng.uniform(-2, 0))), -p.input_offset)
    fused = FusedStruct(conv=ctypes.pointer(_c(p, ConvStruct, keep)), rows_per_call=int(rng.integers(1, p.out_h + 2)))
    expected = x.copy()
    # The batch norm as a channel table (its values from the converter's arithmetic,
    # converters/channel_table.py), or as row-sized MUL and ADD.
    use_table = transform != "none" and bool(rng.random() < 0.5)
    grid = np.tile(np.arange(256, dtype=np.uint8).view(np.int8), (p.in_c, 1))  # grid[c, u]: channel c, input byte u
    # The whole-tensor ops of the unfused graph, by the same C kernels.
    q_x = _q(rng)
    for kind in transform.split("+") if transform != "none" else []:
        constant = rng.integers(-128, 128, p.in_c, dtype=np.int8)
        first = bool(rng.random() < 0.5)
        q_c = _q(rng)
        q_out = conv_q if kind == transform.split("+")[-1] else _q(rng)
        make, struct, fn = {"MUL": (quant.mul_params, MulStruct, "ob_mul"), "ADD": (quant.add_params, AddStruct, "ob_add")}[kind]
        activation = str(rng.choice(["NONE", "RELU"]))
        operands = [(q_c, [p.in_c]), (q_x, None)] if first else [(q_x, None), (q_c, [p.in_c])]
        whole = make(*(q for q, _ in operands), q_out, activation, *(s or list(in_shape) for _, s in operands), list(in_shape))
        row = make(*(q for q, _ in operands), q_out, activation, *(s or row_in for _, s in operands), row_in)
        out = np.zeros(in_shape, np.int8)
        args = (_ptr(constant), _ptr(expected)) if first else (_ptr(expected), _ptr(constant))
        assert getattr(lib, fn)(ctypes.byref(_c(whole, struct, keep)), *args, _ptr(out)) == 0
        expected = out
        keep.append(constant)
        column = np.broadcast_to(constant.reshape(-1, 1), grid.shape)
        grid = {"MUL": quant.mul_values, "ADD": quant.add_values}[kind](whole, *((column, grid) if first else (grid, column)))
        tag = "mul" if kind == "MUL" else "add"
        if not use_table:
            setattr(fused, f"in_{tag}", ctypes.pointer(_c(row, struct, keep)))
            setattr(fused, f"{tag}_constant", _ptr(constant))
            setattr(fused, f"{tag}_constant_first", int(first))
        q_x = q_out
    if use_table:
        table = np.ascontiguousarray(grid, np.int8).ravel()
        keep.append(table)
        fused.in_table = _ptr(table)
    packed = np.ascontiguousarray(oc.pack_filter(conv.filter))
    bias = None if conv.bias is None else np.ascontiguousarray(conv.bias, np.int32)
    bias_ptr = None if bias is None else bias.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
    conv_out = np.zeros(out_shape, np.int8)
    assert lib.ob_onebit_conv2d(ctypes.byref(_c(p, ConvStruct, keep)), _ptr(expected), packed.ctypes.data_as(
        ctypes.POINTER(ctypes.c_uint8)), bias_ptr, _ptr(conv_out)) == 0
    expected = conv_out
    residual = None
    if with_residual:
        residual = rng.integers(-128, 128, out_shape, dtype=np.int8)
        first = bool(rng.random() < 0.5)
        q_r, q_s, q_out = _q(rng), _q(rng), _q(rng)
        qs = (q_r, q_s) if first else (q_s, q_r)
        whole = quant.add_params(*qs, q_out, "NONE", list(out_shape), list(out_shape), list(out_shape))
        row = quant.add_params(*qs, q_out, "NONE", row_out, row_out, row_out)
        out = np.zeros(out_shape, np.int8)
        args = (_ptr(residual), _ptr(conv_out)) if first else (_ptr(conv_out), _ptr(residual))
        assert lib.ob_add(ctypes.byref(_c(whole, AddStruct, keep)), *args, _ptr(out)) == 0
        expected = out
        fused.out_add = ctypes.pointer(_c(row, AddStruct, keep))
        fused.residual_first = int(first)
        # The conv's output may be written over the residual (the static runtime's plan).
        in_place = bool(rng.random() < 0.5)
    scratch_size = lib.ob_onebit_conv2d_fused_scratch_bytes(ctypes.byref(fused))
    f = FusedConv(0, 0 if "MUL" in transform else None, 0 if "ADD" in transform else None,
                  0 if with_residual else None, 0, None, 0, fused.rows_per_call, use_table)
    assert scratch_size <= _python_scratch(p, f, conv.filter.shape)  # what the memory plan reserves
    scratch = (ctypes.c_uint32 * (scratch_size // 4 + 1))()
    output = residual if with_residual and in_place else np.zeros(out_shape, np.int8)
    status = lib.ob_onebit_conv2d_fused(ctypes.byref(fused), _ptr(x), packed.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                                        bias_ptr, None if residual is None else _ptr(residual), _ptr(output), scratch)
    assert status == 0
    np.testing.assert_array_equal(output, expected)


def _python_scratch(p, f: FusedConv, filter_shape) -> int:
    """fusion.fused_scratch_bytes, from the parameters instead of a graph."""
    class Tensor:
        def __init__(self, shape):
            self.shape = shape

    class Op:
        inputs, outputs = (0, 1), (2,)
        customOptions = list(oc.encode_options(p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                                               "SAME" if p.pad_top or p.pad_left else "VALID", "NONE"))

    class Graph:
        tensors = [Tensor((1, p.in_h, p.in_w, p.in_c)), Tensor((*filter_shape[:3], -(-filter_shape[3] // 8))),
                   Tensor((1, p.out_h, p.out_w, p.out_c))]
        operators = [Op()]

    class Model:
        subgraphs = [Graph()]

    return fused_scratch_bytes(Model(), f)


def test_bad_parameters_are_refused(lib):
    rng, conv, _, _ = _case(0)
    keep: list = []
    fused = FusedStruct(conv=ctypes.pointer(_c(conv.params, ConvStruct, keep)), rows_per_call=0)
    out = np.zeros((1, conv.params.out_h, conv.params.out_w, conv.params.out_c), np.int8)
    scratch = (ctypes.c_uint32 * 4096)()
    assert lib.ob_onebit_conv2d_fused(ctypes.byref(fused), _ptr(conv.x), None, None, None, _ptr(out), scratch) != 0
    fused.rows_per_call = 1
    fused.out_add = ctypes.pointer(_c(quant.add_params(*(_q(rng) for _ in range(3)), "NONE", [1, 1, 1, 1], [1, 1, 1, 1],
                                                        [1, 1, 1, 1]), AddStruct, keep))
    packed = np.ascontiguousarray(oc.pack_filter(conv.filter))
    assert lib.ob_onebit_conv2d_fused(ctypes.byref(fused), _ptr(conv.x), packed.ctypes.data_as(
        ctypes.POINTER(ctypes.c_uint8)), None, None, _ptr(out), scratch) != 0  # an epilogue without a residual
