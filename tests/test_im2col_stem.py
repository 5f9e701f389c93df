"""The im2col stem (firmware/kernels/onebit_conv2d_im2col.c): an ONEBIT_CONV2D with 1 to 7
input channels, run as a 1x1 conv over gathered rows with the converter's re-laid filter
(converters/onebit_conv2d.im2col_filter), equals the numpy reference conv bit for bit,
with the portable reference and every kernel variant, over random kernel sizes, strides,
dilations, paddings, zero points and rows per call."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mcu_onebit import bench
from mcu_onebit.converters import onebit_conv2d as oc
from mcu_onebit.converters import quant
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

import test_kernels as tk

KERNELS = firmware_dir() / "kernels"
VARIANTS = ["reference"] + sorted(p.parent.name for p in KERNELS.glob("*/onebit_conv2d.c"))
P8 = ctypes.POINTER(ctypes.c_int8)
FIELDS = ("in_h", "in_w", "in_c", "k_h", "k_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top",
          "pad_left", "rows_per_call")


class Im2colStruct(ctypes.Structure):
    _fields_ = [("conv", ctypes.POINTER(tk.ConvStruct)), *((name, ctypes.c_int32) for name in FIELDS)]


@pytest.fixture(scope="module", params=VARIANTS)
def lib(request, tmp_path_factory):
    sources = [KERNELS / "onebit_conv2d_im2col.c", KERNELS / "ob_common.c", bench.variant_source(request.param)]
    return ctypes.CDLL(str(build_shared_library(sources, [KERNELS], tmp_path_factory.mktemp(request.param) / "lib.so")))


@pytest.mark.parametrize("seed", range(20))
def test_im2col_stem_equals_the_conv(lib, seed):
    rng = np.random.default_rng([11, seed])
    k = int(rng.choice([1, 2, 3, 5]))
    dilation = int(rng.choice([1, 2])) if k > 1 and rng.random() < 0.3 else 1
    extent = (k - 1) * dilation + 1
    h, w = (int(rng.integers(extent, extent + 10)) for _ in range(2))
    in_c = int(rng.integers(1, 8))
    case = bench.random_case(rng, (1, h, w, in_c), int(rng.choice([1, 4, 5, 16])), k, int(rng.choice([1, 2])),
                             str(rng.choice(["SAME", "VALID"])), str(rng.choice(["NONE", "RELU"])), dilation,
                             with_bias=rng.random() < 0.8)
    p = case.params
    depth = -(-k * k * in_c // 8) * 8 + 8 * int(rng.integers(0, 2))  # the converter's depth, or more
    one_by_one = oc.OnebitConvOptions(1, 1, 1, 1, "VALID", "NONE")
    conv = oc.onebit_conv2d_params([1, p.out_h, p.out_w, depth], [p.out_c, 1, 1, depth], one_by_one,
                                   quant.ConvQuant(p.input_offset, p.output_offset, p.act_min, p.act_max,
                                                p.out_multiplier, p.out_shift))
    conv_struct, keep = tk._to_struct(conv, tk.ConvStruct)
    stem = Im2colStruct(ctypes.pointer(conv_struct), *(getattr(p, name) for name in FIELDS[:-1]),
                        int(rng.integers(1, p.out_h + 2)))
    packed = np.ascontiguousarray(oc.im2col_filter(case.packed, in_c, depth))
    bias = None if case.bias is None else np.ascontiguousarray(case.bias, np.int32)
    scratch = (ctypes.c_uint32 * (lib.ob_onebit_conv2d_im2col_scratch_bytes(ctypes.byref(stem)) // 4 + 1))()
    out = np.zeros(case.expected.shape, np.int8)
    status = lib.ob_onebit_conv2d_im2col(ctypes.byref(stem), case.x.ctypes.data_as(P8),
                                         packed.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                                         None if bias is None else bias.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                                         out.ctypes.data_as(P8), scratch)
    assert status == 0
    np.testing.assert_array_equal(out, case.expected)


def test_a_conv_that_is_not_a_plain_1x1_is_refused(lib):
    rng = np.random.default_rng(3)
    case = bench.random_case(rng, (1, 6, 6, 3), 4, 3, 1, "SAME", "NONE", 1, with_bias=False)
    p = case.params
    conv_struct, keep = tk._to_struct(p, tk.ConvStruct)  # the 3x3 conv itself, not its 1x1 form
    stem = Im2colStruct(ctypes.pointer(conv_struct), *(getattr(p, name) for name in FIELDS[:-1]), 1)
    scratch = (ctypes.c_uint32 * 4096)()
    out = np.zeros(case.expected.shape, np.int8)
    assert lib.ob_onebit_conv2d_im2col(ctypes.byref(stem), case.x.ctypes.data_as(P8),
                                       case.packed.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), None,
                                       out.ctypes.data_as(P8), scratch) != 0
