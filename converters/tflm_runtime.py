"""The TFLM runtime: the 1-bit graph as a .tflite array run by TensorFlow Lite Micro.

generate() emits three files for the project's src/ (from templates/tflm_*.j2):
model_data.cc/.h hold the flatbuffer as an aligned array; model.cc implements
firmware/app/model.h on tflite::MicroInterpreter with a MicroMutableOpResolver that
registers exactly the builtin ops the graph uses plus ONEBIT_CONV2D
(firmware/runtime/tflm/onebit_conv2d_tflm.cc, copied beside them by project.py).

Arena size, an estimate (TFLM plans it only on the device), written down here once:

    arena = round_up_1k(1.25 * (activations + bookkeeping) + scratch)
    activations  TFLM-style greedy plan of every non-constant tensor, graph input and
                 output included (TFLM keeps them in the arena), 16-byte aligned
    bookkeeping  2 KiB fixed (interpreter, allocator, subgraph) + 64 B per tensor
                 (TfLiteEvalTensor, dims, planner records) + 128 B per op (node,
                 registration, op data) + 8 B per output channel of every conv
                 (per-channel multiplier and shift, CONV_2D and ONEBIT_CONV2D alike)
    scratch      the largest CONV_2D/DEPTHWISE_CONV_2D im2col buffer CMSIS-NN may ask for
                 (2 * KH * KW * Cin bytes) and MEAN's int32 accumulator (4 B per output)

The device reports what the interpreter really used (identity `arena_used_bytes`), so
the margin can be checked on a board.
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
from .onebit_conv2d import OP_NAME
from .static_runtime import identity_json, memory_plan

# TFLite builtin op -> MicroMutableOpResolver method; present in both the Arduino
# library (2023-02) and current TFLM.
ADD_CALLS = {
    "ADD": "AddAdd", "AVERAGE_POOL_2D": "AddAveragePool2D", "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize",
    "FULLY_CONNECTED": "AddFullyConnected", "HARD_SWISH": "AddHardSwish", "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean", "MUL": "AddMul", "PAD": "AddPad", "PADV2": "AddPadV2",
    "QUANTIZE": "AddQuantize", "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "SOFTMAX": "AddSoftmax", "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
}
ARENA_FIXED_BYTES = 2048
ARENA_PER_TENSOR = 64
ARENA_PER_OP = 128
ARENA_PER_CHANNEL = 8
ARENA_MARGIN = 1.25
RUNTIME_SOURCES = ("onebit_conv2d_tflm.cc", "onebit_conv2d_tflm.h", "tflm_compat.h")  # firmware/runtime/tflm/


@dataclass(frozen=True)
class TflmModel:
    files: dict[str, str]  # file name -> text, for the project's src/
    ops: list[str]  # builtin op names the graph uses, sorted (ONEBIT_CONV2D is registered apart)
    arena_bytes: int


def arena_estimate(model) -> int:
    """The arena size the generated model.cc allocates (see the module docstring)."""
    graph = model.subgraphs[0]
    channels = scratch = 0
    for op in graph.operators:
        name = g.op_name(model, op)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", OP_NAME):
            channels += int(graph.tensors[op.outputs[0]].shape[-1])
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            _, k_h, k_w, _ = graph.tensors[op.inputs[1]].shape
            scratch = max(scratch, 2 * int(k_h) * int(k_w) * int(graph.tensors[op.inputs[0]].shape[-1]))
        if name == "MEAN":
            scratch = max(scratch, 4 * int(np.prod(graph.tensors[op.outputs[0]].shape)))
    bookkeeping = (ARENA_FIXED_BYTES + ARENA_PER_TENSOR * len(graph.tensors) + ARENA_PER_OP * len(graph.operators)
                   + ARENA_PER_CHANNEL * channels)
    total = int(ARENA_MARGIN * (memory_plan(model, include_io=True).arena_bytes + bookkeeping)) + scratch
    return (total + 1023) // 1024 * 1024


def _used_ops(model) -> list[str]:
    graph = model.subgraphs[0]
    if len(model.subgraphs) != 1 or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise OnebitError("the tflm runtime here needs a graph with one input, one output and one subgraph")
    names = {g.op_name(model, op) for op in graph.operators}
    unknown = sorted(names - set(ADD_CALLS) - {OP_NAME})
    if unknown:
        raise OnebitError(f"the tflm runtime has no resolver entry for {', '.join(unknown)}; "
                          f"add it to ADD_CALLS in converters/tflm_runtime.py")
    return sorted(names - {OP_NAME})


def _c_bytes(data: bytes, per_line: int = 16) -> list[str]:
    return [", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) + "," for i in range(0, len(data), per_line)]


def runtime_dir() -> Path:
    from mcu_onebit.paths import firmware_dir

    return firmware_dir() / "runtime" / "tflm"


def generate(onebit_graph: bytes, model_hash: str, source_name: str, board=None) -> TflmModel:
    """Files for a TFLM project running `onebit_graph`; `board` is accepted for symmetry
    with the other runtime and for future per-board choices (it changes nothing today)."""
    model = g.load(onebit_graph)
    ops = _used_ops(model)
    arena = arena_estimate(model)
    graph = model.subgraphs[0]
    identity = json.dumps(identity_json(model, model_hash), separators=(",", ":"))
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
            **common, ops=ops, add_calls=ADD_CALLS, resolver_size=len(ops) + 1, arena_bytes=arena,
            input_bytes=int(np.prod(graph.tensors[graph.inputs[0]].shape)),
            output_bytes=int(np.prod(graph.tensors[graph.outputs[0]].shape)),
            identity_head=json.dumps(identity[:-1]),  # the object without its "}": the device appends fields
        ),
    }
    for name in RUNTIME_SOURCES:
        files[name] = (runtime_dir() / name).read_text()
    return TflmModel(files=files, ops=ops, arena_bytes=arena)
