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
from .channel_table import OP_NAME as TABLE_OP_NAME, ChannelTableParams, table_site, table_values
from .fusion import (ChannelChain, FusedConv, PlannedOp, find_channel_chains, find_fusions, find_pairs,
                     fused_scratch_bytes, is_im2col_stem, pipeline_writes_over_input, planned_ops)
from .memory_plan import Buffer, MemoryPlan, aligned as _aligned, onebit_scratch_bytes, plan_memory
from .onebit_conv2d import (OP_NAME, OnebitConvOptions, compute_padding, decode_options, im2col_filter,
                            onebit_conv2d_params)
from .quant import (TensorQuant, add_params, average_pool_params, conv_quant, maximum_params,
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
    table_bytes: int  # of them, the channel tables


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
          kind: str, ctype: str, fn: str, header: str, src: str | None = None, extra_args: str = "",
          dst: str | None = None, run_shape: list[int] | None = None) -> EmittedOp:
    """Constants and call of a conv kernel; both conv kernels take the same parameters.
    src replaces the input tensor, dst the output, run_shape the input's shape (the
    im2col stem's gathered rows), extra_args end the call (scratch)."""
    inp, filt, out = op.inputs[0], op.inputs[1], op.outputs[0]
    bias = op.inputs[2] if len(op.inputs) > 2 else -1
    in_shape = e.shape(inp)
    quant = conv_quant(e.tq(inp), g.quant(e.tensor(filt)).scale, e.tq(out), options.activation)
    run_shape = run_shape or in_shape
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
    dst = dst or e.pointer(out, "")[1]
    filter_shape = e.shape(filt)
    comment = (f"{in_shape[1]}x{in_shape[2]}x{in_shape[3]} -> {params.out_h}x{params.out_w}x{params.out_c}, "
               f"{filter_shape[1]}x{filter_shape[2]}/{options.stride_h}")
    return EmittedOp(i, kind, comment, (header,), decls, (f"{fn}(&{p}_params, {src}, {p}_filter, {bias_expr}, {dst}{extra_args})",))


@dataclass(frozen=True)
class Im2col:
    """The im2col stem (firmware/kernels/onebit_conv2d_im2col.h) of an ONEBIT_CONV2D whose
    input channels are not a multiple of 8 (the stem: 1 or 3): the conv as a 1x1 conv
    over each output pixel's taps gathered into `depth` bytes, so that every kernel
    variant runs its whole-byte path (on qemu-m4, 40 times fewer instructions than the
    per-channel tail for a 3-channel stem, and fewer than padding the channels to 8,
    whose bytes are 5/8 zero points)."""

    depth: int  # gathered bytes per output pixel: k_h * k_w * in_c rounded up to 8
    rows_per_call: int  # output rows gathered per kernel call
    scratch_bytes: int  # ob_onebit_conv2d_im2col_scratch_bytes


def _im2col(model, op) -> Im2col | None:
    if not is_im2col_stem(model, op):
        return None
    graph = model.subgraphs[0]
    _, in_h, in_w, in_c = (int(d) for d in graph.tensors[op.inputs[0]].shape)
    _, out_h, out_w, _ = (int(d) for d in graph.tensors[op.outputs[0]].shape)
    _, k_h, k_w, _ = (int(d) for d in graph.tensors[op.inputs[1]].shape)
    depth = -(-k_h * k_w * in_c // 8) * 8
    # As many rows as fit in what a copy of the input padded to 8 channels would take.
    rows = max(1, min(out_h, in_h * in_w * 8 // (out_w * depth)))
    return Im2col(depth, rows, _aligned(rows * out_w * depth) + onebit_scratch_bytes(1, 1, depth))


def _onebit_scratch(model, op) -> int:
    """Scratch bytes of an ONEBIT_CONV2D: the kernel's, or the im2col stem's."""
    stem = _im2col(model, op)
    if stem is not None:
        return stem.scratch_bytes
    _, k_h, k_w, packed_depth = (int(d) for d in model.subgraphs[0].tensors[op.inputs[1]].shape)
    return onebit_scratch_bytes(k_h, k_w, 8 * packed_depth)


def _onebit_conv2d(e: _Emitter, op, i: int) -> EmittedOp:
    options = decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    packed = g.tensor_data(e.model, e.tensor(op.inputs[1]))
    in_shape, out_shape = e.shape(op.inputs[0]), e.shape(op.outputs[0])
    scratch = _onebit_scratch(e.model, op)
    scratch_arg = f", (arena + {e.plan.scratch_offsets[i]})" if scratch else ", NULL"
    stem = _im2col(e.model, op)
    if stem is None:
        return _conv(e, op, i, options, packed, in_shape[3], OP_NAME, "ob_onebit_conv2d_params",
                     "ob_onebit_conv2d_ex", "onebit_conv2d.h", extra_args=scratch_arg)
    one_by_one = OnebitConvOptions(1, 1, 1, 1, "VALID", options.activation)
    conv = _conv(e, op, i, one_by_one, im2col_filter(packed, in_shape[3], stem.depth), stem.depth, OP_NAME, "ob_onebit_conv2d_params",
                 "ob_onebit_conv2d_im2col", "onebit_conv2d_im2col.h", run_shape=[1, out_shape[1], out_shape[2], stem.depth])
    _, k_h, k_w, _ = (int(d) for d in e.shape(op.inputs[1]))
    _, pad_top = compute_padding(options.padding, in_shape[1], k_h, options.stride_h, options.dilation_h)
    _, pad_left = compute_padding(options.padding, in_shape[2], k_w, options.stride_w, options.dilation_w)
    p = f"op{i}"
    fields = {"conv": f"&{p}_params", "in_h": in_shape[1], "in_w": in_shape[2], "in_c": in_shape[3], "k_h": k_h,
              "k_w": k_w, "stride_h": options.stride_h, "stride_w": options.stride_w,
              "dilation_h": options.dilation_h, "dilation_w": options.dilation_w, "pad_top": pad_top,
              "pad_left": pad_left, "rows_per_call": stem.rows_per_call}
    e.constant_bytes += 4 * len(fields)
    body = "".join(f"    .{k} = {v},\n" for k, v in fields.items())
    decls = conv.declarations + f"static const ob_onebit_conv2d_im2col_params {p}_im2col = {{\n{body}}};\n"
    _, src = e.pointer(op.inputs[0], "")
    _, dst = e.pointer(op.outputs[0], "")
    bias = f"{p}_bias" if len(op.inputs) > 2 and op.inputs[2] >= 0 else "NULL"
    call = f"ob_onebit_conv2d_im2col(&{p}_im2col, {src}, {p}_filter, {bias}, {dst}, (arena + {e.plan.scratch_offsets[i]}))"
    return dataclasses.replace(conv, comment=f"{conv.comment}, as a 1x1 conv over im2col rows of {stem.depth} bytes",
                               declarations=decls, calls=(call,))


def _fused_params(e: _Emitter, f: FusedConv) -> tuple[EmittedOp, str, list[str]]:
    """The constants of one fused conv (f.first aside): the conv's own (its EmittedOp,
    whose call is not used), its batch norm's channel table or row-sized MUL and ADD,
    the row-sized ADD of its epilogue and its ob_onebit_conv2d_fused_params `op<i>_fused`;
    with what it fuses, in words."""
    graph = e.graph
    op = graph.operators[f.conv]
    i = f.conv
    p = f"op{i}"
    options = decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    packed = g.tensor_data(e.model, e.tensor(op.inputs[1]))
    in_shape, out_shape = e.shape(op.inputs[0]), e.shape(op.outputs[0])
    conv = _conv(e, op, i, options, packed, in_shape[3], OP_NAME, "ob_onebit_conv2d_params", "ob_onebit_conv2d_ex",
                 "onebit_conv2d.h", src="NULL", dst="NULL")
    decls = conv.declarations
    fields = {"conv": f"&{p}_params"}
    parts = []

    def row_op(j: int, make_params, ctype: str, row: list[int], tag: str) -> None:
        nonlocal decls
        other = graph.operators[j]
        a, b, out = other.inputs[0], other.inputs[1], other.outputs[0]
        shapes = [row if g.tensor_data(e.model, e.tensor(t)) is None else e.shape(t) for t in (a, b)]
        activation = g.ACTIVATION_NAMES[other.builtinOptions.fusedActivationFunction]
        params = make_params(e.tq(a), e.tq(b), e.tq(out), activation, shapes[0], shapes[1], row)
        decls += e.struct(ctype, f"{p}_{tag}", params, {})

    if f.table:
        decls += e.array(f"{p}_in_table", table_values(e.model, f.transform))
        fields["in_table"] = f"{p}_in_table"
        parts.append("batch norm as a channel table in rows")
    elif f.transform:
        row = [1, 1, in_shape[2], in_shape[3]]
        for j, make_params, ctype, tag in ((f.mul, mul_params, "ob_mul_params", "in_mul"),
                                           (f.add, add_params, "ob_add_params", "in_add")):
            if j is None:
                continue
            row_op(j, make_params, ctype, row, tag)
            other = graph.operators[j]
            first = g.tensor_data(e.model, e.tensor(other.inputs[0])) is not None
            constant = other.inputs[0] if first else other.inputs[1]
            name = "mul_constant" if tag == "in_mul" else "add_constant"
            decls += e.array(f"{p}_{name}", g.tensor_data(e.model, e.tensor(constant)))
            fields.update({tag: f"&{p}_{tag}", name: f"{p}_{name}", f"{name}_first": str(int(first))})
        parts.append("batch norm in rows")
    if f.epilogue is not None:
        row_op(f.epilogue, add_params, "ob_add_params", [1, 1, out_shape[2], out_shape[3]], "out_add")
        fields.update({"out_add": f"&{p}_out_add",
                       "residual_first": str(int(int(graph.operators[f.epilogue].inputs[0]) == f.residual))})
        parts.append("residual ADD in rows")
    fields["rows_per_call"] = str(f.rows_per_call)
    body = "".join(f"    .{k} = {v},\n" for k, v in fields.items())
    decls += f"static const ob_onebit_conv2d_fused_params {p}_fused = {{\n{body}}};\n"
    return conv, decls, parts


def _bias(e: _Emitter, conv: int) -> str:
    op = e.graph.operators[conv]
    return f"op{conv}_bias" if len(op.inputs) > 2 and op.inputs[2] >= 0 else "NULL"


def _fused_onebit_conv2d(e: _Emitter, f: FusedConv) -> EmittedOp:
    """ob_onebit_conv2d_fused, or ob_onebit_conv2d_pair for a pipeline of two."""
    src = e.pointer(f.source, "")[1]
    dst = e.pointer(f.output, "")[1]
    residual = e.pointer(f.residual, "")[1] if f.residual is not None else "NULL"
    scratch = f"(arena + {e.plan.scratch_offsets[f.conv]})"
    conv, decls, parts = _fused_params(e, f)
    p = f"op{f.conv}"
    if f.first is None:
        call = f"ob_onebit_conv2d_fused(&{p}_fused, {src}, {p}_filter, {_bias(e, f.conv)}, {residual}, {dst}, {scratch})"
        return EmittedOp(f.conv, f"{OP_NAME} fused", f"{conv.comment}, {' and '.join(parts)}",
                         ("onebit_conv2d_fused.h",), decls, (call,))
    first, first_decls, first_parts = _fused_params(e, f.first)
    q = f"op{f.first.conv}"
    fields = {"first": f"&{q}_fused", "first_filter": f"{q}_filter", "first_bias": _bias(e, f.first.conv),
              "second": f"&{p}_fused", "second_filter": f"{p}_filter", "second_bias": _bias(e, f.conv)}
    e.constant_bytes += 4 * len(fields)
    body = "".join(f"    .{k} = {v},\n" for k, v in fields.items())
    decls = first_decls + decls + f"static const ob_onebit_conv2d_pair_params {p}_pair = {{\n{body}}};\n"
    comment = (f"{first.comment}{''.join(', ' + x for x in first_parts)}; then {conv.comment}"
               f"{''.join(', ' + x for x in parts)}; as one pipeline over rows")
    return EmittedOp(f.conv, f"{OP_NAME} pair", comment, ("onebit_conv2d_fused.h",), decls,
                     (f"ob_onebit_conv2d_pair(&{p}_pair, {src}, {residual}, {dst}, {scratch})",))


def _table_lookup(e: _Emitter, i: int, input: int, output: int, table: np.ndarray, name: str) -> EmittedOp:
    """ob_channel_table at op i, from input to output, with `table` [channels * 256]."""
    p = f"op{i}"
    shape = e.shape(output)
    params = ChannelTableParams(size=int(np.prod(shape)), channels=shape[-1])
    _, src = e.pointer(input, "")
    _, dst = e.pointer(output, "")
    decls = e.array(f"{p}_table", table) + e.struct("ob_channel_table_params", f"{p}_params", params, {})
    return EmittedOp(i, name, "x".join(map(str, shape)), ("channel_table.h",), decls,
                     (f"ob_channel_table(&{p}_params, {p}_table, {src}, {dst})",))


def _channel_table(e: _Emitter, chain: ChannelChain) -> EmittedOp:
    """The chain's ops as one lookup per value, its table computed here."""
    kinds = "+".join(g.op_name(e.model, e.graph.operators[j]) for j in chain.ops)
    return _table_lookup(e, chain.ops[-1], chain.input, chain.output, table_values(e.model, chain.ops),
                         f"CHANNEL_TABLE {kinds}")


def _table_op(e: _Emitter, op, i: int) -> EmittedOp:
    """A graph's ONEBIT_CHANNEL_TABLE op (a TFLM graph, channel_table.rewrite_channel_tables):
    its table is its constant input."""
    table = np.asarray(g.tensor_data(e.model, e.graph.tensors[op.inputs[1]]), np.int8).ravel()
    return _table_lookup(e, i, int(op.inputs[0]), int(op.outputs[0]), table, TABLE_OP_NAME)


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
    TABLE_OP_NAME: _table_op,
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
IN_PLACE_OPS = ("ADD", "MUL", "MAXIMUM", TABLE_OP_NAME)


def memory_plan(model, include_io: bool = False, in_place: bool = True, fuse: bool = True) -> MemoryPlan:
    """Plan every activation tensor, and in the static runtime every ONEBIT_CONV2D's
    scratch (ONEBIT_CONV2D_SCRATCH_MAX, alive during its op) and every fused op's
    (fusion.fused_scratch_bytes). The graph input and output are caller-owned in the
    static runtime. An IN_PLACE_OPS output, and a fused op's epilogue output, shares the
    buffer of a same-size input whose last reader it is (in_place=False: a buffer of its
    own). Tensors a fused op keeps in rows are not planned (fuse=False: today's graph op
    by op). include_io gives TFLM's view instead: input and output in the arena too, no
    scratch (TFLM plans kernel scratch itself), nothing in place and nothing fused."""
    fuse = fuse and not include_io
    steps = static_steps(model, in_place) if fuse else planned_ops(model)
    return _plan(model, steps, include_io, in_place)


# Output rows per kernel call may take the arena up to 1/ROWS_ARENA_SLACK over its
# smallest, each call repeating the kernel's set-up: on wrn-8-1 (qemu-m4) the smallest,
# 29,824 B, takes 10,350,847 instructions; 31,296 B (+4.9 %) take 9,646,107 (-6.8 %).
ROWS_ARENA_SLACK = 16


def static_steps(model, in_place: bool = True, table_budget: int | None = None,
                 rows_slack: int | None = ROWS_ARENA_SLACK) -> list[PlannedOp]:
    """The static runtime's steps: the fusions and pairs that make its arena smallest, and
    no others (a fused conv costs time: each kernel call expands the weight masks again,
    on qemu-m4 about 20 K instructions for 16 channels and 100 K for 64), each with the
    most output rows per kernel call that keep the arena within 1/rows_slack of that
    smallest (and below the unfused one; None: the smallest); and every other chain of
    element-wise ops by per-channel constants as a channel table. Tables cost flash
    (256 B per channel): with table_budget bytes (None: no limit), those that replace the
    most values per byte come first, the rest stay arithmetic."""
    graph = model.subgraphs[0]
    fusions = {i: dataclasses.replace(f, table=bool(f.transform)) for i, f in find_fusions(model).items()}
    pairs = find_pairs(model, fusions)

    def chains(candidate: dict[int, FusedConv]) -> dict[int, ChannelChain]:
        return find_channel_chains(model, frozenset(j for f in candidate.values() for j in f.absorbed))

    def arena(candidate: dict[int, FusedConv]) -> int:
        return _plan(model, planned_ops(model, candidate, chains(candidate)), False, in_place).arena_bytes

    def weight_bytes(f: FusedConv) -> int:
        return sum(int(np.prod(graph.tensors[graph.operators[part.conv].inputs[1]].shape)) for part in f.parts)

    def paired(candidate: dict[int, FusedConv], pair: FusedConv) -> dict[int, FusedConv] | None:
        """candidate with `pair` in place of its two convs' fusions, if neither is in a pair."""
        taken = {part.conv for f in candidate.values() if f.first is not None for part in f.parts}
        if pair.conv in taken or pair.first.conv in taken:
            return None
        return {**{k: f for k, f in candidate.items() if k != pair.first.conv}, pair.conv: pair}

    smallest = arena(fusions)
    while True:  # every pair that keeps the arena, the one that lowers it most first
        tried = [(arena(c), n, c) for n, pair in enumerate(pairs) if (c := paired(fusions, pair)) is not None]
        best = min(tried, key=lambda t: t[:2], default=None)
        if best is None or best[0] > smallest:
            break
        smallest, _, fusions = best
    unfused = arena({})
    if smallest >= unfused:
        fusions = {}
    for i in sorted((i for i, f in fusions.items() if f.first is not None), key=lambda i: -weight_bytes(fusions[i])):
        parts = {part.conv: dataclasses.replace(part, first=None) for part in fusions[i].parts}
        apart = {**fusions, **{k: f for k, f in parts.items() if f.fuses}}
        if not parts[i].fuses:
            del apart[i]
        if arena(apart) <= smallest:
            fusions = apart
    order = sorted(fusions, key=lambda i: -weight_bytes(fusions[i]))
    for i in order:
        fewer = {k: f for k, f in fusions.items() if k != i}
        if fusions[i].first is None and arena(fewer) <= smallest:
            fusions = fewer
    limit = smallest if rows_slack is None else max(smallest, min(smallest + smallest // rows_slack, unfused - 1))
    for i, part in ((i, part) for i in order if i in fusions for part in (1, 0) if part < len(fusions[i].parts)):
        rows = int(graph.tensors[graph.operators[fusions[i].parts[part].conv].outputs[0]].shape[1])
        while rows > 1:
            wider = {**fusions, i: _with_part(fusions[i], part, rows_per_call=rows)}
            if arena(wider) <= limit:
                fusions = wider
                break
            rows = -(-rows // 2)
    tabled = chains(fusions)
    if table_budget is not None:
        sites = sorted([(*table_site(model, c.ops), "chain", k, 0) for k, c in tabled.items()] +
                       [(*table_site(model, part.transform), "fused", k, n) for k, f in fusions.items()
                        for n, part in enumerate(f.parts) if part.table],
                       key=lambda s: (-s[0], s[3], s[4]))
        left = table_budget
        for _, size, kind, k, n in sites:
            if size <= left:
                left -= size
            elif kind == "chain":
                del tabled[k]
            else:
                fusions[k] = _with_part(fusions[k], n, table=False)
    return planned_ops(model, fusions, tabled)


def _with_part(f: FusedConv, part: int, **changes) -> FusedConv:
    """f with `changes` made to its part-th fused conv (f.parts)."""
    if f.first is not None and part == 0:
        return dataclasses.replace(f, first=dataclasses.replace(f.first, **changes))
    return dataclasses.replace(f, **changes)


def _plan(model, steps: list[PlannedOp], include_io: bool, in_place: bool) -> MemoryPlan:
    graph = model.subgraphs[0]
    first: dict[int, int] = {int(t): -1 for t in graph.inputs} if include_io else {}
    last: dict[int, int] = {}
    for step in steps:
        for t in step.outputs:
            first.setdefault(t, step.index)
        for t in step.inputs:
            last[t] = step.index
    if include_io:
        last.update({int(t): len(graph.operators) for t in graph.outputs})
    skip = set() if include_io else {int(graph.inputs[0]), int(graph.outputs[0])}

    def size(t: int) -> int:
        return int(np.prod(graph.tensors[t].shape)) * np.dtype(g.TENSOR_DTYPES[graph.tensors[t].type]).itemsize

    storage = {t: t for t in first if t not in skip}  # tensor -> the tensor whose buffer it uses
    if in_place and not include_io:
        for step in steps:
            out = step.outputs[0]
            if out not in storage:
                continue
            if step.fused is not None:
                f = step.fused
                unsafe = f.first is not None and not pipeline_writes_over_input(model, f)
                candidates = (f.residual,) if f.residual is not None and not (unsafe and f.residual == f.source) else ()
            elif g.op_name(model, graph.operators[step.index]) in IN_PLACE_OPS:
                candidates = step.inputs
            else:
                continue
            host = next((t for t in candidates if t in storage and last[t] == step.index and size(t) == size(out)), None)
            if host is not None:
                storage[out] = storage[host]
    members: dict[int, list[int]] = {}
    for t, root in storage.items():
        members.setdefault(root, []).append(t)
    buffers = [Buffer(root, size(root), first[root], max(last.get(t, first[t]) for t in group))
               for root, group in members.items()]
    if not include_io:
        for step in steps:
            op = graph.operators[step.index]
            if step.fused is not None:
                buffers.append(Buffer(step.index, fused_scratch_bytes(model, step.fused), step.index, step.index,
                                      scratch=True))
            elif g.op_name(model, op) == OP_NAME:
                scratch = _onebit_scratch(model, op)
                if scratch > 0:
                    buffers.append(Buffer(step.index, scratch, step.index, step.index, scratch=True))
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


def generate(onebit_graph: bytes, model_hash: str, source_name: str, fuse: bool = True,
             table_budget: int | None = None, rows_slack: int | None = ROWS_ARENA_SLACK) -> StaticModel:
    """fuse=False: every op of the graph on its own (convert --no-fuse); table_budget:
    flash bytes the channel tables may take, rows_slack: the arena rows per call may add
    (static_steps)."""
    model = g.load(onebit_graph)
    _check_supported(model)
    steps = static_steps(model, table_budget=table_budget, rows_slack=rows_slack) if fuse else planned_ops(model)
    plan = _plan(model, steps, include_io=False, in_place=True)
    emitter = _Emitter(model, plan)
    graph = model.subgraphs[0]
    ops = [_fused_onebit_conv2d(emitter, step.fused) if step.fused is not None
           else _channel_table(emitter, step.chain) if step.chain is not None
           else EMITTERS[g.op_name(model, graph.operators[step.index])](emitter, graph.operators[step.index], step.index)
           for step in steps]
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
    tables = [s.chain.ops for s in steps if s.chain is not None] + [
        part.transform for s in steps if s.fused is not None for part in s.fused.parts if part.table]
    table_bytes = sum(table_site(model, chain)[1] for chain in tables) + sum(
        int(np.prod(graph.tensors[graph.operators[s.index].inputs[1]].shape)) for s in steps
        if s.fused is None and s.chain is None and g.op_name(model, graph.operators[s.index]) == TABLE_OP_NAME)
    return StaticModel(source, plan, [op.name for op in ops], emitter.constant_bytes, table_bytes)
