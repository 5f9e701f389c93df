"""`mcu-onebit bench`: the whole-model records of the JSON report.

A record's count is what the model bench firmware (firmware/bench/model_bench.c) reports
under QEMU for one inference, whose output it has compared with the twin's; the per-op
counts it reports add up to it. MACs are recounted here from the Keras model, not taken
from the converter's report.
"""

from __future__ import annotations

import json
import shutil

import pytest

from mcu_onebit import bench
from mcu_onebit.boards import get_board

needs_cross = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm and arm-none-eabi-gcc are needed (make setup installs them)")

RECORD_KEYS = {"name", "board", "runtime", "graph", "variant", "fused", "arena_bytes", "flash_bytes", "instructions",
               "macs", "per_mac", "ops"}
# Counter reads after the last op and the return from ob_model_invoke: a few dozen.
RETURN_PATH_MAX = 200


def keras_macs(spec: bench.BenchModel) -> int:
    """Multiply-accumulates of every conv of the Keras model, output pixels included."""
    from mcu_onebit.layers import BinaryConv2D
    from mcu_onebit.models import build_model

    model = build_model(spec.arch, spec.input_shape, 10)
    total = 0
    for layer in model.layers:
        if isinstance(layer, BinaryConv2D):
            _, h, w, cout = layer.output.shape
            k_h, k_w, cin, _ = layer.kernel.shape
            total += h * w * cout * k_h * k_w * cin
    return total


def check_models(report: dict, board_id: str, names: list[str]) -> None:
    variants = list(dict.fromkeys((get_board(board_id).kernel_variant, "reference")))
    specs = {spec.name: spec for spec in bench.BENCH_MODELS}
    assert [(m["name"], m["fused"], m["variant"]) for m in report["models"]] == [
        (n, fused, v) for n in names for fused in (True, False) for v in variants]
    for record in report["models"]:
        assert set(record) == RECORD_KEYS
        assert record["board"] == board_id
        assert record["macs"] == keras_macs(specs[record["name"]])
        assert record["per_mac"] == pytest.approx(record["instructions"] / record["macs"], rel=1e-3)
        op_sum = sum(op["instructions"] for op in record["ops"])
        assert op_sum <= record["instructions"] <= op_sum + RETURN_PATH_MAX
        assert [op["index"] for op in record["ops"]] == list(range(len(record["ops"])))
        assert all(op["instructions"] > 0 for op in record["ops"])
        assert any(op["op"].startswith("ONEBIT_CONV2D") for op in record["ops"])
        assert record["arena_bytes"] > 0 and record["flash_bytes"] > 0
        assert (record["runtime"], record["graph"]) == ("static", "onebit")
    for name in names:
        fused, unfused = ([m for m in report["models"] if m["name"] == name and m["fused"] == f] for f in (True, False))
        assert fused[0]["arena_bytes"] <= unfused[0]["arena_bytes"]
        assert len(fused[0]["ops"]) <= len(unfused[0]["ops"])  # absorbed ops are gone (none when fusing saves nothing)
        for optimized, reference in (fused, unfused) if len(variants) == 2 else ():
            assert [op["op"] for op in optimized["ops"]] == [op["op"] for op in reference["ops"]]
            # The variant beats the oracle it is checked against.
            assert optimized["instructions"] < reference["instructions"]


@needs_cross
def test_bench_counts_the_demo_network_on_qemu_m4(tmp_path):
    json_path = tmp_path / "bench.json"
    report = bench.bench("qemu-m4", json_path=json_path, build_dir=tmp_path / "build",
                         models=["tiny-resnet"])
    written = json.loads(json_path.read_text())
    assert written == json.loads(json.dumps(report.to_dict()))
    assert {"board", "kernel_variant", "unit", "layers", "models", "code_size"} <= set(written)
    check_models(written, "qemu-m4", ["tiny-resnet"])
    assert "whole models" in report.table()


@needs_cross
@pytest.mark.slow
@pytest.mark.parametrize("board_id", ["qemu-m3", "qemu-m4", "qemu-m7"])
def test_bench_counts_every_model(board_id, tmp_path):
    report = bench.bench(board_id, build_dir=tmp_path, models=None)
    check_models(report.to_dict(), board_id, [spec.name for spec in bench.BENCH_MODELS])


def test_bench_refuses_an_unknown_model():
    from mcu_onebit.errors import OnebitError

    with pytest.raises(OnebitError, match="unknown bench model 'resnet-50'"):
        bench.bench("qemu-m4", models=["resnet-50"])
