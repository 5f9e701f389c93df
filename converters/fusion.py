"""Which ops of the 1-bit graph the static runtime runs fused (docs/onebit_conv2d.md,
"Fused forms"): an ONEBIT_CONV2D absorbs the batch norm before it (MUL then ADD by
per-channel constants, whose result only it reads) and the residual ADD after it (which
alone reads its output); a chain of element-wise ops by per-channel constants becomes one
channel table (converters/channel_table.py), alone or as a fused conv's input transform.
The graph itself is unchanged: the fused op computes the same values row by row
(firmware/kernels/onebit_conv2d_fused.c), so that neither the normalised input nor the
conv's output is ever a whole tensor in RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcu_onebit.cheader import read_defines

from . import tflite_graph as g
from .memory_plan import aligned, onebit_scratch_bytes
from .onebit_conv2d import OP_NAME, compute_padding, decode_options


@dataclass(frozen=True)
class FusedConv:
    conv: int  # op index of the ONEBIT_CONV2D; the fused op runs in its place
    mul: int | None  # op indices of the absorbed batch norm: MUL, ADD or MUL then ADD
    add: int | None
    epilogue: int | None  # op index of the absorbed residual ADD
    input: int  # tensor the fused op reads: the batch norm's input, else the conv's
    residual: int | None  # the epilogue's other operand
    output: int  # tensor it writes: the epilogue's output, else the conv's
    rows_per_call: int = 1  # output rows per kernel call (memory against the kernel's set-up)
    table: bool = False  # the batch norm as a channel table instead of MUL/ADD arithmetic

    @property
    def absorbed(self) -> tuple[int, ...]:
        return tuple(i for i in (self.mul, self.add, self.epilogue) if i is not None)

    @property
    def transform(self) -> tuple[int, ...]:
        """The batch norm's ops, in order."""
        return tuple(i for i in (self.mul, self.add) if i is not None)


@dataclass(frozen=True)
class ChannelChain:
    """Element-wise ops by constants of one value or one per channel, each reading the
    one before (docs/onebit_conv2d.md, "Channel tables"): one table lookup per value."""

    ops: tuple[int, ...]  # op indices in order; the step runs at the last one's place
    input: int
    output: int


@dataclass(frozen=True)
class PlannedOp:
    """One step of the static runtime: an op of the graph, or a fused op."""

    index: int
    inputs: tuple[int, ...]  # activation and constant tensors read
    outputs: tuple[int, ...]
    fused: FusedConv | None = None
    chain: ChannelChain | None = None


def _consumers(graph) -> dict[int, list[int]]:
    readers: dict[int, list[int]] = {}
    for i, op in enumerate(graph.operators):
        for t in op.inputs:
            if t >= 0:
                readers.setdefault(int(t), []).append(i)
    return readers


def _per_channel_constant(model, graph, op) -> int | None:
    """Position (0 or 1) of a per-channel constant operand [C] of op, if it has one."""
    for pos in (0, 1):
        t = graph.tensors[op.inputs[pos]]
        other = graph.tensors[op.inputs[1 - pos]]
        if (g.tensor_data(model, t) is not None and g.tensor_data(model, other) is None
                and [int(d) for d in t.shape] == [int(other.shape[-1])]):
            return pos
    return None


CHAIN_OPS = ("MUL", "ADD", "MAXIMUM")


def _chain_operand(model, graph, op) -> int | None:
    """The activation operand's position if op maps each value of it, with a constant of
    one value or one per channel, to one output value of the same shape."""
    out = [int(d) for d in graph.tensors[op.outputs[0]].shape]
    for pos in (0, 1):
        x, c = graph.tensors[op.inputs[pos]], graph.tensors[op.inputs[1 - pos]]
        constant = g.tensor_data(model, c)
        if (g.tensor_data(model, x) is None and constant is not None and [int(d) for d in x.shape] == out
                and constant.size in (1, out[-1]) and all(int(d) == 1 for d in c.shape[:-1])
                and (len(c.shape) == 0 or int(c.shape[-1]) in (1, out[-1]))):
            return pos
    return None


def find_channel_chains(model, exclude: frozenset[int] = frozenset()) -> dict[int, ChannelChain]:
    """The longest chains of CHAIN_OPS with at least one MUL or ADD (a MAXIMUM alone is
    cheaper computed than looked up), by last op index; ops in exclude take no part."""
    graph = model.subgraphs[0]
    readers = _consumers(graph)
    io = {int(graph.inputs[0]), int(graph.outputs[0])}
    name = [g.op_name(model, op) for op in graph.operators]
    operand = {i: _chain_operand(model, graph, op) for i, op in enumerate(graph.operators)
               if name[i] in CHAIN_OPS and i not in exclude}
    operand = {i: pos for i, pos in operand.items() if pos is not None}
    follower = {}
    for i in operand:
        out = int(graph.operators[i].outputs[0])
        nxt = readers.get(out, [])
        if out not in io and len(nxt) == 1 and nxt[0] in operand and \
                int(graph.operators[nxt[0]].inputs[operand[nxt[0]]]) == out:
            follower[i] = nxt[0]
    chains = {}
    for head in set(operand) - set(follower.values()):
        ops = [head]
        while ops[-1] in follower:
            ops.append(follower[ops[-1]])
        if any(name[i] != "MAXIMUM" for i in ops):
            first = graph.operators[head]
            chains[ops[-1]] = ChannelChain(tuple(ops), int(first.inputs[operand[head]]),
                                           int(graph.operators[ops[-1]].outputs[0]))
    return chains


def find_fusions(model) -> dict[int, FusedConv]:
    """The fused ops, by conv op index."""
    graph = model.subgraphs[0]
    readers = _consumers(graph)
    producer = {int(t): i for i, op in enumerate(graph.operators) for t in op.outputs}
    io = {int(graph.inputs[0]), int(graph.outputs[0])}
    name = [g.op_name(model, op) for op in graph.operators]
    fusions = {}
    for i, op in enumerate(graph.operators):
        if name[i] != OP_NAME or is_im2col_stem(model, op):
            continue  # the stem runs as its own 1x1 conv over im2col rows
        conv_in, conv_out = int(op.inputs[0]), int(op.outputs[0])
        absorbed = {}
        source = conv_in
        # Walking back from the conv: an ADD, then a MUL before it (the kernel's order).
        for kind in ("ADD", "MUL"):
            j = producer.get(source)
            if j is None or name[j] != kind or readers[source] != [absorbed.get("ADD", i)] or source in io:
                continue
            pos = _per_channel_constant(model, graph, graph.operators[j])
            if pos is not None:
                absorbed[kind] = j
                source = int(graph.operators[j].inputs[1 - pos])
        mul, add = absorbed.get("MUL"), absorbed.get("ADD")
        epilogue = residual = None
        output = conv_out
        e = readers.get(conv_out, [None])
        if len(e) == 1 and e[0] is not None and name[e[0]] == "ADD" and conv_out not in io:
            add_op = graph.operators[e[0]]
            other = int(add_op.inputs[1]) if int(add_op.inputs[0]) == conv_out else int(add_op.inputs[0])
            same_shape = [int(d) for d in graph.tensors[other].shape] == [int(d) for d in graph.tensors[conv_out].shape]
            ready = other in {int(t) for t in graph.inputs} or producer.get(other, len(graph.operators)) < i
            if (same_shape and ready and other not in (conv_in, source) and other != conv_out
                    and g.tensor_data(model, graph.tensors[other]) is None):
                epilogue, residual, output = e[0], other, int(add_op.outputs[0])
        if mul is not None or add is not None or epilogue is not None:
            fusions[i] = FusedConv(i, mul, add, epilogue, source, residual, output)
    return fusions


def planned_ops(model, fusions: dict[int, FusedConv] | None = None,
                chains: dict[int, ChannelChain] | None = None) -> list[PlannedOp]:
    """The static runtime's steps in order, with `fusions` (by conv op index) and channel
    `chains` (by last op index, none of their ops in a fusion; None: every op alone):
    absorbed ops disappear, each fused op reads its input and residual and writes its
    output at the conv's place, each chain at its last op's."""
    graph = model.subgraphs[0]
    fusions = fusions or {}
    chains = chains or {}
    absorbed = {j for f in fusions.values() for j in f.absorbed} | {j for c in chains.values() for j in c.ops[:-1]}
    steps = []
    for i, op in enumerate(graph.operators):
        if i in absorbed:
            continue
        f = fusions.get(i)
        if i in chains:
            steps.append(PlannedOp(i, (chains[i].input,), (chains[i].output,), chain=chains[i]))
        elif f is None:
            steps.append(PlannedOp(i, tuple(int(t) for t in op.inputs if t >= 0), tuple(int(t) for t in op.outputs)))
        else:
            reads = (f.input, *op.inputs[1:], *((f.residual,) if f.residual is not None else ()))
            steps.append(PlannedOp(i, tuple(int(t) for t in reads if t >= 0), (f.output,), f))
    return steps


def is_im2col_stem(model, op) -> bool:
    """An ONEBIT_CONV2D whose input channels are not a multiple of 8 (the stem: 1 or 3):
    the static runtime runs it over im2col rows (static_runtime.Im2col)."""
    graph = model.subgraphs[0]
    return int(graph.tensors[op.inputs[0]].shape[3]) % 8 != 0


def fused_scratch_bytes(model, f: FusedConv) -> int:
    """ob_onebit_conv2d_fused_scratch_bytes for f: each ADD's tables (not a channel
    table's, which is a constant), the input rows one
    block of output rows reads (with a batch norm), one block of output rows (with an
    epilogue), the kernel's scratch."""
    graph = model.subgraphs[0]
    op = graph.operators[f.conv]
    _, in_h, in_w, in_c = (int(d) for d in graph.tensors[op.inputs[0]].shape)
    _, out_h, out_w, out_c = (int(d) for d in graph.tensors[op.outputs[0]].shape)
    _, k_h, k_w, packed_depth = (int(d) for d in graph.tensors[op.inputs[1]].shape)
    options = decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    _, pad_top = compute_padding(options.padding, in_h, k_h, options.stride_h, options.dilation_h)
    block = min(f.rows_per_call, out_h)
    window = 0
    if f.transform:
        rows = 0
        for oy in range(0, out_h, block):
            y0 = oy * options.stride_h - pad_top
            y1 = (min(oy + block, out_h) - 1) * options.stride_h - pad_top + (k_h - 1) * options.dilation_h + 1
            rows = max(rows, min(in_h, y1) - max(0, y0))
        window = aligned(rows * in_w * in_c)
    row = aligned(block * out_w * out_c) if f.epilogue is not None else 0
    add_tables = (f.add is not None and not f.table) + (f.epilogue is not None)
    tables = read_defines("kernels/add.h")["OB_ADD_TABLES_BYTES"] * add_tables
    return tables + window + row + aligned(onebit_scratch_bytes(k_h, k_w, 8 * packed_depth))
