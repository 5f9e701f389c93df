"""converters/tflm_planner.py against TFLM itself: GreedyMemoryPlanner's own unit-test
cases (tensorflow/lite/micro/memory_planner/greedy_memory_planner_test.cc), and the
whole plan of real int8 twins against the `tflite-micro` host interpreter's
RecordingMicroAllocator, whose non-persistent "head" is exactly that plan."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mcu_onebit.converters import tflite_graph as g
from mcu_onebit.converters.onebit_conv2d import OP_NAME
from mcu_onebit.converters.tflm_planner import Buffer, greedy_offsets, plan


def _buffers(*spec):
    return [Buffer("tensor", i, size, first, last) for i, (size, first, last) in enumerate(spec)]


def _max(buffers, offsets):
    return max(off + b.size for b, off in zip(buffers, offsets))


def test_greedy_medium_case_from_tflm():
    buffers = _buffers((10, 0, 1), (20, 1, 2), (30, 2, 3), (40, 3, 4), (50, 0, 1))
    offsets = greedy_offsets(buffers)
    assert offsets == [50, 70, 40, 0, 0]
    assert _max(buffers, offsets) == 90


def test_greedy_basic_and_overlap_cases_from_tflm():
    basics = _buffers((10, 0, 1), (20, 2, 3))
    assert greedy_offsets(basics) == [0, 0] and _max(basics, greedy_offsets(basics)) == 20
    overlap = _buffers((100, 0, 1), (50, 2, 3), (20, 1, 2))
    assert _max(overlap, greedy_offsets(overlap)) == 120


def test_equal_sizes_keep_tflms_order_and_offline_offsets_stay():
    # Online buffers enter the sort from the tail (highest id first) and the bubble sort
    # is stable: of two equal buffers alive together, the later one gets offset 0.
    same = _buffers((32, 0, 2), (32, 1, 3))
    assert greedy_offsets(same) == [32, 0]
    # An offline-planned buffer keeps its offset and is placed first; others fill gaps.
    fixed = [Buffer("tensor", 0, 16, 0, 3, offline_offset=64), Buffer("tensor", 1, 32, 0, 1)]
    assert greedy_offsets(fixed) == [64, 0]


@pytest.fixture(scope="module")
def twins():
    """Int8 twins (and 1-bit graphs) of two untrained networks; BN statistics from random images."""
    from mcu_onebit.converters.rewrite import rewrite_binary_convs
    from mcu_onebit.converters.twin import convert_twin
    from mcu_onebit.layers import BinaryConv2D
    from mcu_onebit.models import Recipe, build_model

    rng = np.random.default_rng(0)
    graphs = {}
    for arch, shape, method in (("tiny-resnet", (8, 8, 1), "mcdonnell2018"), ("wrn-8-1", (16, 16, 3), "shifted-relu2019")):
        images = rng.integers(0, 256, (32, *shape)).astype("uint8")
        model = build_model(arch, shape, 10, Recipe(method, "1bit"))
        model(images.astype("float32"), training=True)
        twin = convert_twin(model, images)
        onebit, _ = rewrite_binary_convs(twin, [l.name for l in model.layers if isinstance(l, BinaryConv2D)])
        graphs[arch] = (twin, onebit)
    return graphs


@pytest.mark.parametrize("arch", ["tiny-resnet", "wrn-8-1"])
def test_plan_equals_tflite_micro_head(arch, twins, capfd):
    from tflite_micro.python.tflite_micro import runtime

    twin, _ = twins[arch]
    interpreter = runtime.Interpreter.from_bytes(twin, arena_size=2_000_000)
    capfd.readouterr()
    interpreter.print_allocations()  # RecordingMicroAllocator, printed by C++ on stderr
    printed = capfd.readouterr()
    match = re.search(r"Arena allocation head (\d+) bytes", printed.out + printed.err)
    assert match, printed
    ours = plan(g.load(twin))
    assert ours.head_bytes == int(match.group(1))
    assert any(b.kind == "scratch" for b in ours.buffers)  # MEAN's requests are planned too


def test_onebit_scratch_follows_the_kernel_variant(twins):
    """The adapter's request: the Cortex-M DSP variant's kernel scratch (the reference
    none); for a stem whose channels are not a multiple of 8, the im2col stem's gathered
    rows plus its 1x1 conv's scratch, the same figure the static runtime plans for it."""
    from mcu_onebit.converters.static_runtime import _onebit_scratch

    _, onebit = twins["wrn-8-1"]
    model = g.load(onebit)
    graph = model.subgraphs[0]
    convs = [i for i, op in enumerate(graph.operators) if g.op_name(model, op) == OP_NAME]
    dsp = plan(model, "tflm", "cortex_m_dsp")
    reference = plan(model, "tflm", "reference")
    stems = 0
    for i in convs:
        op = graph.operators[i]
        _, k_h, k_w, _ = (int(d) for d in graph.tensors[op.inputs[1]].shape)
        _, _, out_w, _ = (int(d) for d in graph.tensors[op.outputs[0]].shape)
        in_c = int(graph.tensors[op.inputs[0]].shape[-1])
        ours = [b.size for b in dsp.buffers if b.kind == "scratch" and b.index == i]
        theirs = [b.size for b in reference.buffers if b.kind == "scratch" and b.index == i]
        static = (_onebit_scratch(model, op) + 15) // 16 * 16  # the static runtime's plan, DSP variant
        assert ours == [static]
        if in_c % 8:
            stems += 1
            depth = -(-k_h * k_w * in_c // 8) * 8
            assert len(theirs) == 1 and theirs[0] % (out_w * depth) == 0 and 0 < theirs[0] < static
        else:
            assert ours == [(32 * k_h * k_w * (in_c // 8) + 15) // 16 * 16] and theirs == []
    assert stems == 1  # the 3-channel stem
    assert dsp.head_bytes >= reference.head_bytes
    # Every buffer alive at the same time as another sits apart from it.
    for a, off_a in zip(dsp.buffers, dsp.offsets):
        for b, off_b in zip(dsp.buffers, dsp.offsets):
            if a is not b and not (a.first > b.last or b.first > a.last):
                assert off_a + a.size <= off_b or off_b + b.size <= off_a


def test_project_mean_asks_for_no_scratch(twins):
    """Generated projects run MEAN on the project's kernel (mean_tflm.cc), which asks
    TFLM for no scratch; the library's MEAN asks for three buffers (current TFLM)."""
    _, onebit = twins["tiny-resnet"]
    model = g.load(onebit)
    mean = next(i for i, op in enumerate(model.subgraphs[0].operators) if g.op_name(model, op) == "MEAN")
    library = [b for b in plan(model).buffers if b.kind == "scratch" and b.index == mean]
    own = [b for b in plan(model, own_mean=True).buffers if b.kind == "scratch" and b.index == mean]
    assert len(library) == 3 and own == []


def test_every_op_the_static_runtime_runs_has_a_tflm_resolver_entry():
    """A graph `convert` accepts for one runtime must convert for the other (the 2019
    recipe's MAXIMUM once stopped every shifted-ReLU model at the real boards)."""
    from mcu_onebit.converters.channel_table import OP_NAME as TABLE_OP_NAME
    from mcu_onebit.converters.static_runtime import EMITTERS
    from mcu_onebit.converters.tflm_runtime import ADD_CALLS, RUNTIME_SOURCES

    assert set(EMITTERS) - {OP_NAME, TABLE_OP_NAME} <= set(ADD_CALLS)
    assert {"onebit_conv2d_tflm.cc", "channel_table_tflm.cc"} <= set(RUNTIME_SOURCES)  # the custom ops' kernels


def test_shifted_relu_graph_generates_a_tflm_project(twins):
    from mcu_onebit.boards import get_board
    from mcu_onebit.converters.tflm_runtime import generate

    _, onebit = twins["wrn-8-1"]  # shifted-relu2019: max(x, -1) is a MAXIMUM op
    project = generate(onebit, "0" * 16, "m.h5", board=get_board("nano33ble"))
    assert "MAXIMUM" in project.ops
    source = project.files["model.cc"]
    assert "resolver->AddMaximum();" in source
    assert f"constexpr int kOpCount = {len(project.ops) + 1};" in source
