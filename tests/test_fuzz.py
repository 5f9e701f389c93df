"""Every reader of untrusted bytes, fuzzed briefly (benchmarks/fuzz.py runs each for a
million executions): the libFuzzer harnesses of firmware/fuzz/ under ASan and UBSan, each
over its corpus (seeds, and the inputs that crashed the code before, which must pass now),
and `inspect` on mutated copies of a real 1-bit graph, which may refuse a file only with
OnebitError."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcu_onebit.errors import OnebitError
from mcu_onebit.summary import inspect_file

import fuzzing
from cli_run import assert_one_line_error, run_cli

SECONDS = 3  # per harness, after its corpus
SEED_GRAPH = Path(__file__).parent / "data" / "tiny_resnet_onebit.tflite"


@pytest.mark.parametrize("harness", fuzzing.HARNESSES, ids=lambda h: h.name)
def test_harness_finds_nothing(harness, tmp_path):
    problem = fuzzing.libfuzzer_problem()
    if problem:
        pytest.skip(problem)
    corpus = fuzzing.CORPUS / harness.name
    binary = fuzzing.build(harness, tmp_path)
    result = fuzzing.run(binary, corpus, tmp_path / "run", seconds=SECONDS)
    assert not result.findings, result.output[-4000:]
    assert result.executions > len(list(corpus.iterdir())), result.output[-2000:]


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> Path:
    # A folder without convert's report.json: inspect reads the graph alone.
    return tmp_path_factory.mktemp("mutants") / "model.tflite"


def test_the_seed_graph_is_read_whole(graph_file):
    shutil.copy(SEED_GRAPH, graph_file)
    report = inspect_file(graph_file)
    assert "ONEBIT_CONV2D" in [op.op for op in report.ops]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1))
def test_inspect_refuses_mutated_graphs_only_with_onebit_error(graph_file, seed):
    graph_file.write_bytes(fuzzing.mutate(SEED_GRAPH.read_bytes(), np.random.default_rng(seed)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line on the user's terminal
        try:
            inspect_file(graph_file)
        except OnebitError as exc:
            assert "\n" not in str(exc)


def test_an_inconsistent_graph_is_one_error_line(tmp_path):
    from mcu_onebit.converters import tflite_graph as g

    model = g.load(SEED_GRAPH.read_bytes())
    model.subgraphs[0].tensors[0].buffer = len(model.buffers) + 5
    broken = tmp_path / "model.tflite"
    broken.write_bytes(g.save(model))
    assert_one_line_error(run_cli("inspect", str(broken)), str(broken), "buffer")
