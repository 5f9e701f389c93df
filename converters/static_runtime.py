"""The static runtime: the 1-bit graph as C that calls the kernels in graph order.

Two stages per op, as TinyEngine does: parse the operator into the kernel's typed
parameters (converters/quant.py, converters/onebit_conv2d.py), then emit its constants
and its call. Activation tensors live in one arena at offsets from memory_plan; the
graph input and output are the caller's buffers. Each ONEBIT_CONV2D gets scratch memory
from the same arena (ob_onebit_conv2d_ex), reused by every op as the plan allows.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path

import jinja2
import numpy as np

from mcu_onebit import __version__
from mcu_onebit.errors import OnebitError

from . import tflite_graph as g
from .memory_plan import Buffer, MemoryPlan, aligned as _aligned, onebit_scratch_bytes, plan_memory
from .onebit_conv2d import OP_NAME, OnebitConvOptions, compute_padding, decode_options, onebit_conv2d_params
from .quant import (PadParams, TensorQuant, add_params, average_pool_params, conv_quant, maximum_params,
                    mean_params, mul_params, pad_params)

C_TYPES = {np.int8: "int8_t", np.uint8: "uint8_t", np.int32: "int32_t"}


@dataclass(frozen=True)
class EmittedOp:
    index: int
    name: str
    comment: str
    headers: tuple[str, ...]
    declarations: str
    calls: tuple[str, ...]  # kernel calls in order, each returning ob_status


@dataclass(frozen=True)
class StaticModel:
    source: str  # model.c
    plan: MemoryPlan
    ops: list[str]
    constant_bytes: int  # weights, biases and parameters in flash


class _Emitter:
    """Holds the graph and the plan while each op is emitted."""

    def __init__(self, model, plan: MemoryPlan):
        self.model = model
        self.graph = model.subgraphs[0]
        self.plan = plan
        self.constant_bytes = 0

    def tensor(self, index: int):
        return self.graph.tensors[index]

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).shape]

    def tq(self, index: int) -> TensorQuant:
        scale, zero_point = g.quant(self.tensor(index)).per_tensor
        return TensorQuant(scale, zero_point)

    def pointer(self, index: int, prefix: str, ctype: str = "int8_t") -> tuple[str, str]:
        """(declarations, C expression) for tensor `index` as a kernel argument."""
        if index == self.graph.inputs[0]:
            return "", "input"
        if index == self.graph.outputs[0]:
            return "", "output"
        data = g.tensor_data(self.model, self.tensor(index))
        if data is None:
            return "", f"(arena + {self.plan.offsets[index]})"
        return self.array(prefix, data), prefix

    def array(self, name: str, values) -> str:
        values = np.asarray(values)
        ctype = C_TYPES[values.dtype.type]
        self.constant_bytes += values.nbytes
        body = ", ".join(str(int(v)) for v in values.ravel())
        return f"static const {ctype} {name}[{values.size}] __attribute__((aligned(4))) = {{{body}}};\n"

    def struct(self, ctype: str, name: str, params, arrays: dict[str, str]) -> str:
        parts = []
        for f in fields(params):
            value = arrays.get(f.name, getattr(params, f.name))
            parts.append(f"    .{f.name} = {value},")
        self.constant_bytes += 4 * len(parts)
        return f"static const {ctype} {name} = {{\n" + "\n".join(parts) + "\n};\n"


def _conv(e: _Emitter, op, i: int, options: OnebitConvOptions, filter_values: np.ndarray, in_channels_of_filter: int,
          kind: str, ctype: str, fn: str, header: str, src: str | None = None, extra_args: str = "") -> EmittedOp:
    """Constants and call of a conv kernel; both conv kernels take the same parameters.
    src replaces the input tensor (a padded copy), extra_args end the call (scratch)."""
    inp, filt, out = op.inputs[0], op.inputs[1], op.outputs[0]
    bias = op.inputs[2] if len(op.inputs) > 2 else -1
    in_shape = e.shape(inp)
    quant = conv_quant(e.tq(inp), g.quant(e.tensor(filt)).scale, e.tq(out), options.activation)
    run_shape = in_shape if src is None else [*in_shape[:3], in_channels_of_filter]  # a padded copy's channels
    params = onebit_conv2d_params(run_shape, [*filter_values.shape[:3], in_channels_of_filter], options, quant)
    p = f"op{i}"
    decls = e.array(f"{p}_filter", filter_values) + e.array(f"{p}_multiplier", np.int32(params.out_multiplier))
    decls += e.array(f"{p}_shift", np.int32(params.out_shift))
    bias_expr = "0"
    if bias >= 0:
        decls += e.array(f"{p}_bias", g.tensor_data(e.model, e.tensor(bias)))
        bias_expr = f"{p}_bias"
    decls += e.struct(ctype, f"{p}_params", params, {"out_multiplier": f"{p}_multiplier", "out_shift": f"{p}_shift"})
    src = src or e.pointer(inp, "")[1]
    _, dst = e.pointer(out, "")
    comment = (f"{in_shape[1]}x{in_shape[2]}x{in_shape[3]} -> {params.out_h}x{params.out_w}x{params.out_c}, "
               f"{params.k_h}x{params.k_w}/{params.stride_h}")
    return EmittedOp(i, kind, comment, (header,), decls, (f"{fn}(&{p}_params, {src}, {p}_filter, {bias_expr}, {dst}{extra_args})",))


def _onebit_scratch(model, op) -> tuple[int, int]:
    """(bytes of the channel-padded input copy, kernel scratch bytes) of an ONEBIT_CONV2D.

    An input whose channels are not a multiple of 8 (the stem: 1 or 3) is first copied
    with channels added up to the next multiple of 8, set to the input zero point: x - zp
    = 0 there, so they add nothing whatever their weight bits (the packed filter holds them
    already, as padding bits), and every kernel variant then runs its whole-byte path
    instead of a per-channel tail (on qemu-m4, 40 times fewer instructions for a 3-channel
    stem)."""
    graph = model.subgraphs[0]
    _, in_h, in_w, in_c = (int(d) for d in graph.tensors[op.inputs[0]].shape)
    _, k_h, k_w, packed_depth = (int(d) for d in graph.tensors[op.inputs[1]].shape)
    copy = in_h * in_w * 8 * packed_depth if in_c % 8 else 0
    return copy, onebit_scratch_bytes(k_h, k_w, 8 * packed_depth)


def _onebit_conv2d(e: _Emitter, op, i: int) -> EmittedOp:
    options = decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    packed = g.tensor_data(e.model, e.tensor(op.inputs[1]))
    in_shape = e.shape(op.inputs[0])
    copy, scratch = _onebit_scratch(e.model, op)
    base = e.plan.scratch_offsets.get(i)
    scratch_arg = f", (arena + {base + _aligned(copy)})" if scratch else ", NULL"
    if not copy:
        return _conv(e, op, i, options, packed, in_shape[3], OP_NAME, "ob_onebit_conv2d_params",
                     "ob_onebit_conv2d_ex", "onebit_conv2d.h", extra_args=scratch_arg)
    padded = f"(arena + {base})"
    emitted = _conv(e, op, i, options, packed, packed.shape[3] * 8, OP_NAME, "ob_onebit_conv2d_params",
                    "ob_onebit_conv2d_ex", "onebit_conv2d.h", src=padded, extra_args=scratch_arg)
    pad = PadParams(in_h=in_shape[1], in_w=in_shape[2], in_c=in_shape[3], pad_top=0, pad_bottom=0, pad_left=0,
                    pad_right=0, pad_front=0, pad_back=packed.shape[3] * 8 - in_shape[3],
                    pad_value=e.tq(op.inputs[0]).zero_point)
    _, src = e.pointer(op.inputs[0], "")
    return dataclasses.replace(
        emitted, headers=(*emitted.headers, "pad.h"),
        comment=f"{emitted.comment}, input channels padded to {packed.shape[3] * 8}",
        declarations=emitted.declarations + e.struct("ob_pad_params", f"op{i}_channel_pad", pad, {}),
        calls=(f"ob_pad(&op{i}_channel_pad, {src}, {padded})", *emitted.calls))


def _conv2d_int8(e: _Emitter, op, i: int) -> EmittedOp:
    """A conv that stayed int8 (--allow-float)."""
    o = op.builtinOptions
    options = OnebitConvOptions(o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor,
                                g.PADDING_NAMES[o.padding], g.ACTIVATION_NAMES[o.fusedActivationFunction])
    weights = g.tensor_data(e.model, e.tensor(op.inputs[1]))
    return _conv(e, op, i, options, weights, weights.shape[3], "CONV_2D", "ob_conv2d_int8_params",
                 "ob_conv2d_int8", "conv_int8.h")


def _binary_elementwise(kind: str):
    make_params = {"ADD": add_params, "MUL": mul_params}.get(kind)
    ctype, fn, header = f"ob_{kind.lower()}_params", f"ob_{kind.lower()}", f"{kind.lower()}.h"

    def emit(e: _Emitter, op, i: int) -> EmittedOp:
        a, b, out = op.inputs[0], op.inputs[1], op.outputs[0]
        if kind == "MAXIMUM":  # no fused activation
            params = maximum_params(e.tq(a), e.tq(b), e.tq(out), e.shape(a), e.shape(b), e.shape(out))
        else:
            activation = g.ACTIVATION_NAMES[op.builtinOptions.fusedActivationFunction]
            params = make_params(e.tq(a), e.tq(b), e.tq(out), activation, e.shape(a), e.shape(b), e.shape(out))
        p = f"op{i}"
        decl_a, src_a = e.pointer(a, f"{p}_input1")
        decl_b, src_b = e.pointer(b, f"{p}_input2")
        _, dst = e.pointer(out, "")
        decls = decl_a + decl_b + e.struct(ctype, f"{p}_params", params, {})
        return EmittedOp(i, kind, "x".join(map(str, e.shape(out))), (header,), decls,
                         (f"{fn}(&{p}_params, {src_a}, {src_b}, {dst})",))

    return emit


def _mean(e: _Emitter, op, i: int) -> EmittedOp:
    inp, axes, out = op.inputs[0], op.inputs[1], op.outputs[0]
    axis_values = [int(a) for a in g.tensor_data(e.model, e.tensor(axes)).ravel()]
    params = mean_params(e.tq(inp), e.tq(out), e.shape(inp), axis_values)
    p = f"op{i}"
    _, src = e.pointer(inp, "")
    _, dst = e.pointer(out, "")
    return EmittedOp(i, "MEAN", f"axes {axis_values}", ("mean.h",), e.struct("ob_mean_params", f"{p}_params", params, {}),
                     (f"ob_mean(&{p}_params, {src}, {dst})",))


def _average_pool(e: _Emitter, op, i: int) -> EmittedOp:
    inp, out = op.inputs[0], op.outputs[0]
    o = op.builtinOptions
    in_shape, out_shape = e.shape(inp), e.shape(out)
    padding = g.PADDING_NAMES[o.padding]
    _, pad_top = compute_padding(padding, in_shape[1], o.filterHeight, o.strideH, 1)
    _, pad_left = compute_padding(padding, in_shape[2], o.filterWidth, o.strideW, 1)
    params = average_pool_params(e.tq(inp), e.tq(out), in_shape, out_shape, (o.filterHeight, o.filterWidth),
                                 (o.strideH, o.strideW), (pad_top, pad_left),
                                 g.ACTIVATION_NAMES[o.fusedActivationFunction])
    p = f"op{i}"
    _, src = e.pointer(inp, "")
    _, dst = e.pointer(out, "")
    return EmittedOp(i, "AVERAGE_POOL_2D", f"{o.filterHeight}x{o.filterWidth}/{o.strideH} {padding}",
                     ("average_pool.h",), e.struct("ob_average_pool_params", f"{p}_params", params, {}),
                     (f"ob_average_pool(&{p}_params, {src}, {dst})",))


def _pad(e: _Emitter, op, i: int) -> EmittedOp:
    inp, paddings, out = op.inputs[0], op.inputs[1], op.outputs[0]
    params = pad_params(e.tq(inp), e.tq(out), e.shape(inp), g.tensor_data(e.model, e.tensor(paddings)))
    p = f"op{i}"
    _, src = e.pointer(inp, "")
    _, dst = e.pointer(out, "")
    return EmittedOp(i, "PAD", "x".join(map(str, e.shape(out))), ("pad.h",),
                     e.struct("ob_pad_params", f"{p}_params", params, {}), (f"ob_pad(&{p}_params, {src}, {dst})",))


EMITTERS = {
    OP_NAME: _onebit_conv2d,
    "ADD": _binary_elementwise("ADD"),
    "MUL": _binary_elementwise("MUL"),
    "MAXIMUM": _binary_elementwise("MAXIMUM"),
    "CONV_2D": _conv2d_int8,
    "MEAN": _mean,
    "AVERAGE_POOL_2D": _average_pool,
    "PAD": _pad,
}


def _check_supported(model) -> None:
    graph = model.subgraphs[0]
    for op in graph.operators:
        name = g.op_name(model, op)
        if name not in EMITTERS:
            out = graph.tensors[op.outputs[0]].name.decode()
            raise OnebitError(
                f"the static runtime has no kernel for {name} (producing {out}); "
                f"it supports {', '.join(EMITTERS)}: change the architecture or use --runtime tflm"
            )
    if len(graph.inputs) != 1 or len(graph.outputs) != 1 or len(model.subgraphs) != 1:
        raise OnebitError("the static runtime needs a graph with one input, one output and one subgraph")


# Kernels that compute output[i] from input1[i] and input2[i] (or a broadcast constant)
# in index order, each value read before it is written: the output may take the buffer
# of a full-size input that dies there (the in-place form in docs/onebit_conv2d.md).
IN_PLACE_OPS = ("ADD", "MUL", "MAXIMUM")


def memory_plan(model, include_io: bool = False, in_place: bool = True) -> MemoryPlan:
    """Plan every activation tensor, and in the static runtime every ONEBIT_CONV2D's
    scratch (ONEBIT_CONV2D_SCRATCH_MAX, alive during its op). The graph input and output
    are caller-owned in the static runtime. An IN_PLACE_OPS output shares the buffer of a
    same-size input whose last reader it is (in_place=False: a buffer of its own).
    include_io gives TFLM's view instead: input and output in the arena too, no scratch
    (TFLM plans kernel scratch itself) and nothing in place."""
    graph = model.subgraphs[0]
    first: dict[int, int] = {int(t): -1 for t in graph.inputs} if include_io else {}
    last: dict[int, int] = {}
    for i, op in enumerate(graph.operators):
        for t in op.outputs:
            first.setdefault(int(t), i)
        for t in op.inputs:
            if t >= 0:
                last[int(t)] = i
    if include_io:
        last.update({int(t): len(graph.operators) for t in graph.outputs})
    skip = set() if include_io else {int(graph.inputs[0]), int(graph.outputs[0])}

    def size(t: int) -> int:
        return int(np.prod(graph.tensors[t].shape)) * np.dtype(g.TENSOR_DTYPES[graph.tensors[t].type]).itemsize

    storage = {t: t for t in first if t not in skip}  # tensor -> the tensor whose buffer it uses
    if in_place and not include_io:
        for i, op in enumerate(graph.operators):
            out = int(op.outputs[0])
            if g.op_name(model, op) not in IN_PLACE_OPS or out not in storage:
                continue
            host = next((int(t) for t in op.inputs if int(t) in storage and last[int(t)] == i
                         and size(int(t)) == size(out)), None)
            if host is not None:
                storage[out] = storage[host]
    members: dict[int, list[int]] = {}
    for t, root in storage.items():
        members.setdefault(root, []).append(t)
    buffers = [Buffer(root, size(root), first[root], max(last.get(t, first[t]) for t in group))
               for root, group in members.items()]
    if not include_io:
        for i, op in enumerate(graph.operators):
            if g.op_name(model, op) == OP_NAME:
                copy, scratch = _onebit_scratch(model, op)
                if copy + scratch > 0:
                    buffers.append(Buffer(i, _aligned(copy) + scratch, i, i, scratch=True))
    plan = plan_memory(buffers)
    return dataclasses.replace(plan, offsets={t: plan.offsets[root] for t, root in storage.items()})


def identity_text(model, model_hash: str) -> str:
    """The model's identity as both runtimes compile it into ob_model.identity (compact
    JSON); `convert` sizes the app's receive buffer from its length."""
    graph = model.subgraphs[0]

    def describe(index: int) -> dict:
        tensor = graph.tensors[index]
        scale, zero_point = g.quant(tensor).per_tensor
        return {"shape": [int(d) for d in tensor.shape], "dtype": "int8", "scale": scale, "zero_point": zero_point}

    identity = {"hash": model_hash, "input": describe(graph.inputs[0]), "output": describe(graph.outputs[0])}
    return json.dumps(identity, separators=(",", ":"))


def output_quant_c(model) -> dict:
    """ob_model's output_scale (a C float literal that round-trips the float32) and
    output_zero_point, for the templates' initialisers."""
    graph = model.subgraphs[0]
    scale, zero_point = g.quant(graph.tensors[graph.outputs[0]]).per_tensor
    return {"output_scale": f"{scale:.9e}f", "output_zero_point": zero_point}


def generate(onebit_graph: bytes, model_hash: str, source_name: str) -> StaticModel:
    model = g.load(onebit_graph)
    _check_supported(model)
    plan = memory_plan(model)
    emitter = _Emitter(model, plan)
    graph = model.subgraphs[0]
    ops = [EMITTERS[g.op_name(model, op)](emitter, op, i) for i, op in enumerate(graph.operators)]
    identity = identity_text(model, model_hash)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )
    source = env.get_template("static_model.c.j2").render(
        version=__version__, source=source_name, ops=ops, model_hash=model_hash,
        headers=sorted({header for op in ops for header in op.headers}), arena_bytes=plan.arena_bytes,
        input_bytes=int(np.prod(graph.tensors[graph.inputs[0]].shape)),
        output_bytes=int(np.prod(graph.tensors[graph.outputs[0]].shape)),
        identity=json.dumps(identity),  # a JSON string is a valid C string literal here
        **output_quant_c(model),
    )
    return StaticModel(source, plan, [op.name for op in ops], emitter.constant_bytes)
