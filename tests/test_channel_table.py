"""Channel tables (converters/channel_table.py, firmware/kernels/channel_table.c): for
MUL, ADD and MAXIMUM by a constant of one value or one per channel, the table the
converter computes, looked up by the C kernel, gives for every int8 input of every
channel what TFLite's reference kernel gives. Chains of them, inside whole graphs, are
checked against the twin by tests/test_convert_equivalence.py."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mcu_onebit.converters import tflite_graph
from mcu_onebit.converters.channel_table import ENTRIES, OP_NAME as TABLE_OP_NAME, rewrite_channel_tables, table_values
from mcu_onebit.converters.fusion import find_channel_chains
from mcu_onebit.errors import OnebitError
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

import tflite_builder as tb

P8 = ctypes.POINTER(ctypes.c_int8)


class TableStruct(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int32), ("channels", ctypes.c_int32)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    kernels = firmware_dir() / "kernels"
    out = tmp_path_factory.mktemp("table") / "libtable.so"
    return ctypes.CDLL(str(build_shared_library([kernels / "channel_table.c", kernels / "ob_common.c"], [kernels], out)))


def _lookup(lib, table: np.ndarray, x: np.ndarray, channels: int, in_place: bool) -> np.ndarray:
    params = TableStruct(x.size, channels)
    out = x.copy() if in_place else np.zeros_like(x)
    source = out if in_place else x
    assert lib.ob_channel_table(ctypes.byref(params), table.ctypes.data_as(P8), source.ctypes.data_as(P8),
                                out.ctypes.data_as(P8)) == 0
    return out


def _model(kind: str, rng, channels: int, per_channel: bool, activation: str) -> bytes:
    shape = (1, 3, ENTRIES, channels)

    def q(zero_points=128):
        return float(np.float32(10 ** rng.uniform(-3, 0))), int(rng.integers(-zero_points, zero_points))

    constant = rng.integers(-128, 128, (channels,) if per_channel else (1,), dtype=np.int8)
    if kind == "MAXIMUM":
        return tb.maximum_model(shape, q(), constant)
    q1, q2 = q(zero_points=50), q()  # inputs on both sides of zero
    constant[constant == q2[1]] ^= 1  # a MUL by a real zero maps everything to one value
    if kind == "ADD":
        out_q = (float(np.float32((q1[0] + q2[0]) * 10 ** rng.uniform(-0.3, 0.5))), int(rng.integers(-128, 128)))
        return tb.add_model(shape, q1, constant.shape, q2, shape, out_q, activation, constant)
    out_q = (float(np.float32(q1[0] * q2[0] * 128 * 10 ** rng.uniform(-0.5, 0.5))), int(rng.integers(-128, 128)))
    return tb.mul_model(shape, q1, constant.shape, q2, shape, out_q, activation, constant)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["MUL", "ADD", "MAXIMUM"])
def test_table_lookups_equal_tflite(lib, kind, seed):
    rng = np.random.default_rng([7, seed, len(kind)])
    channels = int(rng.choice([1, 3, 4, 16, 13]))
    per_channel = bool(seed % 2)
    activation = str(rng.choice(["NONE", "RELU"]))
    model_bytes = _model(kind, rng, channels, per_channel, activation)
    model = tflite_graph.load(model_bytes)
    chains = find_channel_chains(model)
    if kind == "MAXIMUM":
        assert chains == {}  # a MAXIMUM alone is cheaper computed than looked up
    else:
        assert [c.ops for c in chains.values()] == [(0,)]
    table = table_values(model, (0,))
    assert table.shape == (channels * ENTRIES,)
    # Every input byte in every channel (row 0), then random values (rows 1 and 2).
    x = rng.integers(-128, 128, (1, 3, ENTRIES, channels), dtype=np.int8)
    x[0, 0] = np.arange(ENTRIES, dtype=np.uint8).view(np.int8)[:, None]
    expected = tb.run_reference(model_bytes, x)
    assert len(np.unique(expected)) > 2  # the op does something here: the comparison means something
    np.testing.assert_array_equal(_lookup(lib, table, x.ravel(), channels, in_place=bool(seed % 2)),
                                  expected.ravel())


def test_bad_parameters_are_refused(lib):
    table = np.zeros(2 * ENTRIES, np.int8)
    x = np.zeros(6, np.int8)
    for size, channels in ((6, 0), (5, 2), (0, 2)):
        params = TableStruct(size, channels)
        assert lib.ob_channel_table(ctypes.byref(params), table.ctypes.data_as(P8), x.ctypes.data_as(P8),
                                    x.ctypes.data_as(P8)) != 0


def test_tflm_rewrite_puts_the_table_in_the_graph():
    """rewrite_channel_tables: the chain becomes one ONEBIT_CHANNEL_TABLE op from the
    chain's input to its output, its table the converter's as a constant [C, 256] tensor,
    the replaced op's constant gone; a budget smaller than the table leaves the graph."""
    rng = np.random.default_rng(11)
    channels = 5
    model_bytes = _model("MUL", rng, channels, per_channel=True, activation="NONE")
    model = tflite_graph.load(model_bytes)
    rewritten, used = rewrite_channel_tables(model_bytes)
    assert used == channels * ENTRIES
    graph_out = tflite_graph.load(rewritten)
    sub, before = graph_out.subgraphs[0], model.subgraphs[0]
    assert [tflite_graph.op_name(graph_out, op) for op in sub.operators] == [TABLE_OP_NAME]
    op = sub.operators[0]
    assert [sub.tensors[op.inputs[0]].name, sub.tensors[op.outputs[0]].name] == \
        [before.tensors[before.inputs[0]].name, before.tensors[before.outputs[0]].name]
    assert [int(op.inputs[0]), int(op.outputs[0])] == [int(sub.inputs[0]), int(sub.outputs[0])]
    table = tflite_graph.tensor_data(graph_out, sub.tensors[op.inputs[1]])
    assert table.shape == (channels, ENTRIES)
    np.testing.assert_array_equal(table.ravel(), table_values(model, (0,)))
    # The MUL's constant left with its buffer; the table came in.
    assert len(before.tensors) == len(sub.tensors) == 3 and len(graph_out.buffers) == len(model.buffers)
    assert all(tflite_graph.tensor_data(graph_out, t) is None for t in sub.tensors if t is not sub.tensors[op.inputs[1]])
    unchanged, none = rewrite_channel_tables(model_bytes, budget=channels * ENTRIES - 1)
    assert none == 0
    kept = tflite_graph.load(unchanged)
    assert [tflite_graph.op_name(kept, o) for o in kept.subgraphs[0].operators] == ["MUL"]


def test_a_table_op_with_a_wrong_table_is_refused_at_load():
    rewritten, _ = rewrite_channel_tables(_model("ADD", np.random.default_rng(3), 4, True, "RELU"))
    model = tflite_graph.load(rewritten)
    sub = model.subgraphs[0]
    table = sub.tensors[sub.operators[0].inputs[1]]
    table.shape = [2, 2 * ENTRIES]  # the same bytes, not [C, 256]
    with pytest.raises(OnebitError, match=rf"{TABLE_OP_NAME}\) needs .* constant int8 table \[C, {ENTRIES}\]"):
        tflite_graph.load(tflite_graph.save(model))
