"""Channel tables (docs/onebit_conv2d.md, "Channel tables"): a chain of MUL, ADD and
MAXIMUM ops by constants of one value or one per channel maps, channel by channel, each
int8 input value to one int8 output value. The table holds that map for all 256 inputs,
computed here with the kernels' exact arithmetic (quant.mul_values, quant.add_values,
whose parity with the C kernels tests/test_channel_table.py checks), so that the
device's lookup gives the values the ops it replaces give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import tflite_graph as g
from .quant import TensorQuant, add_params, add_values, maximum_params, mul_params, mul_values

ENTRIES = 256  # OB_CHANNEL_TABLE_ENTRIES: one per input byte, indexed by (uint8_t)x


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
