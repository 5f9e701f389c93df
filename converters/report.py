"""What a 1-bit graph costs, op by op: weights as float, int8 (the twin) and 1-bit, MACs,
and its peak activation memory under the static runtime's plan and under TFLM's planner
(converters/tflm_planner.py). Read from the `.tflite` (plus the board, when known), so
`inspect model.tflite` and `convert` print the same figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import tflite_graph as g
from .onebit_conv2d import OP_NAME


@dataclass(frozen=True)
class OpCost:
    index: int
    op: str
    output_shape: list[int]
    weights: int  # filter values (0 for ops without a filter)
    weight_bytes_float: int
    weight_bytes_int8: int
    weight_bytes_1bit: int  # what the 1-bit graph stores (int8 for non-binary filters)
    macs: int


@dataclass(frozen=True)
class GraphReport:
    ops: list[OpCost]
    totals: dict[str, int]
    tflite_bytes: int
    arena_bytes_static: int  # the static runtime's plan: activations and kernel scratch
    tflm: dict  # TflmPlan.to_dict() plus its kernel_variant: TFLM's plan and the arena it needs

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [("#", "op", "output", "weights", "float B", "int8 B", "1-bit B", "MACs")]
        for c in self.ops:
            rows.append((str(c.index), c.op, "x".join(map(str, c.output_shape)), f"{c.weights:,}",
                         f"{c.weight_bytes_float:,}", f"{c.weight_bytes_int8:,}", f"{c.weight_bytes_1bit:,}", f"{c.macs:,}"))
        t = self.totals
        rows.append(("", "total", "", f"{t['weights']:,}", f"{t['weight_bytes_float']:,}", f"{t['weight_bytes_int8']:,}",
                     f"{t['weight_bytes_1bit']:,}", f"{t['macs']:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i in (1, 2) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
        lines.append(f".tflite {self.tflite_bytes:,} B; peak activation memory: static runtime's plan "
                     f"{self.arena_bytes_static:,} B, TFLM's planner {self.tflm['head_bytes']:,} B "
                     f"({self.tflm['library']} kernels, {self.tflm['kernel_variant']} ONEBIT_CONV2D; tensors and "
                     f"{self.tflm['scratch_buffers']} kernel scratch buffers of {self.tflm['scratch_bytes']:,} B in all, "
                     f"overlapped)")
        lines.append(f"TFLM arena {self.tflm['arena_bytes']:,} B = planner {self.tflm['head_bytes']:,} B + "
                     f"{self.tflm['margin']:g} x "
                     f"{self.tflm['persistent_bytes_estimate']:,} B persistent (estimate), rounded up to 1 KiB")
        return "\n".join(lines)


def _op_cost(model, op, index: int) -> OpCost:
    graph = model.subgraphs[0]
    name = g.op_name(model, op)
    out_shape = [int(d) for d in graph.tensors[op.outputs[0]].shape]
    weights = int8_bytes = onebit_bytes = macs = 0
    if name in (OP_NAME, "CONV_2D", "DEPTHWISE_CONV_2D"):
        filt = graph.tensors[op.inputs[1]]
        cin = int(graph.tensors[op.inputs[0]].shape[-1])
        cout, kh, kw = (int(d) for d in filt.shape[:3])
        taps = kh * kw * (cin if name != "DEPTHWISE_CONV_2D" else 1)
        weights = cout * taps if name != "DEPTHWISE_CONV_2D" else int(np.prod(filt.shape))
        stored = g.tensor_data(model, filt).nbytes
        int8_bytes = weights
        onebit_bytes = stored
        macs = int(np.prod(out_shape[:-1])) * weights
    elif name == "FULLY_CONNECTED":
        filt = graph.tensors[op.inputs[1]]
        weights = int8_bytes = onebit_bytes = int(np.prod(filt.shape))
        macs = weights
    return OpCost(index, name, out_shape, weights, 4 * weights, int8_bytes, onebit_bytes, macs)


def graph_report(onebit_graph: bytes, arena_bytes_static: int, board=None) -> GraphReport:
    """The report for `onebit_graph`; TFLM's figures are for `board`'s TFLM library and
    kernel variant (None: current TFLM with reference kernels, as the tflite-micro package)."""
    from .tflm_runtime import tflm_plan

    model = g.load(onebit_graph)
    plan = tflm_plan(model, board)
    tflm = {**plan.to_dict(), "kernel_variant": board.kernel_variant if board is not None else "reference"}
    ops = [_op_cost(model, op, i) for i, op in enumerate(model.subgraphs[0].operators)]
    totals = {key: sum(getattr(c, key) for c in ops)
              for key in ("weights", "weight_bytes_float", "weight_bytes_int8", "weight_bytes_1bit", "macs")}
    return GraphReport(ops, totals, len(onebit_graph), arena_bytes_static, tflm)
