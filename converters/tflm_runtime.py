"""The TFLM runtime: the 1-bit graph as a .tflite array run by TensorFlow Lite Micro.

generate() emits three files for the project's src/ (from templates/tflm_*.j2):
model_data.cc/.h hold the flatbuffer as an aligned array; model.cc implements
firmware/app/model.h on tflite::MicroInterpreter with a MicroMutableOpResolver that
registers exactly the builtin ops the graph uses plus ONEBIT_CONV2D
(firmware/runtime/tflm/onebit_conv2d_tflm.cc, copied beside them by project.py), and
runs some builtin ops on the project's kernels rather than the library's
(kernel_choice: ADD, MUL and PAD for speed, MEAN for exactness). With the project's
kernels, the embedded graph also has its chains of element-wise ops by per-channel
constants (batch norms) rewritten as ONEBIT_CHANNEL_TABLE ops, within a flash budget
(converters/channel_table.py rewrite_channel_tables): TFLM runs the graph op by op, so
the table must be in the graph.

Arena size: converters/tflm_planner.py computes TFLM's own plan of activations and
kernel scratch (GreedyMemoryPlanner, exact) for the board's TFLM library and kernel
variant, adds an estimate of TFLM's persistent allocations with a margin, and rounds up
to 1 KiB. The device reports what the interpreter really used (identity
`arena_used_bytes`), so the margin can be checked on a board.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from mcu_onebit import __version__
from mcu_onebit.errors import OnebitError

from . import tflite_graph as g
from .channel_table import OP_NAME as TABLE_OP_NAME, rewrite_channel_tables
from .onebit_conv2d import OP_NAME
from . import tflm_planner as planner
from .static_runtime import identity_text, output_quant_c
from .tflm_planner import TflmPlan

# TFLite builtin op -> MicroMutableOpResolver method; present in both the Arduino
# library (2023-02) and current TFLM.
ADD_CALLS = {
    "ADD": "AddAdd", "AVERAGE_POOL_2D": "AddAveragePool2D", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize",
    "FULLY_CONNECTED": "AddFullyConnected", "HARD_SWISH": "AddHardSwish", "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D", "MAXIMUM": "AddMaximum", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MUL": "AddMul", "PAD": "AddPad", "PADV2": "AddPadV2",
    "QUANTIZE": "AddQuantize", "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "SOFTMAX": "AddSoftmax", "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
}
RUNTIME_SOURCES = ("onebit_conv2d_tflm.cc", "onebit_conv2d_tflm.h", "onebit_conv2d_options.cc",
                   "onebit_conv2d_options.h", "mean_tflm.cc", "mean_tflm.h", "add_tflm.cc", "add_tflm.h",
                   "mul_tflm.cc", "mul_tflm.h", "pad_tflm.cc", "pad_tflm.h", "channel_table_tflm.cc",
                   "channel_table_tflm.h", "elementwise_tflm.h",
                   "tflm_compat.h")  # firmware/runtime/tflm/

# Builtin ops the project's own kernels (firmware/kernels/, bit-exact with TFLite's
# reference kernels) run under TFLM, and why. Faster: ADD, MUL and PAD take fewer
# instructions than both libraries' (CMSIS-NN's included) on qemu-m4, docs/benchmarks.md;
# `convert --tflm-kernels library` keeps the library's for them. Exact: MEAN always, since
# the Arduino library's int8 MEAN rescales in float and differs from the twin. The
# library's AVERAGE_POOL_2D stays (CMSIS-NN's is the faster one).
FASTER_KERNELS = ("ADD", "MUL", "PAD")
EXACT_KERNELS = ("MEAN",)
KERNEL_CHOICES = ("project", "library")  # convert --tflm-kernels


def kernel_choice(ops: list[str], kernels: str = "project") -> dict[str, str]:
    """Which kernel runs each builtin op of the graph under TFLM: "project" or "library"."""
    if kernels not in KERNEL_CHOICES:
        raise OnebitError(f"unknown --tflm-kernels {kernels!r}; choose from {', '.join(KERNEL_CHOICES)}")
    own = set(EXACT_KERNELS) | (set(FASTER_KERNELS) if kernels == "project" else set())
    return {op: "project" if op in own else "library" for op in ops}


def library_kernels(choice: dict[str, str]) -> list[str]:
    """Ops whose library kernel the firmware links: those it runs, and MEAN, whose project
    kernel replaces it through the resolver's FindOp (the Arduino library's AddMean()
    takes no registration) while AddMean() still names the library's."""
    return sorted(op for op, kernel in choice.items() if kernel == "library" or op in EXACT_KERNELS)


@dataclass(frozen=True)
class TflmModel:
    files: dict[str, str]  # file name -> text, for the project's src/
    ops: list[str]  # builtin op names the embedded graph uses, sorted (the custom ops apart)
    custom_ops: list[str]  # ONEBIT_CONV2D, then ONEBIT_CHANNEL_TABLE if the graph has tables
    plan: TflmPlan  # TFLM's arena plan for the board's library and kernel variant
    kernels: dict[str, str]  # kernel_choice(): builtin op -> "project" or "library"

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes


def tflm_plan(model, board=None, library: str | None = None) -> TflmPlan:
    """TFLM's plan for the graph in a generated project on `board` (its TFLM library, or
    `library`, and its kernel variant; MEAN on the project's kernel); without a board,
    current TFLM with the reference kernels."""
    if board is None:
        return planner.plan(model, library or "tflm", own_mean=True)
    return planner.plan(model, library or planner.library_of(board), board.kernel_variant, own_mean=True)


def _used_ops(model) -> list[str]:
    graph = model.subgraphs[0]
    if len(model.subgraphs) != 1 or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise OnebitError("the tflm runtime here needs a graph with one input, one output and one subgraph")
    names = {g.op_name(model, op) for op in graph.operators}
    unknown = sorted(names - set(ADD_CALLS) - {OP_NAME, TABLE_OP_NAME})
    if unknown:
        raise OnebitError(f"the tflm runtime has no resolver entry for {', '.join(unknown)}; "
                          f"add it to ADD_CALLS in converters/tflm_runtime.py")
    return sorted(names - {OP_NAME, TABLE_OP_NAME})


def _c_bytes(data: bytes, per_line: int = 16) -> list[str]:
    return [", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) + "," for i in range(0, len(data), per_line)]


def runtime_dir() -> Path:
    from mcu_onebit.paths import firmware_dir

    return firmware_dir() / "runtime" / "tflm"


def tflm_graph(onebit_graph: bytes, kernels: str = "project", table_budget: int | None = 0) -> tuple[bytes, int]:
    """The graph a TFLM project embeds, and its table bytes: with the project's kernels,
    the 1-bit graph's chains of element-wise ops by per-channel constants as
    ONEBIT_CHANNEL_TABLE ops within `table_budget` bytes (None: no limit; 0: none); with
    the library's ("library"), the graph as it is."""
    if kernels == "project" and table_budget != 0:
        return rewrite_channel_tables(onebit_graph, table_budget)
    return onebit_graph, 0


def generate(onebit_graph: bytes, model_hash: str, source_name: str, board=None, kernels: str = "project",
             library: str | None = None, arena_bytes: int | None = None) -> TflmModel:
    """Files for a TFLM project running `onebit_graph` (tflm_graph's) on `board` (whose
    TFLM library and kernel variant size the arena; None: current TFLM, reference
    kernels); `kernels`: the project's kernels where faster ("project") or the library's
    ("library"). `library` overrides the board's TFLM library for the arena plan,
    `arena_bytes` the arena itself (bench, which reports what TFLM used)."""
    model = g.load(onebit_graph)
    ops = _used_ops(model)
    tabled = any(g.op_name(model, op) == TABLE_OP_NAME for op in model.subgraphs[0].operators)
    custom_ops = [OP_NAME, *([TABLE_OP_NAME] if tabled else [])]
    choice = kernel_choice(ops, kernels)
    plan = tflm_plan(model, board, library)
    arena = arena_bytes or plan.arena_bytes
    graph = model.subgraphs[0]
    identity = identity_text(model, model_hash)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )
    common = dict(version=__version__, source=source_name, model_hash=model_hash)
    files = {
        "model_data.h": env.get_template("tflm_model_data.h.j2").render(**common),
        "model_data.cc": env.get_template("tflm_model_data.cc.j2").render(
            **common, length=len(onebit_graph), lines=_c_bytes(onebit_graph)),
        "model.cc": env.get_template("tflm_model.cc.j2").render(
            **common, ops=ops, add_calls=ADD_CALLS, kernels=choice, faster_kernels=FASTER_KERNELS, tables=TABLE_OP_NAME in custom_ops,
            resolver_size=len(ops) + len(custom_ops), arena_bytes=arena, plan=plan,
            input_bytes=int(np.prod(graph.tensors[graph.inputs[0]].shape)),
            output_bytes=int(np.prod(graph.tensors[graph.outputs[0]].shape)),
            identity_head=json.dumps(identity[:-1]),  # the object without its "}": the device appends fields
            **output_quant_c(model),
        ),
    }
    for name in RUNTIME_SOURCES:
        files[name] = (runtime_dir() / name).read_text()
    return TflmModel(files=files, ops=ops, custom_ops=custom_ops, plan=plan, kernels=choice)
