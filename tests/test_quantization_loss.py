"""The int8 twin keeps the Keras model's accuracy (issue 4: at most 0.5 point lost), measured
by the benchmark users run (benchmarks/quantization_loss.py) on a model trained here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_run import cli_env

ROOT = Path(__file__).resolve().parents[1]


def test_twin_loses_at_most_half_a_point_on_digits(tmp_path):
    env = cli_env(MCU_ONEBIT_HOME=str(tmp_path))
    model = tmp_path / "model.h5"
    cli = Path(sys.executable).with_name("mcu-onebit")
    subprocess.run([str(cli), "train", "--dataset", "digits", "--epochs", "30", "--out", str(model)],
                   env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quantization_loss.py"), str(model)],
                         env=env, check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout)
    assert figures["split"] == "test" and figures["images"] == 359
    assert figures["accuracy_keras_float"] > 0.9  # a trained model, so the comparison means something
    assert figures["loss_points"] <= 0.5
    # Quantization may move a few borderline argmaxes, not many.
    assert figures["predictions_changed"] <= 0.02 * figures["images"]
