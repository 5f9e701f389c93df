"""Which ops of the 1-bit graph the static runtime runs fused (docs/onebit_conv2d.md,
"Fused forms"): an ONEBIT_CONV2D absorbs the batch norm before it (MUL then ADD by
per-channel constants, whose result only it reads) and the residual ADD after it (which
alone reads its output); a chain of element-wise ops by per-channel constants becomes one
channel table (converters/channel_table.py), alone or as a fused conv's input transform.
Two fused convs, the second reading the first's output alone, may run as one pipeline
over rows. The graph itself is unchanged: the fused op computes the same values row by
row (firmware/kernels/onebit_conv2d_fused.c), so that neither the normalised input nor
the conv's output (in a pipeline, neither conv's) is ever a whole tensor in RAM.
"""

from __future__ import annotations

import dataclasses
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
    # The fused conv (without epilogue) whose output this one reads as a pipeline over
    # rows (ob_onebit_conv2d_pair): that output, this one's `input`, is never whole.
    first: FusedConv | None = None

    @property
    def absorbed(self) -> tuple[int, ...]:
        """Op indices whose work this step does, besides its conv."""
        before = (*self.first.absorbed, self.first.conv) if self.first is not None else ()
        return (*before, *(i for i in (self.mul, self.add, self.epilogue) if i is not None))

    @property
    def parts(self) -> tuple[FusedConv, ...]:
        """The fused convs this step runs, in order: the pipeline's first, then this one."""
        return (self.first, self) if self.first is not None else (self,)

    @property
    def source(self) -> int:
        """The tensor the step reads: its first conv's input in a pipeline."""
        return self.first.input if self.first is not None else self.input

    @property
    def fuses(self) -> bool:
        """Whether anything is fused (a conv alone may be a pipeline's part)."""
        return bool(self.transform) or self.epilogue is not None or self.first is not None

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
        fused = FusedConv(i, mul, add, epilogue, source, residual, output)
        if fused.fuses:
            fusions[i] = fused
    return fusions


def find_pairs(model, fusions: dict[int, FusedConv]) -> list[FusedConv]:
    """Pipelines of two fused convs (or convs alone): the second reads the first's output
    and nothing else does, the first has no epilogue. Where the first has a batch norm,
    also the pair without it (the batch norm then runs before, as a channel table that
    may take its input's place instead of a window's)."""
    graph = model.subgraphs[0]
    readers = _consumers(graph)
    producer = {int(t): i for i, op in enumerate(graph.operators) for t in op.outputs}
    io = {int(graph.inputs[0]), int(graph.outputs[0])}

    def bare(i: int) -> FusedConv:
        op = graph.operators[i]
        return FusedConv(i, None, None, None, int(op.inputs[0]), None, int(op.outputs[0]))

    def alone(i: int) -> FusedConv | None:
        op = graph.operators[i]
        if g.op_name(model, op) != OP_NAME or is_im2col_stem(model, op):
            return None
        return fusions.get(i) or bare(i)

    pairs = []
    for i in range(len(graph.operators)):
        second = alone(i)
        if second is None or second.input in io or second.input not in producer:
            continue
        first = alone(producer[second.input])
        reader = second.transform[0] if second.transform else i
        if first is not None and first.epilogue is None and readers[second.input] == [reader]:
            pairs.append(dataclasses.replace(second, first=first))
            if first.transform:
                pairs.append(dataclasses.replace(second, first=bare(first.conv)))
    return pairs


@dataclass(frozen=True)
class ConvRows:
    """An ONEBIT_CONV2D as the row drivers of onebit_conv2d_fused.c see it."""

    in_h: int
    out_h: int
    k_h: int
    stride_h: int
    dilation_h: int
    pad_top: int
    in_row: int  # bytes of one input row
    out_row: int
    kernel_scratch: int  # ONEBIT_CONV2D_SCRATCH_MAX, arena-aligned

    def rows_read(self, oy: int, oy_end: int) -> tuple[int, int]:
        """Input rows [first, last) that output rows [oy, oy_end) read, clipped."""
        y0 = oy * self.stride_h - self.pad_top
        y1 = (oy_end - 1) * self.stride_h - self.pad_top + (self.k_h - 1) * self.dilation_h + 1
        return max(0, y0), min(self.in_h, y1)

    def blocks(self, rows: int):
        """Output row blocks [oy, oy_end) of `rows` rows."""
        for oy in range(0, self.out_h, rows):
            yield oy, min(oy + rows, self.out_h)

    def window_rows(self, rows: int) -> int:
        """Most input rows one block of `rows` output rows reads."""
        return max(last - first for first, last in (self.rows_read(*b) for b in self.blocks(rows)))


def conv_rows(model, conv: int) -> ConvRows:
    graph = model.subgraphs[0]
    op = graph.operators[conv]
    _, in_h, in_w, in_c = (int(d) for d in graph.tensors[op.inputs[0]].shape)
    _, out_h, out_w, out_c = (int(d) for d in graph.tensors[op.outputs[0]].shape)
    _, k_h, k_w, packed_depth = (int(d) for d in graph.tensors[op.inputs[1]].shape)
    options = decode_options(bytes(np.asarray(op.customOptions, np.uint8)))
    _, pad_top = compute_padding(options.padding, in_h, k_h, options.stride_h, options.dilation_h)
    return ConvRows(in_h, out_h, k_h, options.stride_h, options.dilation_h, pad_top, in_w * in_c, out_w * out_c,
                    aligned(onebit_scratch_bytes(k_h, k_w, 8 * packed_depth)))


def _pipeline_blocks(model, f: FusedConv):
    """Per block of the pair's output rows: (oy, oy_end, the first conv's new output rows
    [a, b)), as ob_onebit_conv2d_pair runs them."""
    second = conv_rows(model, f.conv)
    done = 0
    for oy, oy_end in second.blocks(min(f.rows_per_call, second.out_h)):
        lo, last = second.rows_read(oy, oy_end)
        yield oy, oy_end, max(done, lo), last
        done = max(done, last)


def pipeline_writes_over_input(model, f: FusedConv) -> bool:
    """Whether the pair may write its output over its first conv's input: each block of
    output rows only after the first conv has read those input rows for the last time
    (the check ob_onebit_conv2d_pair makes)."""
    first = conv_rows(model, f.first.conv)
    for _, oy_end, _, last in _pipeline_blocks(model, f):
        if last < first.out_h and first.rows_read(last, first.out_h)[0] < oy_end:
            return False
    return True


def planned_ops(model, fusions: dict[int, FusedConv] | None = None,
                chains: dict[int, ChannelChain] | None = None) -> list[PlannedOp]:
    """The static runtime's steps in order, with `fusions` (by conv op index) and channel
    `chains` (by last op index, none of their ops in a fusion; None: every op alone):
    absorbed ops disappear, each fused op (or pair) reads its input and residual and writes
    its output at the (second) conv's place, each chain at its last op's."""
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
            constants = [t for part in f.parts for t in graph.operators[part.conv].inputs[1:]]
            reads = (f.source, *constants, *((f.residual,) if f.residual is not None else ()))
            steps.append(PlannedOp(i, tuple(int(t) for t in reads if t >= 0), (f.output,), f))
    return steps


def is_im2col_stem(model, op) -> bool:
    """An ONEBIT_CONV2D whose input channels are not a multiple of 8 (the stem: 1 or 3):
    the static runtime runs it over im2col rows (static_runtime.Im2col)."""
    graph = model.subgraphs[0]
    return int(graph.tensors[op.inputs[0]].shape[3]) % 8 != 0


def fused_scratch_bytes(model, f: FusedConv) -> int:
    """ob_onebit_conv2d_fused_scratch_bytes (ob_onebit_conv2d_pair_scratch_bytes for a
    pair) for f: each ADD's tables (not a channel table's, which is a constant), the
    input rows one block of output rows reads (with a batch norm; in a pair, the second
    conv's always: the first's output rows), one block of output rows (with an
    epilogue), the kernel's scratch (in a pair, the larger)."""
    tables = read_defines("kernels/add.h")["OB_ADD_TABLES_BYTES"] * sum(
        (part.add is not None and not part.table) + (part.epilogue is not None) for part in f.parts)
    second = conv_rows(model, f.conv)
    block = min(f.rows_per_call, second.out_h)
    if f.first is None:
        window = aligned(second.window_rows(block) * second.in_row) if f.transform else 0
    else:
        first = conv_rows(model, f.first.conv)
        calls = [(y, min(y + f.first.rows_per_call, b)) for _, _, a, b in _pipeline_blocks(model, f)
                 for y in range(a, b, f.first.rows_per_call)]
        first_rows = max(last - lo for lo, last in (first.rows_read(*call) for call in calls))
        window = aligned(second.window_rows(block) * second.in_row)
        window += aligned(first_rows * first.in_row) if f.first.transform else 0
    row = aligned(block * second.out_row) if f.epilogue is not None else 0
    return tables + window + row + max(conv_rows(model, part.conv).kernel_scratch for part in f.parts)
