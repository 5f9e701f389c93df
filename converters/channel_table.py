"""Channel tables (docs/onebit_conv2d.md, "Channel tables"): a chain of MUL, ADD and
MAXIMUM ops by constants of one value or one per channel maps, channel by channel, each
int8 input value to one int8 output value. The table holds that map for all 256 inputs,
computed here with the kernels' exact arithmetic (quant.mul_values, quant.add_values,
whose parity with the C kernels tests/test_channel_table.py checks), so that the
device's lookup gives the values the ops it replaces give.

Both runtimes run the same tables over one kernel (ob_channel_table). The static runtime
picks the chains itself (static_runtime.static_steps, some inside fused convs); for
TFLM, whose interpreter runs the graph op by op, rewrite_channel_tables replaces each
chain in the graph with the custom op ONEBIT_CHANNEL_TABLE, its table a constant tensor
(firmware/runtime/tflm/channel_table_tflm.cc).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mcu_onebit.cheader import read_defines

from . import tflite_graph as g
from .quant import TensorQuant, add_params, add_values, maximum_params, mul_params, mul_values

_SPEC = read_defines("kernels/channel_table.h")
ENTRIES = _SPEC["OB_CHANNEL_TABLE_ENTRIES"]  # one per input byte, indexed by (uint8_t)x
OP_NAME = _SPEC["OB_CHANNEL_TABLE_OP_NAME"]


def _tq(tensor) -> TensorQuant:
    return TensorQuant(*g.quant(tensor).per_tensor)


def table_values(model, ops: Sequence[int]) -> np.ndarray:
    """The chain's table, [channels * 256] int8: entry c * 256 + (uint8)x is the chain's
    output for input x in channel c."""
    graph = model.subgraphs[0]
    channels = int(graph.tensors[graph.operators[ops[-1]].outputs[0]].shape[-1])
    # Row c holds channel c's values, column u the input byte u (x = u as int8).
    values = np.tile(np.arange(ENTRIES, dtype=np.uint8).view(np.int8), (channels, 1))
    for i in ops:
        op = graph.operators[i]
        kind = g.op_name(model, op)
        operands = []
        for t in op.inputs[:2]:
            data = g.tensor_data(model, graph.tensors[t])
            operands.append(values if data is None else
                            np.broadcast_to(np.asarray(data, np.int8).reshape(-1, 1), (channels, 1)))
        q = [_tq(graph.tensors[t]) for t in (*op.inputs[:2], op.outputs[0])]
        shape = [channels, ENTRIES]
        if kind == "MAXIMUM":
            maximum_params(*q, shape, shape, shape)  # refuses what the kernel would
            values = np.maximum(*operands)
            continue
        activation = g.ACTIVATION_NAMES[op.builtinOptions.fusedActivationFunction]
        make, evaluate = {"MUL": (mul_params, mul_values), "ADD": (add_params, add_values)}[kind]
        values = evaluate(make(*q, activation, shape, shape, shape), *operands)
    return np.ascontiguousarray(values, np.int8).ravel()


@dataclass(frozen=True)
class ChannelTableParams:
    """ob_channel_table_params (firmware/kernels/channel_table.h), field for field."""

    size: int
    channels: int


def table_site(model, ops: Sequence[int]) -> tuple[int, int]:
    """(values each table byte replaces the arithmetic of, table bytes) of a chain: with
    a flash budget, the tables that save the most per byte come first."""
    graph = model.subgraphs[0]
    shape = [int(d) for d in graph.tensors[graph.operators[ops[-1]].outputs[0]].shape]
    return int(np.prod(shape[:-1])), shape[-1] * ENTRIES


def rewrite_channel_tables(graph_bytes: bytes, budget: int | None = None) -> tuple[bytes, int]:
    """The graph with every chain of fusion.find_channel_chains as one ONEBIT_CHANNEL_TABLE
    op at its last op's place (inputs: the chain's input and its table, [channels, 256]
    int8), within `budget` table bytes (None: no limit; the chains that save the most per
    byte first), the replaced ops' tensors and buffers dropped; and the table bytes."""
    from .fusion import find_channel_chains

    model = g.load(graph_bytes)
    graph = model.subgraphs[0]
    chains = find_channel_chains(model)
    order = sorted(chains, key=lambda k: (-table_site(model, chains[k].ops)[0], k))
    used = 0
    replaced: dict[int, g.schema.OperatorT] = {}  # last op index -> its table op
    dropped: set[int] = set()
    for k in order:
        chain = chains[k]
        size = table_site(model, chain.ops)[1]
        if budget is not None and used + size > budget:
            continue
        used += size
        out = graph.tensors[chain.output]
        channels = int(out.shape[-1])
        buffer = g.schema.BufferT()
        buffer.data = table_values(model, chain.ops).view(np.uint8)
        model.buffers.append(buffer)
        table = g.schema.TensorT()
        table.name = out.name + b"/channel_table"
        table.type = g.schema.TensorType.INT8
        table.shape = [channels, ENTRIES]
        table.buffer = len(model.buffers) - 1
        graph.tensors.append(table)
        op = g.schema.OperatorT()
        op.opcodeIndex = g.custom_opcode(model, OP_NAME)
        op.inputs = [chain.input, len(graph.tensors) - 1]
        op.outputs = [chain.output]
        op.builtinOptionsType = g.schema.BuiltinOptions.NONE
        replaced[k] = op
        dropped |= set(chain.ops)
    graph.operators = [replaced.get(i, op) for i, op in enumerate(graph.operators)
                       if i in replaced or i not in dropped]
    g.drop_unused(model)
    return g.save(model), used
