"""The TFLM firmware of an emulated board, built from the user's TFLM tree and run under
QEMU: `flash --tflm` then `eval` agree with the twin byte for byte, and `bench --tflm`
counts the 1-bit graph under TFLM (with its channel tables) within 10 % of the static
runtime's fused build.

Opt-in: needs a TFLM tree (an Arduino_TensorFlowLite library or a tflite-micro checkout,
see mcu_onebit/tflm_tree.py) in MCU_ONEBIT_TFLM; CI has none, and these skip there. Each
firmware build compiles the tree's sources (about two minutes on two cores)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_run import cli_env, run_cli

from mcu_onebit.tflm_tree import ENV_VAR

TREE = os.environ.get(ENV_VAR)
pytestmark = pytest.mark.skipif(not TREE, reason=f"{ENV_VAR} is not set: no TFLM tree to build the TFLM firmware from")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return cli_env(MCU_ONEBIT_HOME=str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env) -> Path:
    model = tmp_path_factory.mktemp("model") / "model.h5"
    run_cli("train", "--dataset", "digits", "--epochs", "3", "--out", str(model), env=env, check=True)
    return model


@pytest.mark.parametrize("board", ["qemu-m4"])
def test_flash_then_eval_agrees_with_the_twin(trained, env, tmp_path, board):
    out = tmp_path / "tflm"
    run_cli("convert", str(trained), "--board", board, "--runtime", "tflm", "--out", str(out), env=env, check=True)
    try:
        flashed = run_cli("flash", "--project", str(out), "--tflm", TREE, env=env, check=True, timeout=1800)
        assert "running in QEMU" in flashed.stdout
        report = tmp_path / "eval.json"
        run_cli("eval", "--project", str(out), "--json", str(report), "--no-html", env=env, check=True)
    finally:
        run_cli("emulate", "--project", str(out), "--stop", env=env)
    result = json.loads(report.read_text())
    assert result["complete"] and result["samples"] == result["planned"] > 300  # digits' 359 held-out images
    assert result["agreement"] == 1.0 and result["agreement_tflm"] == 1.0


def test_bench_counts_the_three_builds(env, tmp_path):
    report_path = tmp_path / "bench.json"
    run_cli("bench", "--board", "qemu-m4", "--model", "tiny-resnet", "--tflm", TREE, "--json", str(report_path),
            env=env, check=True, timeout=3600)
    models = json.loads(report_path.read_text())["models"]
    rows = {(m["runtime"], m["graph"], m.get("kernels") == "project"): m for m in models
            if m["runtime"] == "tflm" or (m["fused"] and m["variant"] == "cortex_m_dsp")}
    assert set(rows) == {("tflm", "int8", False), ("tflm", "onebit", True), ("tflm", "onebit", False),
                         ("static", "onebit", False)}
    assert rows["tflm", "onebit", True]["table_bytes"] > 0 == rows["tflm", "onebit", False]["table_bytes"]
    for m in rows.values():
        assert m["instructions"] > 0 and m["per_mac"] == round(m["instructions"] / m["macs"], 4)
        assert len(m["ops"]) > 0 and m["flash_bytes"] > 0
    # The acceptance bound: the 1-bit graph under TFLM, with its channel tables, within
    # 10 % of the static runtime as convert builds it (fused).
    assert rows["tflm", "onebit", True]["instructions"] <= 1.10 * rows["static", "onebit", False]["instructions"]
    assert rows["tflm", "onebit", True]["arena_bytes"] > 0
