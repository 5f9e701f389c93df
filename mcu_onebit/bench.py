"""Kernel benchmark and kernel test firmware for emulated boards (`mcu-onebit bench`).

One small app, firmware/bench/kernel_bench.c, runs a table of convolution cases through
three kernels and counts each call with the board's counter (QEMU -icount: executed
instructions):

- onebit_ref: the portable ONEBIT_CONV2D reference, firmware/kernels/onebit_conv2d.c;
- onebit_opt: the board's variant (board.kernel_variant: firmware/kernels/<variant>/
  onebit_conv2d.c, or the reference again when the variant is "reference");
- int8_ref:  a plain int8 per-channel CONV_2D with TFLite's reference arithmetic,
  firmware/kernels/conv_int8.c, on the unpacked +-127 filter.

All are compiled with the same flags (the qemu platform's: -O2, the board's CPU flags).
The case table (inputs, filters, parameters and the expected outputs from the numpy
reference of the op) is generated here and written as C; the app compares every output
with the expected one, so a benchmark run is also a bit-exactness test, and
tests/test_kernel_variants.py uses the same functions with randomized cases.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .boards import Board, get_board
from .converters import onebit_conv2d as oc
from .converters import quant
from .converters.quant import TensorQuant
from .converters.memory_plan import onebit_scratch_bytes
from .emulator import qemu_command
from .errors import OnebitError
from .modelfile import write_text_atomic
from .outputs import check_file_target
from .paths import firmware_dir
from . import tflm_tree
from .project import firmware_size
from .tflm_tree import CXX_FLAGS, STANDINS_FILE, TflmTree

VARIANTS = ("onebit_ref", "onebit_opt", "int8_ref", "onebit_opt_noscratch")
_CASE_LINE = re.compile(r"^case (\d+) ref (\d+) opt (\d+) int8 (\d+) nos (\d+) fail (\d+)\s*$")
_DONE_LINE = re.compile(r"^done (\d+)\s*$")


@dataclass(frozen=True)
class ConvCase:
    """One convolution: int8 input [1, H, W, I], +-127 int8 filter [O, KH, KW, I], bias
    (or None), the kernel parameters and the expected output (numpy reference)."""

    x: np.ndarray
    filter: np.ndarray
    bias: np.ndarray | None
    params: oc.OnebitConv2DParams
    expected: np.ndarray

    @property
    def packed(self) -> np.ndarray:
        return oc.pack_filter(self.filter)

    @property
    def macs(self) -> int:
        """Nominal multiply-accumulates: OH * OW * O * KH * KW * I (padding taps included)."""
        p = self.params
        return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w * p.in_c

    def shape(self) -> dict:
        p = self.params
        return {"h": p.in_h, "w": p.in_w, "cin": p.in_c, "cout": p.out_c, "k": p.k_h,
                "stride": p.stride_h}


def random_case(rng: np.random.Generator, in_shape: Sequence[int], out_c: int, k: int,
                stride: int = 1, padding: str = "SAME", activation: str = "NONE",
                dilation: int = 1, with_bias: bool = True) -> ConvCase:
    """A random convolution whose outputs mostly stay inside int8 (so rounding matters),
    with random non-zero zero points and per-channel scales."""
    in_c = int(in_shape[3])
    filt = rng.choice(np.array([-127, 127], np.int8), size=(out_c, k, k, in_c))
    x = rng.integers(-128, 128, tuple(in_shape), dtype=np.int8)
    in_scale = float(np.float32(10 ** rng.uniform(-3, 0)))
    filter_scales = [float(np.float32(s)) for s in 10 ** rng.uniform(-4, -1, out_c)]
    acc_std = 127 * 74 * math.sqrt(k * k * in_c)
    out_scale = float(np.float32(in_scale * float(np.mean(filter_scales)) * acc_std / 60
                                 * 10 ** rng.uniform(-0.5, 0.5)))
    bias = (rng.integers(-acc_std / 4, acc_std / 4, out_c).astype(np.int32) if with_bias
            else None)
    conv_q = quant.conv_quant(TensorQuant(in_scale, int(rng.integers(-128, 128))), filter_scales,
                              TensorQuant(out_scale, int(rng.integers(-100, 100))), activation)
    options = oc.OnebitConvOptions(stride, stride, dilation, dilation, padding, activation)
    params = oc.onebit_conv2d_params(tuple(in_shape), filt.shape, options, conv_q)
    expected = oc.reference_onebit_conv2d(x, oc.pack_filter(filt), bias, params)
    return ConvCase(x=x, filter=filt, bias=bias, params=params, expected=expected)


# --- the generated case table ---------------------------------------------------------


def _c_array(ctype: str, name: str, values: np.ndarray, static: bool = True) -> str:
    flat = np.asarray(values).ravel().tolist()
    lines = [", ".join(str(v) for v in flat[i:i + 24]) for i in range(0, len(flat), 24)]
    storage = "static " if static else ""
    return (f"{storage}const {ctype} {name}[{len(flat)}] __attribute__((aligned(4))) = {{\n  "
            + ",\n  ".join(lines) + "\n};\n")


def cases_source(cases: Sequence[ConvCase]) -> str:
    """kernel_cases.c for firmware/bench/kernel_cases.h."""
    out = ["/* Generated by mcu_onebit/bench.py: kernel test and benchmark cases. Do not edit. */",
           '#include "kernel_cases.h"', "#include <stddef.h>", ""]
    entries = []
    for i, case in enumerate(cases):
        p = case.params
        out.append(_c_array("int32_t", f"c{i}_mult", np.array(p.out_multiplier)))
        out.append(_c_array("int32_t", f"c{i}_shift", np.array(p.out_shift)))
        out.append(_c_array("int8_t", f"c{i}_input", case.x))
        out.append(_c_array("uint8_t", f"c{i}_packed", case.packed))
        out.append(_c_array("int8_t", f"c{i}_filter", case.filter))
        out.append(_c_array("int8_t", f"c{i}_expected", case.expected))
        if case.bias is not None:
            out.append(_c_array("int32_t", f"c{i}_bias", case.bias))
        fields = ", ".join(f".{name} = {getattr(p, name)}" for name in (
            "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w", "stride_h",
            "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left", "input_offset",
            "output_offset", "act_min", "act_max"))
        fields += f", .out_multiplier = c{i}_mult, .out_shift = c{i}_shift"
        out.append(f"static const ob_onebit_conv2d_params c{i}_onebit = {{{fields}}};")
        out.append(f"static const ob_conv2d_int8_params c{i}_int8 = {{{fields}}};\n")
        bias = f"c{i}_bias" if case.bias is not None else "NULL"
        entries.append(f"  {{&c{i}_onebit, &c{i}_int8, c{i}_input, c{i}_packed, c{i}_filter, "
                       f"{bias}, c{i}_expected, {case.expected.size}}},")
    largest = max(case.expected.size for case in cases)
    out.append("const obk_case obk_cases[] = {\n" + "\n".join(entries) + "\n};")
    out.append(f"const int32_t obk_case_count = {len(cases)};")
    out.append(f"int8_t obk_output[{largest}] __attribute__((aligned(4)));")
    scratch = max(onebit_scratch_bytes(c.params.k_h, c.params.k_w, c.params.in_c) for c in cases)
    out.append(f"uint32_t obk_scratch[{max(1, scratch // 4)}];  /* ONEBIT_CONV2D_SCRATCH_MAX */\n")
    return "\n".join(out)


# --- building and running the app -----------------------------------------------------


def cpu_flags(board: Board) -> list[str]:
    flags = [f"-mcpu={board.cpu}", "-mthumb", f"-mfloat-abi={board.float_abi}"]
    if board.fpu:
        flags.append(f"-mfpu={board.fpu}")
    return flags


# The same optimisation flags as the qemu platform (boards/platform-qemu/builder/main.py).
CFLAGS = ("-std=c99", "-O2", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra",
          "-Werror")


def variant_source(variant: str) -> Path:
    """The ONEBIT_CONV2D source of a kernel variant ("reference" or a kernels/ subfolder)."""
    kernels = firmware_dir() / "kernels"
    path = kernels / "onebit_conv2d.c" if variant == "reference" else kernels / variant / "onebit_conv2d.c"
    if not path.is_file():
        raise OnebitError(f"kernel variant {variant!r} has no {path}")
    return path


@dataclass(frozen=True)
class KernelApp:
    elf: Path
    objects: dict[str, Path]  # VARIANTS name -> object file of that kernel


def build_kernel_app(board: Board, cases: Sequence[ConvCase], out_dir: Path,
                     variant: str | None = None) -> KernelApp:
    """Cross-compile kernel_bench.c with `cases` for `board` (its kernel_variant unless
    `variant` is given); OnebitError with the compiler's message on failure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "kernel_cases.c").write_text(cases_source(cases))
    kernels = firmware_dir() / "kernels"
    units = {  # object name -> (source, extra flags)
        "onebit_ref": (kernels / "onebit_conv2d.c", [  # renamed: the variant has the names
            "-Dob_onebit_conv2d=ob_onebit_conv2d_ref", "-Dob_onebit_conv2d_ex=ob_onebit_conv2d_ref_ex",
            "-Dob_onebit_conv2d_scratch_bytes=ob_onebit_conv2d_ref_scratch_bytes"]),
        "onebit_opt": (variant_source(variant or board.kernel_variant), []),
        "int8_ref": (kernels / "conv_int8.c", []),
        "ob_common": (kernels / "ob_common.c", []),
        "main": (firmware_dir() / "bench" / "kernel_bench.c", []),
        "cases": (out_dir / "kernel_cases.c", []),
    }
    elf, objects = _cross_build(board, units, out_dir, "kernel_bench.elf")
    return KernelApp(elf=elf, objects={name: objects[name] for name in VARIANTS[:3]})


def _cross_build(board: Board, units: dict[str, tuple[Path, list[str]]], out_dir: Path,
                 elf_name: str) -> tuple[Path, dict[str, Path]]:
    """Compile `units` (object name -> (source, extra flags)) and the QEMU HAL for the
    board, link them into out_dir/elf_name; returns the ELF and every object file."""
    if not board.emulated or board.icount_shift is None:
        raise OnebitError(f"board {board.id} is not an emulated board; the bench needs QEMU")
    fw = firmware_dir()
    hal = fw / "hal" / "qemu_mps2"
    units = {**units, "hal": (hal / "hal_qemu.c", []), "startup": (hal / "startup.c", [])}
    includes = [f"-I{d}" for d in (fw / "kernels", fw / "app", fw / "bench")]
    base = ["arm-none-eabi-gcc", *cpu_flags(board), *CFLAGS, *includes,
            f"-DOB_ICOUNT_SHIFT={board.icount_shift}"]

    def compile_unit(name: str) -> Path:
        source, extra = units[name]
        obj = out_dir / f"{name}.o"
        _run_tool([*base, *extra, "-c", str(source), "-o", str(obj)], f"compiling {source.name}")
        return obj

    with ThreadPoolExecutor(max_workers=4) as pool:
        objects = dict(zip(units, pool.map(compile_unit, units)))
    elf = out_dir / elf_name
    _run_tool(["arm-none-eabi-gcc", *cpu_flags(board), "-T", str(hal / "linker.ld"),
               "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
               *map(str, objects.values()), "-lm", "-o", str(elf)], f"linking {elf_name}")
    return elf, objects


def _run_tool(command: list[str], what: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except FileNotFoundError as exc:
        raise OnebitError(f"{command[0]} is not installed (Debian: apt-get install gcc-arm-none-eabi "
                          "libnewlib-arm-none-eabi qemu-system-arm)") from exc
    if result.returncode != 0:
        raise OnebitError(f"{what} failed:\n{result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class CaseResult:
    counts: dict[str, int]  # VARIANTS name -> counter units (instructions under QEMU)
    failed: tuple[str, ...]  # VARIANTS names whose output differed from the expected one


def run_kernel_app(app: KernelApp, board: Board, n_cases: int, timeout: float = 120) -> list[CaseResult]:
    """Boot the app in QEMU (-icount with the board's shift) and parse its report."""
    result = _run_qemu(app.elf, board, timeout)
    results, done = [], None
    for line in result.stdout.splitlines():
        if match := _CASE_LINE.match(line):
            counts = dict(zip(VARIANTS, (int(g) for g in match.groups()[1:5])))
            mask = int(match.group(6))
            results.append(CaseResult(counts, tuple(v for bit, v in enumerate(VARIANTS) if mask >> bit & 1)))
        elif match := _DONE_LINE.match(line):
            done = int(match.group(1))
    if done is None or len(results) != n_cases:
        raise OnebitError(f"the kernel app stopped early (QEMU exit {result.returncode}) after "
                          f"{len(results)} of {n_cases} cases:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return results


def _run_qemu(elf: Path, board: Board, timeout: float) -> subprocess.CompletedProcess:
    """Run a bench app to its semihosting exit, UART0 on stdout."""
    try:
        return subprocess.run(qemu_command(elf, board, "stdio"), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise OnebitError("qemu-system-arm is not installed (Debian: apt-get install qemu-system-arm)") from exc
    except subprocess.TimeoutExpired as exc:
        raise OnebitError(f"{elf.name} did not finish within {timeout:g} s under QEMU") from exc


def code_size(objects: dict[str, Path]) -> dict[str, int]:
    """Flash bytes of each kernel object (text + rodata + data, arm-none-eabi-size)."""
    sizes = {}
    for name, obj in objects.items():
        out = _run_tool(["arm-none-eabi-size", "-B", "-d", str(obj)], f"sizing {obj.name}")
        text, data = (int(v) for v in out.splitlines()[1].split()[:2])
        sizes[name] = text + data
    return sizes


# --- whole models ---------------------------------------------------------------------


@dataclass(frozen=True)
class BenchModel:
    """A network counted whole: built with untrained, seeded weights and batch-norm
    statistics (what a network learned changes its outputs, not its graph or which
    instructions run), converted by `convert` for the static runtime and run once by
    firmware/bench/model_bench.c."""

    name: str
    arch: str
    dataset: str  # "digits" (built in), or random images of input_shape (no download)
    input_shape: tuple[int, int, int]


BENCH_MODELS = (
    BenchModel("tiny-resnet", "tiny-resnet", "digits", (8, 8, 1)),  # the network of `make demo`
    # ResNet-8-sized (MLPerf Tiny's image classification net: 16/32/64 channels, 32x32x3).
    BenchModel("wrn-8-1", "wrn-8-1", "random-32x32x3", (32, 32, 3)),
)
_OP_LINE = re.compile(r"^op (\d+) (\d+)\s*$")
_IDENTITY_PREFIX = "identity "
_MODEL_LINE = re.compile(r"^model (\d+) fail (\d+)\s*$")


@dataclass(frozen=True)
class ConvertedModel:
    name: str
    model_c: Path  # the static runtime's model.c
    ops: list[str]  # its steps' names, in order
    macs: int  # the convert report's MAC total
    input: np.ndarray  # int8, the twin's quantized input
    expected: np.ndarray  # int8, the twin's output for it (ai-edge-litert reference kernels)
    fused: bool  # the static runtime's fused ops (convert's default), or every op alone
    arena_bytes: int  # activations and scratch

    def unfused(self, path: Path) -> ConvertedModel:
        """The same graph with every op alone (convert --no-fuse), its model.c at path."""
        from .converters.static_runtime import generate

        graph = (self.model_c.parents[2] / "model.tflite").read_bytes()
        static = generate(graph, "0" * 16, f"{self.name} (--no-fuse)", fuse=False)
        Path(path).write_text(static.source)
        return dataclasses.replace(self, model_c=path, ops=static.ops, fused=False, arena_bytes=static.plan.arena_bytes)


def convert_bench_model(spec: BenchModel, board: Board, out_dir: Path, seed: int = 0) -> ConvertedModel:
    """Build spec's network (seeded), write it as model.h5 and `convert` it for board."""
    from .convert import convert
    from .datasets import load_dataset
    from .evaluate import HostTwin
    from .layers import BinaryConv2D
    from .modelfile import ModelMeta, save_model
    from .models import build_model
    from .native import keras as load_keras

    keras = load_keras()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = None
    if spec.dataset != "digits":
        rng = np.random.default_rng(seed)
        data = out_dir / f"{spec.name}.npz"
        np.savez(data, x_train=rng.integers(0, 256, (256, *spec.input_shape), dtype=np.uint8),
                 y_train=np.arange(256) % 10)
    images = load_dataset(spec.dataset, data)
    keras.utils.set_random_seed(seed)
    model = build_model(spec.arch, spec.input_shape, len(images.class_names))
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # as after training: BN folds or stays as in a trained net
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, variance = (np.asarray(v) for v in (layer.moving_mean, layer.moving_variance))
            scale = 64.0 if layer.name == "input_bn" else 1.0  # the input BN sees 0..255 pixels
            layer.moving_mean.assign(scale * (rng.uniform(0, 2, mean.shape) if scale > 1
                                              else rng.normal(0, 0.5, mean.shape)))
            layer.moving_variance.assign(scale ** 2 * rng.uniform(0.5, 2, variance.shape))
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    h5 = out_dir / f"{spec.name}.h5"
    save_model(model, ModelMeta(spec.dataset, spec.arch, spec.input_shape, images.class_names, binary), h5)
    result = convert(h5, board.id, out_dir / "convert", data=data, runtime="static", log=lambda _: None)
    twin = HostTwin(result.out_dir / "twin_int8.tflite")
    x = twin.quantize(images.x_train[0])
    return ConvertedModel(spec.name, result.project_dir / "src" / "model.c", result.report["ops"],
                          result.report["graph"]["totals"]["macs"], x, twin.run(x), True,
                          result.report["memory"]["arena_bytes"])


def _model_data_source(model: ConvertedModel) -> str:
    return "\n".join([
        "/* Generated by mcu_onebit/bench.py: the model benchmark's input. Do not edit. */",
        '#include "model_bench.h"', "",
        _c_array("int8_t", "obm_input", model.input, static=False),
        _c_array("int8_t", "obm_expected", model.expected, static=False),
        f"const int32_t obm_op_count = {len(model.ops)};",
        f"uint64_t obm_marks[{len(model.ops)}];", ""])


def run_model(model: ConvertedModel, board: Board, variant: str, out_dir: Path,
              timeout: float = 300) -> dict:
    """Cross-build model.c with `variant`'s kernels and the model bench app, run it under
    QEMU and return the record {name, board, variant, instructions, macs, per_mac, ops}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_bench_data.c").write_text(_model_data_source(model))
    kernels, bench_dir = firmware_dir() / "kernels", firmware_dir() / "bench"
    units = {f"k_{path.stem}": (path, []) for path in sorted(kernels.glob("*.c"))}
    units["k_onebit_conv2d"] = (variant_source(variant), [])
    units["model"] = (model.model_c, ["-DOB_MODEL_OP_DONE(index)=obm_op_done(index)",
                                      "-include", str(bench_dir / "model_bench.h")])
    units["main"] = (bench_dir / "model_bench.c", [])
    units["data"] = (out_dir / "model_bench_data.c", [])
    elf, _ = _cross_build(board, units, out_dir, "model_bench.elf")
    counted = _run_model_bench(elf, board, model.ops, f"{model.name} on {board.id} ({variant})", timeout)
    return {"name": model.name, "board": board.id, "runtime": "static", "graph": "onebit", "variant": variant, "fused": model.fused, "arena_bytes": model.arena_bytes,
            "flash_bytes": firmware_size(elf).flash_bytes, "instructions": counted.instructions,
            "macs": model.macs, "per_mac": round(counted.instructions / model.macs, 4), "ops": counted.ops}


@dataclass(frozen=True)
class ModelCount:
    instructions: int  # one inference, the runtime's set-up excluded
    ops: list[dict]  # {index, op, instructions} per step
    identity: dict  # the runtime's identity (TFLM: arena_used_bytes)


def _run_model_bench(elf: Path, board: Board, op_names: list[str], what: str, timeout: float) -> ModelCount:
    """Run model_bench.c's ELF and parse its lines; OnebitError unless it ran to the end
    with the twin's output."""
    result = _run_qemu(elf, board, timeout)
    ops, total, failed, identity = [], None, None, {}
    for line in result.stdout.splitlines():
        if match := _OP_LINE.match(line):
            index, count = int(match.group(1)), int(match.group(2))
            ops.append({"index": index, "op": op_names[index], "instructions": count})  # index: the step
        elif match := _MODEL_LINE.match(line):
            total, failed = int(match.group(1)), int(match.group(2))
        elif line.startswith(_IDENTITY_PREFIX):
            try:
                identity = json.loads(line[len(_IDENTITY_PREFIX):])
            except ValueError:
                identity = {}
    if failed != 0 or len(ops) != len(op_names):
        raise OnebitError(f"the model bench of {what} "
                          + ("differs from the twin's output" if failed else "stopped early")
                          + f" (QEMU exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return ModelCount(total, ops, identity)


# --- whole models under TFLM (bench --tflm) -------------------------------------------

# The qemu platform's C++ flags (boards/platform-qemu/builder/main.py), for the TFLM build.
CXXFLAGS = ("-std=c++17", "-O2", "-ffunction-sections", "-fdata-sections", "-fno-exceptions", "-fno-rtti",
            "-fno-threadsafe-statics")
TFLM_BENCH_ARENA = 512 * 1024  # ample on the emulated boards; the record gives what TFLM used


def _compile_tflm_sources(board: Board, tree: TflmTree, sources: list[Path], objects_dir: Path,
                          flags: list[str]) -> list[Path]:
    """The tree's files compiled where they are, objects kept in objects_dir by path
    relative to the tree (reused by every build with the same tree and board)."""
    def compile_one(source: Path) -> Path:
        obj = objects_dir / (str(source.relative_to(tree.path)) + ".o")
        if obj.is_file() and obj.stat().st_mtime >= source.stat().st_mtime:
            return obj
        obj.parent.mkdir(parents=True, exist_ok=True)
        compiler = ["arm-none-eabi-gcc", "-std=gnu11", "-O2", "-ffunction-sections", "-fdata-sections"] \
            if source.suffix == ".c" else ["arm-none-eabi-g++", *CXXFLAGS, *CXX_FLAGS]
        partial = obj.with_name(obj.name + ".part")
        _run_tool([*compiler, *cpu_flags(board), *flags, "-c", str(source), "-o", str(partial)],
                  f"compiling {source}")
        partial.replace(obj)
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(compile_one, sources))


def run_tflm_model(model: ConvertedModel, graph: str, tree: TflmTree, board: Board, out_dir: Path,
                   objects_dir: Path, kernels: str, timeout: float = 300) -> dict:
    """Build `model`'s 1-bit graph (graph "onebit", ONEBIT_CONV2D) or its int8 twin (graph
    "int8") as TFLM firmware from `tree` with model_bench.c, the builtin ops on `kernels`
    (convert --tflm-kernels: "project", with channel tables, or "library"), and run it under QEMU; the record
    as run_model's."""
    from .converters import tflite_graph
    from .converters.tflm_runtime import generate, library_kernels, tflm_graph

    out_dir = Path(out_dir)
    (out_dir / "src").mkdir(parents=True, exist_ok=True)
    convert_dir = model.model_c.parents[2]
    graph_bytes = (convert_dir / ("model.tflite" if graph == "onebit" else "twin_int8.tflite")).read_bytes()
    graph_bytes, table_bytes = tflm_graph(graph_bytes, kernels, table_budget=None)
    tflm = generate(graph_bytes, "0" * 16, f"{model.name} ({graph})", board, kernels=kernels,
                    library=tree.planner_library, arena_bytes=TFLM_BENCH_ARENA)
    for name, text in tflm.files.items():
        (out_dir / "src" / name).write_text(text)
    parsed = tflite_graph.load(graph_bytes)
    op_names = [tflite_graph.op_name(parsed, op) for op in parsed.subgraphs[0].operators]
    (out_dir / "model_bench_data.c").write_text(_model_data_source(dataclasses.replace(model, ops=op_names)))

    fw, kernels_dir, bench_dir = firmware_dir(), firmware_dir() / "kernels", firmware_dir() / "bench"
    defines = [f"-D{d}" for d in tree.defines] + [f"-DOB_ICOUNT_SHIFT={board.icount_shift}"]
    includes = [f"-I{d}" for d in (out_dir / "src", kernels_dir, fw / "app", bench_dir, *tree.include_dirs)]
    objects = _compile_tflm_sources(board, tree, tflm_tree.sources(tree, library_kernels(tflm.kernels)),
                                    Path(objects_dir), [*defines, *includes])
    (out_dir / "src" / STANDINS_FILE).write_text(tflm_tree.standins(tree) or "/* nothing to stand in for */\n")
    units = {f"k_{path.stem}": path for path in sorted(kernels_dir.glob("*.c"))}
    units["k_onebit_conv2d"] = variant_source(board.kernel_variant)
    units.update({f"r_{path.stem}": path for path in sorted((out_dir / "src").glob("*.cc"))})
    units.update({"main": bench_dir / "model_bench.c", "data": out_dir / "model_bench_data.c",
                  "hal": fw / "hal" / "qemu_mps2" / "hal_qemu.c", "startup": fw / "hal" / "qemu_mps2" / "startup.c"})
    hook = ["-DOB_MODEL_OP_DONE(index)=obm_op_done(index)", "-include", str(bench_dir / "model_bench.h")]

    def compile_unit(name: str) -> Path:
        source = units[name]
        obj = out_dir / f"{name}.o"
        compiler = ["arm-none-eabi-gcc", *CFLAGS] if source.suffix == ".c" else \
            ["arm-none-eabi-g++", *CXXFLAGS, *CXX_FLAGS, *hook]
        _run_tool([*compiler, *cpu_flags(board), *defines, *includes, "-c", str(source), "-o", str(obj)],
                  f"compiling {source.name}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        own = list(pool.map(compile_unit, units))
    elf = out_dir / "model_bench.elf"
    _run_tool(["arm-none-eabi-g++", *cpu_flags(board), "-T", str(fw / "hal" / "qemu_mps2" / "linker.ld"),
               "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
               *map(str, own + objects), "-lm", "-o", str(elf)], f"linking {elf.name}")
    counted = _run_model_bench(elf, board, op_names, f"{model.name} ({graph}) under TFLM on {board.id}", timeout)
    return {"name": model.name, "board": board.id, "runtime": "tflm", "graph": graph,
            "library": f"{tree.kind} {tree.kernels}", "kernels": kernels,  # convert --tflm-kernels
            "variant": board.kernel_variant if graph == "onebit" else None, "fused": False, "table_bytes": table_bytes,
            "arena_bytes": counted.identity.get("arena_used_bytes"), "flash_bytes": firmware_size(elf).flash_bytes,
            "instructions": counted.instructions, "macs": model.macs,
            "per_mac": round(counted.instructions / model.macs, 4), "ops": counted.ops,
            "tflm_kernels": tflm.kernels}


# --- the benchmark --------------------------------------------------------------------

# (H, W, Cin, Cout, K, stride): the layer shapes of issue 5, int8 activations, SAME.
BENCH_SHAPES = (
    (32, 32, 16, 16, 3, 1),
    (16, 16, 32, 32, 3, 1),
    (16, 16, 32, 32, 3, 2),
    (8, 8, 64, 64, 3, 1),
    (8, 8, 64, 64, 1, 1),
)


def _kernels_label(record: dict) -> str:
    """What ran a whole-model record: the static runtime's variant, or the TFLM library's
    kernels with the project's, and the channel tables, where convert puts them."""
    if record["runtime"] == "static":
        return f"{record['variant']}, {'fused' if record['fused'] else 'unfused'}"
    return record["library"] + (" + project" if record["kernels"] == "project" else "") + (
        f", channel tables {record['table_bytes']:,} B" if record.get("table_bytes") else "")


@dataclass
class BenchReport:
    board: str
    kernel_variant: str
    unit: str
    layers: list[dict] = field(default_factory=list)
    code_size: dict[str, int] = field(default_factory=dict)
    models: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"board": self.board, "kernel_variant": self.kernel_variant, "unit": self.unit,
                "layers": self.layers, "models": self.models, "code_size": self.code_size}

    def table(self) -> str:
        lines = [f"board {self.board}: onebit_opt = kernel variant {self.kernel_variant!r}; "
                 f"counts in {self.unit} (QEMU -icount), not cycles",
                 f"{'layer (HxWxCin->Cout KxK /s)':30} {'MACs':>9}  "
                 + "  ".join(f"{v:>19} {'/MAC':>6}" for v in VARIANTS) + "  opt/int8"]
        by_shape: dict[str, dict[str, dict]] = {}
        for row in self.layers:
            s = row["shape"]
            key = f"{s['h']}x{s['w']}x{s['cin']}->{s['cout']} {s['k']}x{s['k']} /{s['stride']}"
            by_shape.setdefault(key, {})[row["variant"]] = row
        for key, rows in by_shape.items():
            macs = rows["onebit_ref"]["macs"]
            cells = "  ".join(f"{rows[v]['instructions']:>19,} {rows[v]['per_mac']:>6.3f}" for v in VARIANTS)
            ratio = rows["onebit_opt"]["instructions"] / rows["int8_ref"]["instructions"]
            lines.append(f"{key:30} {macs:>9,}  {cells}  {ratio:>8.3f}")
        lines.append("kernel code size (bytes, text+rodata): "
                     + ", ".join(f"{k} {v}" for k, v in self.code_size.items()))
        if self.models:
            lines.append(f"whole models, one inference ({self.unit} under QEMU; MLPerf Tiny's 6.8/2.2/1.7 "
                         "cycles/MAC anchors are cycles on silicon):")
            lines.append(f"{'model':14} {'variant':14} {'fused':>5} {'arena B':>8} {'MACs':>11} {self.unit:>13} "
                         f"{'/MAC':>7}  slowest ops")
            for m in self.models:
                slowest = sorted(m["ops"], key=lambda op: -op["instructions"])[:3]
                ops = ", ".join(f"#{op['index']} {op['op']} {op['instructions'] / m['instructions']:.0%}"
                                for op in slowest)
                lines.append(f"{m['name']:14} {m['variant'] or '-':14} {'yes' if m['fused'] else 'no':>5} "
                             f"{m['arena_bytes'] or 0:>8,} {m['macs']:>11,} {m['instructions']:>13,} "
                             f"{m['per_mac']:>7.3f}  {ops}")
        lines += self.side_by_side()
        return "\n".join(lines)

    def side_by_side(self) -> list[str]:
        """Per network with TFLM rows: the int8 twin under TFLM, the 1-bit graph under TFLM
        and under the static runtime (the board's variant, fused and not), against the int8
        twin."""
        lines = []
        for name in dict.fromkeys(m["name"] for m in self.models if m["runtime"] == "tflm"):
            rows = [m for m in self.models if m["name"] == name and (
                m["runtime"] == "tflm" or m["variant"] == self.kernel_variant)]
            int8 = next((m for m in rows if m["graph"] == "int8"), None)
            if int8 is None:
                continue
            lines.append(f"{name} on {self.board}, one inference ({self.unit}); int8 TFLM / this: how many times "
                         "fewer than the int8 twin under TFLM")
            width = max(len(_kernels_label(m)) for m in rows)
            lines.append(f"{'graph':7} {'runtime':8} {'kernels':{width}} {self.unit:>13} {'/MAC':>6} {'int8/this':>9} "
                         f"{'flash B':>9} {'arena B':>9}")
            for m in rows:
                kernels = _kernels_label(m)
                lines.append(f"{m['graph']:7} {m['runtime']:8} {kernels:{width}} {m['instructions']:>13,} "
                             f"{m['per_mac']:>6.2f} {int8['instructions'] / m['instructions']:>9.2f} "
                             f"{m['flash_bytes']:>9,} {m['arena_bytes'] or 0:>9,}")
            lines.append("  per op type under TFLM (instructions, all ops of the type):")
            for m in rows:
                if m["runtime"] == "tflm":
                    by_type: dict[str, int] = {}
                    for op in m["ops"]:
                        by_type[op["op"]] = by_type.get(op["op"], 0) + op["instructions"]
                    lines.append(f"  {m['graph']:7} {_kernels_label(m):{width}} " + ", ".join(
                        f"{op} {count:,}" for op, count in sorted(by_type.items(), key=lambda kv: -kv[1])))
        return lines


def bench(board_id: str, json_path: Path | None = None, build_dir: Path | None = None,
          seed: int = 0, models: Sequence[str] | None = None, variant: str | None = None,
          tflm: Path | None = None) -> BenchReport:
    """Build, run and report the kernel benchmark on an emulated board, and count whole
    inferences of `models` (names in BENCH_MODELS; default all, () for none) with the
    kernel variant (default: the board's) and with the reference; with `tflm` (a TFLM
    tree, mcu_onebit/tflm_tree.py) also each model's int8 twin and its 1-bit graph under
    that TFLM. The JSON report is written to json_path when given. Every output is also
    checked bit for bit."""
    tree = tflm_tree.locate(tflm, "bench --tflm") if tflm is not None else None
    board = get_board(board_id)
    variant = variant or board.kernel_variant
    known = {spec.name: spec for spec in BENCH_MODELS}
    unknown = [name for name in models or () if name not in known]
    if unknown:
        raise OnebitError(f"unknown bench model {unknown[0]!r}; choose from {', '.join(known)}")
    if json_path is not None:
        check_file_target(json_path, "--json", ".json")
    rng = np.random.default_rng(seed)
    cases = [random_case(rng, (1, h, w, cin), cout, k, stride, "SAME", "RELU")
             for h, w, cin, cout, k, stride in BENCH_SHAPES]
    build_dir = Path(build_dir or Path("build") / "bench" / board.id)
    app = build_kernel_app(board, cases, build_dir, variant)
    results = run_kernel_app(app, board, len(cases))
    bad = [(i, r.failed) for i, r in enumerate(results) if r.failed]
    if bad:
        raise OnebitError(f"kernel outputs differ from the reference on {board.id}: {bad}")
    report = BenchReport(board=board.id, kernel_variant=variant,
                         unit=board.counter_unit, code_size=code_size(app.objects))
    for case, result in zip(cases, results):
        for kernel in VARIANTS:
            count = result.counts[kernel]
            report.layers.append({"shape": case.shape(), "variant": kernel, "instructions": count,
                                  "macs": case.macs, "per_mac": round(count / case.macs, 4)})
    for name in (known if models is None else models):
        fused = convert_bench_model(known[name], board, build_dir / name, seed)
        for converted in (fused, fused.unfused(build_dir / name / "model_unfused.c")):
            for kernels in dict.fromkeys((variant, "reference")):
                folder = build_dir / name / f"{kernels}{'' if converted.fused else '-unfused'}"
                report.models.append(run_model(converted, board, kernels, folder))
        if tree is not None:
            objects = build_dir / "tflm-objects" / hashlib.sha256(str(tree.path).encode()).hexdigest()[:16]
            # The int8 twin on the library's kernels (the baseline), the 1-bit graph as
            # convert makes it (project kernels where faster) and on the library's.
            for graph, kernels in (("int8", "library"), ("onebit", "project"), ("onebit", "library")):
                report.models.append(run_tflm_model(fused, graph, tree, board, build_dir / name / f"tflm-{graph}-{kernels}",
                                                    objects, kernels))
    if json_path is not None:
        write_text_atomic(Path(json_path), json.dumps(report.to_dict(), indent=2) + "\n")
    return report
