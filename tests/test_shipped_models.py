"""The trained models in models/ still deploy as their README rows say: today's converter
makes the very graph each shipped eval.json measured (the same model hash; a converter
change that alters it leaves the published device figures stale, and they must be
measured again), that eval agreed with the twin on every image, and the model fits the
Nano 33 BLE. Calibration needs the CIFAR-10 training images, so this skips without them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10_train.npz"
SHIPPED = sorted(p.parent for p in (ROOT / "models").glob("*/model.h5"))


def test_models_are_shipped():
    assert len(SHIPPED) >= 2 and all((m / "eval.json").is_file() and (m / "model.json").is_file() for m in SHIPPED)


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_converts_to_the_evaluated_graph_and_fits_nano33ble(folder, tmp_path):
    if not DATA.is_file():
        pytest.skip(f"{DATA} is absent (real data lives in ../shared/data on developer and CI machines)")
    evaluated = json.loads((folder / "eval.json").read_text())
    assert evaluated["complete"] and evaluated["samples"] == evaluated["planned"] > 0
    assert evaluated["agreement"] == 1.0
    config = json.loads((folder / "model.json").read_text())["config"]
    # As a user runs it, one model per process (Keras numbers its layers per process).
    run_cli("convert", str(folder / "model.h5"), "--board", "nano33ble", "--runtime", "static", "--data", str(DATA),
            "--out", str(tmp_path / "out"), *(["--allow-float"] if config["float_stem"] or config["float_classifier"] else []),
            check=True)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model_hash"] == evaluated["model_hash"]
    budget = report["budget"]
    assert budget["flash_margin"] > 0 and budget["ram_margin"] > 0
