"""What a trained model holds, layer by layer: `mcu-onebit inspect model.h5`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import OnebitError
from .modelfile import ModelMeta, load_model, read_meta


@dataclass(frozen=True)
class LayerSummary:
    name: str
    kind: str
    kernel_shape: list[int] | None  # kh, kw, cin, cout for convs
    binary: bool
    bits: int | None  # bits per deployed weight; None for layers without weights
    scale: float | None  # deployed weight magnitude of a binary conv
    distinct_values: int | None  # different deployed weight values
    params: int
    macs: int
    # Binary convs only: the distinct weights the layer computes with (its forward pass),
    # the expected magnitude sqrt(2 / (kh * kw * cin)) from the kernel shape, and whether
    # the weights are exactly the two values -expected_scale and +expected_scale (float32).
    deployed_values: list[float] | None = None
    expected_scale: float | None = None
    two_valued: bool | None = None


@dataclass(frozen=True)
class ModelSummary:
    arch: str
    dataset: str
    input_shape: list[int]
    layers: list[LayerSummary]
    totals: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        return format_table(self)


def _layer_summary(layer) -> LayerSummary:
    weights = layer.get_weights()
    params = int(sum(w.size for w in weights))
    from .layers import BinaryConv2D  # Keras: loaded by load_model already

    binary = isinstance(layer, BinaryConv2D)
    kernel_shape, scale, macs = None, None, 0
    deployed = [layer.deployed_kernel()] if binary else weights
    if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4:
        kernel_shape = [int(d) for d in layer.kernel.shape]
        kh, kw, cin, cout = kernel_shape
        _, oh, ow, _ = layer.output.shape
        macs = int(oh * ow * cout * kh * kw * cin)
    check = {}
    if binary:
        scale = float(layer.scale)
        check = binary_weight_check(deployed[0], kernel_shape)
    distinct = int(len(np.unique(np.concatenate([w.ravel() for w in deployed])))) if weights else None
    bits = (1 if binary else 32) if weights else None
    return LayerSummary(layer.name, type(layer).__name__, kernel_shape, binary, bits, scale, distinct, params, macs, **check)


def binary_weight_check(weights: np.ndarray, kernel_shape) -> dict:
    """{deployed_values, expected_scale, two_valued} for a binary conv's weights: two_valued
    when they take exactly the two float32 values +-sqrt(2 / (kh * kw * cin)) (McDonnell
    2018's fixed per-layer scale, the He-init std), both present."""
    kh, kw, cin, _ = kernel_shape
    expected = math.sqrt(2.0 / (kh * kw * cin))
    values = sorted(float(v) for v in np.unique(weights))
    two_valued = values == [float(np.float32(-expected)), float(np.float32(expected))]
    return {"deployed_values": values[:8], "expected_scale": expected, "two_valued": two_valued}


def summarize(model, meta: ModelMeta) -> ModelSummary:
    layers = [_layer_summary(layer) for layer in model.layers if type(layer).__name__ != "InputLayer"]
    binary_params = sum(l.params for l in layers if l.binary)
    params = sum(l.params for l in layers)
    totals = {
        "params": params,
        "binary_params": binary_params,
        "binary_layers": sum(1 for l in layers if l.binary),
        "binary_layers_two_valued": sum(1 for l in layers if l.two_valued),
        "macs": sum(l.macs for l in layers),
        "weight_bytes_float": 4 * params,
        "weight_bytes_1bit": (binary_params + 7) // 8 + 4 * (params - binary_params),
    }
    return ModelSummary(meta.arch, meta.dataset, list(meta.input_shape), layers, totals)


def format_table(summary: ModelSummary) -> str:
    rows = [("layer", "kind", "kernel", "bits", "scale", "values", "params", "MACs")]
    for l in summary.layers:
        rows.append((
            l.name, l.kind, "x".join(map(str, l.kernel_shape)) if l.kernel_shape else "",
            str(l.bits or ""), f"{l.scale:.4f}" if l.scale else "",
            str(l.distinct_values or "") + ("" if l.two_valued is None else " ±scale" if l.two_valued else " NOT ±scale"),
            f"{l.params:,}", f"{l.macs:,}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    t = summary.totals
    lines.append(
        f"{summary.arch} on {summary.dataset} {tuple(summary.input_shape)}: {t['params']:,} params "
        f"({t['binary_params']:,} binary), {t['macs']:,} MACs, weights {t['weight_bytes_float']:,} B as float32, "
        f"{t['weight_bytes_1bit']:,} B with 1-bit convs; {t['binary_layers_two_valued']} of {t['binary_layers']} "
        f"binary convs deploy exactly ±sqrt(2/(k·k·Cin))"
    )
    return "\n".join(lines)


def inspect_file(path: Path):
    """A ModelSummary for a trained `.h5`, a GraphReport for a converted `.tflite`."""
    path = Path(path)
    if path.is_dir():
        raise OnebitError(f"{path} is a folder; pass a model file: the .h5 from `train` or a .tflite from `convert`")
    if path.suffix == ".tflite":
        if not path.is_file():
            raise OnebitError(f"{path} not found; `mcu-onebit convert` writes model.tflite into its --out folder")
        return _graph_summary(path)
    read_meta(path)  # the file and its metadata, before Keras loads
    return summarize(*load_model(path))


def _graph_summary(path: Path):
    import json

    from .boards import get_board
    from .converters import tflite_graph
    from .converters.report import graph_report
    from .converters.static_runtime import memory_plan

    data = path.read_bytes()
    graph = tflite_graph.load(data, source=str(path))
    # Beside a convert's report.json, TFLM's figures are for its board, as `convert` printed.
    board = None
    report = path.parent / "report.json"
    try:
        board = get_board(json.loads(report.read_text())["board"]) if report.is_file() else None
    except (ValueError, KeyError, TypeError, OnebitError):
        board = None  # not a convert's report: the figures without a board
    try:
        return graph_report(data, memory_plan(graph).arena_bytes, board)
    except OnebitError as exc:
        raise OnebitError(f"{path}: {exc}") from None
