"""Every ONEBIT_CONV2D kernel variant equals the portable reference and TFLite, bit for bit.

(a) On the host: each variant that compiles there (the DSP variant emulates USADA8 in C
    off-target) and the int8 CONV_2D baseline (kernels/conv_int8.c) against the numpy
    reference and ai-edge-litert's BUILTIN_REF CONV_2D, through ctypes.
(b) Under QEMU: the kernel app of mcu_onebit/bench.py, cross-built for each emulated board
    with its variant, runs a table of randomized cases and compares the portable
    reference, the variant and the int8 conv with expected outputs generated here (the
    numpy reference, itself checked against litert in (a) and in test_kernels.py).

Randomized: strides 1/2, SAME/VALID, 1x1/3x3, dilation 1/2, channels not multiples of 8
or 32, non-zero zero points, ReLU/ReLU6, with and without bias.
"""

from __future__ import annotations

import ctypes
import dataclasses
import shutil

import numpy as np
import pytest

from mcu_onebit import bench
from mcu_onebit.boards import all_boards
from mcu_onebit.converters import onebit_conv2d as oc
from mcu_onebit.converters import quant
from mcu_onebit.converters.memory_plan import onebit_scratch_bytes
from mcu_onebit.converters.quant import TensorQuant
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

import tflite_builder as tb

KERNELS = firmware_dir() / "kernels"
# Variant folders holding an onebit_conv2d.c; "reference" is the portable kernel itself.
VARIANTS = ["reference"] + sorted(p.parent.name for p in KERNELS.glob("*/onebit_conv2d.c"))
EMULATED = sorted(b.id for b in all_boards().values() if b.emulated)

needs_cross = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm and arm-none-eabi-gcc are needed (make setup installs them)")


def random_cases(seed: int, count: int) -> list[bench.ConvCase]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        k = int(rng.choice([1, 3]))
        stride = int(rng.choice([1, 2]))
        dilation = int(rng.choice([1, 2])) if k == 3 and rng.random() < 0.25 else 1
        padding = str(rng.choice(["SAME", "VALID"]))
        extent = (k - 1) * dilation + 1
        h, w = (int(rng.integers(extent, extent + 7)) for _ in range(2))
        in_c = int(rng.choice([1, 3, 5, 8, 13, 16, 24, 37, 40]))
        out_c = int(rng.choice([1, 2, 3, 5, 6, 8, 13]))
        cases.append(bench.random_case(rng, (1, h, w, in_c), out_c, k, stride, padding,
                                       str(rng.choice(["NONE", "RELU", "RELU6"])), dilation,
                                       with_bias=rng.random() < 0.75))
    return cases


# --- (a) host ------------------------------------------------------------------------


class ConvStruct(ctypes.Structure):
    """ob_onebit_conv2d_params and ob_conv2d_int8_params (the same layout)."""

    _fields_ = [(f.name, ctypes.POINTER(ctypes.c_int32) if "tuple" in str(f.type) else ctypes.c_int32)
                for f in dataclasses.fields(oc.OnebitConv2DParams)]


def _call(fn, case: bench.ConvCase, filt: np.ndarray, params=None, scratch=False) -> np.ndarray:
    """fn(params, input, filter, bias, output[, scratch]); with scratch=True a buffer of
    ONEBIT_CONV2D_SCRATCH_MAX bytes is passed (ob_onebit_conv2d_ex)."""
    p = params or case.params
    mult = (ctypes.c_int32 * p.out_c)(*p.out_multiplier)
    shift = (ctypes.c_int32 * p.out_c)(*p.out_shift)
    values = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    values.update(out_multiplier=mult, out_shift=shift)
    struct = ConvStruct(**values)
    x = np.ascontiguousarray(case.x, np.int8)
    filt = np.ascontiguousarray(filt)
    out = np.zeros((1, p.out_h, p.out_w, p.out_c), np.int8)
    bias = None if case.bias is None else np.ascontiguousarray(case.bias, np.int32)
    extra = []
    if scratch:
        buffer = np.zeros(max(1, onebit_scratch_bytes(p.k_h, p.k_w, p.in_c) // 4), np.uint32)
        extra.append(buffer.ctypes.data_as(ctypes.c_void_p))
    status = fn(ctypes.byref(struct), x.ctypes.data_as(ctypes.c_void_p), filt.ctypes.data_as(ctypes.c_void_p),
                None if bias is None else bias.ctypes.data_as(ctypes.c_void_p),
                out.ctypes.data_as(ctypes.c_void_p), *extra)
    assert status == 0
    return out


@pytest.fixture(scope="module", params=VARIANTS)
def host_variant(request, tmp_path_factory):
    build = tmp_path_factory.mktemp(f"variant-{request.param}")
    source = bench.variant_source(request.param)
    path = build_shared_library([KERNELS / "ob_common.c", source, KERNELS / "conv_int8.c"], [KERNELS],
                                build / "libvariant.so")
    return ctypes.CDLL(str(path))


def test_host_variant_matches_reference(host_variant):
    for case in random_cases(1, 40):
        np.testing.assert_array_equal(_call(host_variant.ob_onebit_conv2d, case, case.packed),
                                      case.expected)
        np.testing.assert_array_equal(_call(host_variant.ob_onebit_conv2d_ex, case, case.packed,
                                            scratch=True), case.expected)
        np.testing.assert_array_equal(_call(host_variant.ob_conv2d_int8, case, case.filter),
                                      case.expected)


def test_host_variants_match_tflite(host_variant):
    """The +-127 filter through litert's CONV_2D equals every variant, and the int8 conv
    equals litert on general int8 filters."""
    rng = np.random.default_rng(5)
    for k, stride, in_c, out_c, padding in [(3, 1, 13, 5, "SAME"), (3, 2, 37, 6, "VALID"),
                                            (1, 1, 40, 3, "SAME"), (3, 1, 32, 4, "SAME")]:
        in_q = (float(np.float32(0.02)), int(rng.integers(-128, 128)))
        out_q = (float(np.float32(40.0)), int(rng.integers(-100, 100)))
        scales = [float(np.float32(s)) for s in 10 ** rng.uniform(-3, -2, out_c)]
        conv_q = quant.conv_quant(TensorQuant(*in_q), scales, TensorQuant(*out_q), "NONE")
        options = oc.OnebitConvOptions(stride, stride, 1, 1, padding, "NONE")
        x = rng.integers(-128, 128, (1, 9, 7, in_c), dtype=np.int8)
        bias = rng.integers(-5000, 5000, out_c).astype(np.int32)
        for filt in (rng.choice(np.array([-127, 127], np.int8), (out_c, k, k, in_c)),
                     rng.integers(-127, 128, (out_c, k, k, in_c), dtype=np.int8)):
            params = oc.onebit_conv2d_params(x.shape, filt.shape, options, conv_q)
            expected = tb.run_reference(tb.conv2d_model(x.shape, in_q, filt, scales, bias, out_q,
                                                        (stride, stride), (1, 1), padding, "NONE"), x)
            case = bench.ConvCase(x=x, filter=filt, bias=bias, params=params, expected=expected)
            np.testing.assert_array_equal(_call(host_variant.ob_conv2d_int8, case, filt), expected)
            if np.all(np.abs(filt) == 127):
                np.testing.assert_array_equal(_call(host_variant.ob_onebit_conv2d, case, case.packed),
                                              expected)
                np.testing.assert_array_equal(_call(host_variant.ob_onebit_conv2d_ex, case, case.packed,
                                                    scratch=True), expected)


# --- (b) QEMU ------------------------------------------------------------------------


# Every emulated board with its own variant, and every variant no emulated board uses on
# the Cortex-M3 (plain Thumb-2: a variant needing the DSP extension is given to a DSP board).
QEMU_RUNS = [(b, all_boards()[b].kernel_variant) for b in EMULATED]
QEMU_RUNS += [("qemu-m3", v) for v in VARIANTS if v not in {variant for _, variant in QEMU_RUNS}]


@needs_cross
@pytest.mark.parametrize("board_id,variant", QEMU_RUNS)
def test_qemu_variant_matches_reference(board_id, variant, tmp_path):
    """The kernel app runs the portable reference too, on every case: the oracle under QEMU."""
    board = all_boards()[board_id]
    cases = random_cases(100 + QEMU_RUNS.index((board_id, variant)), 24)
    app = bench.build_kernel_app(board, cases, tmp_path, variant)
    results = bench.run_kernel_app(app, board, len(cases))
    failed = [(i, r.failed) for i, r in enumerate(results) if r.failed]
    assert not failed, f"{board_id} ({variant}): outputs differ in cases {failed}"
