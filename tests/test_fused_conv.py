"""The fused ONEBIT_CONV2D (firmware/kernels/onebit_conv2d_fused.c) equals the unfused ops
it replaces, bit for bit, and a pipeline of two equals the two run one after the other: MUL and/or ADD by per-channel constants over the whole input
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
from mcu_onebit.converters.fusion import FusedConv, fused_scratch_bytes, pipeline_writes_over_input
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


P32 = ctypes.POINTER(ctypes.c_int32)
PU8 = ctypes.POINTER(ctypes.c_uint8)


class PairStruct(ctypes.Structure):
    _fields_ = [("first", ctypes.POINTER(FusedStruct)), ("first_filter", PU8), ("first_bias", P32),
                ("second", ctypes.POINTER(FusedStruct)), ("second_filter", PU8), ("second_bias", P32)]


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


class _Graph:
    """Just what fusion's row arithmetic reads of a graph: op k is the conv convs[k] =
    (params, filter shape), reading tensor 3k and writing 3k + 2."""

    def __init__(self, convs):
        class Tensor:
            def __init__(self, shape):
                self.shape = shape

        class Op:
            def __init__(self, k, p):
                self.inputs, self.outputs = (3 * k, 3 * k + 1), (3 * k + 2,)
                self.customOptions = list(oc.encode_options(p.stride_h, p.stride_w, p.dilation_h, p.dilation_w,
                                                            "SAME" if p.pad_top or p.pad_left else "VALID", "NONE"))

        self.tensors = [Tensor(shape) for p, filter_shape in convs for shape in (
            (1, p.in_h, p.in_w, p.in_c), (*filter_shape[:3], -(-filter_shape[3] // 8)), (1, p.out_h, p.out_w, p.out_c))]
        self.operators = [Op(k, p) for k, (p, _) in enumerate(convs)]


class _Model:
    def __init__(self, *convs):
        self.subgraphs = [_Graph(convs)]


def _python_scratch(p, f: FusedConv, filter_shape) -> int:
    """fusion.fused_scratch_bytes, from the parameters instead of a graph."""
    return fused_scratch_bytes(_Model((p, filter_shape)), f)


def _random_table(rng, channels: int, keep: list):
    table = rng.integers(-128, 128, channels * 256, dtype=np.int8)
    keep.append(table)
    return _ptr(table)


def _filter_args(conv, keep: list):
    packed = np.ascontiguousarray(oc.pack_filter(conv.filter))
    bias = None if conv.bias is None else np.ascontiguousarray(conv.bias, np.int32)
    keep += [packed, bias]
    return packed.ctypes.data_as(PU8), None if bias is None else bias.ctypes.data_as(P32)


@pytest.mark.parametrize("seed", range(24))
def test_pair_equals_its_two_fused_convs_in_turn(lib, seed):
    """ob_onebit_conv2d_pair against ob_onebit_conv2d_fused twice (itself checked against
    the unfused ops above), with or without each conv's batch norm (as a channel table),
    any blocks of rows per call for both, and the output over the residual, over the
    first conv's input (where fusion.pipeline_writes_over_input allows), or apart."""
    rng = np.random.default_rng(1000 + seed)
    over_input = seed % 3 == 0  # a third of the cases write over the input (safely or refused)
    k1, k2 = (int(rng.choice([1, 3])) for _ in range(2))
    stride1 = 1 if over_input else int(rng.choice([1, 2]))
    padding1, padding2 = ("SAME", "SAME") if over_input else (
        "SAME" if rng.random() < 0.8 else "VALID", "SAME" if rng.random() < 0.8 else "VALID")
    h, w = int(rng.integers(7, 13)), int(rng.integers(7, 11))
    in_c = int(rng.choice([8, 16, 5]))
    conv1 = bench.random_case(rng, (1, h, w, in_c), int(rng.choice([8, 16, 13])), k1, stride1, padding1, "RELU")
    p1 = conv1.params
    out_c2 = in_c if over_input else int(rng.choice([8, 3]))
    conv2 = bench.random_case(rng, (1, p1.out_h, p1.out_w, p1.out_c), out_c2, k2, 1, padding2, "NONE",
                              with_bias=rng.random() < 0.8)
    p2 = conv2.params
    keep: list = []
    first = FusedStruct(conv=ctypes.pointer(_c(p1, ConvStruct, keep)), rows_per_call=int(rng.integers(1, p1.out_h + 2)))
    second = FusedStruct(conv=ctypes.pointer(_c(p2, ConvStruct, keep)), rows_per_call=int(rng.integers(1, p2.out_h + 2)))
    if rng.random() < 0.7:
        first.in_table = _random_table(rng, p1.in_c, keep)
    if rng.random() < 0.7:
        second.in_table = _random_table(rng, p2.in_c, keep)
    out_shape = (1, p2.out_h, p2.out_w, p2.out_c)
    x = conv1.x
    where = "apart"
    residual = None
    if over_input or rng.random() < 0.8:
        row = [1, 1, p2.out_w, p2.out_c]
        second.out_add = ctypes.pointer(_c(quant.add_params(*(_q(rng) for _ in range(3)), "NONE", row, row, row),
                                           AddStruct, keep))
        second.residual_first = int(rng.random() < 0.5)
        where = "input" if over_input else str(rng.choice(["residual", "apart"]))
        residual = x.copy() if where == "input" else rng.integers(-128, 128, out_shape, dtype=np.int8)
    filter1, bias1 = _filter_args(conv1, keep)
    filter2, bias2 = _filter_args(conv2, keep)
    scratch = (ctypes.c_uint32 * 65536)()
    middle = np.zeros((1, p1.out_h, p1.out_w, p1.out_c), np.int8)
    assert lib.ob_onebit_conv2d_fused(ctypes.byref(first), _ptr(x), filter1, bias1, None, _ptr(middle), scratch) == 0
    expected = np.zeros(out_shape, np.int8)
    assert lib.ob_onebit_conv2d_fused(ctypes.byref(second), _ptr(middle), filter2, bias2,
                                      None if residual is None else _ptr(residual), _ptr(expected), scratch) == 0
    pair = PairStruct(ctypes.pointer(first), filter1, bias1, ctypes.pointer(second), filter2, bias2)
    # A channel table stands for its batch norm's ops (index 0 here: only their presence counts).
    tabled = [0 if part.in_table else None for part in (first, second)]
    f = FusedConv(1, None, tabled[1], 0 if residual is not None else None, 2, None, 5, second.rows_per_call,
                  bool(second.in_table), FusedConv(0, None, tabled[0], None, 0, None, 2, first.rows_per_call,
                                                   bool(first.in_table)))
    scratch_size = lib.ob_onebit_conv2d_pair_scratch_bytes(ctypes.byref(pair))
    model = _Model((p1, conv1.filter.shape), (p2, conv2.filter.shape))
    assert scratch_size <= fused_scratch_bytes(model, f)  # what the memory plan reserves
    scratch = (ctypes.c_uint32 * (scratch_size // 4 + 1))()
    x_in = x.copy()
    output = {"input": x_in, "residual": residual, "apart": np.zeros(out_shape, np.int8)}[where]
    residual_in = x_in if where == "input" else residual
    status = lib.ob_onebit_conv2d_pair(ctypes.byref(pair), _ptr(x_in), None if residual is None else _ptr(residual_in),
                                       _ptr(output), scratch)
    if where == "input" and not pipeline_writes_over_input(model, f):
        assert status != 0  # refused: it would overwrite rows the first conv still reads
    else:
        assert status == 0
        np.testing.assert_array_equal(output, expected)


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
