"""`inspect model.h5 --json` proves per binary conv that the deployed weights are exactly
the two values +-sqrt(2 / (k*k*Cin)), and says so when they are not."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
from click.testing import CliRunner

from mcu_onebit.cli import cli
from mcu_onebit.modelfile import ModelMeta, save_model
from mcu_onebit.models import Recipe, build_model


def _inspect(path) -> dict:
    result = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _save(model, path):
    binary = [layer.name for layer in model.layers if type(layer).__name__ == "BinaryConv2D"]
    save_model(model, ModelMeta("digits", "wrn-8-1", (8, 8, 1), [str(i) for i in range(10)], binary), path)


def test_every_binary_conv_deploys_plus_minus_the_he_scale(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model("wrn-8-1", (8, 8, 1), 10, Recipe())
    _save(model, tmp_path / "m.h5")
    report = _inspect(tmp_path / "m.h5")
    binary = [layer for layer in report["layers"] if layer["binary"]]
    assert len(binary) == 8 and report["totals"]["binary_layers_two_valued"] == 8
    for layer in binary:
        kh, kw, cin, _ = layer["kernel_shape"]
        expected = math.sqrt(2.0 / (kh * kw * cin))
        assert layer["expected_scale"] == expected and layer["two_valued"] is True
        assert layer["deployed_values"] == [float(np.float32(-expected)), float(np.float32(expected))]
    assert next(l for l in binary if l["name"] == "stem_conv")["expected_scale"] == math.sqrt(2.0 / 9)


def test_a_one_signed_kernel_is_reported_as_not_two_valued(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model("wrn-8-1", (8, 8, 1), 10, Recipe())
    conv = model.get_layer("classifier_conv")
    conv.kernel.assign(np.abs(keras.ops.convert_to_numpy(conv.kernel)))  # every weight +scale: one value only
    _save(model, tmp_path / "m.h5")
    report = _inspect(tmp_path / "m.h5")
    classifier = next(layer for layer in report["layers"] if layer["name"] == "classifier_conv")
    assert classifier["two_valued"] is False and len(classifier["deployed_values"]) == 1
    assert report["totals"]["binary_layers_two_valued"] == report["totals"]["binary_layers"] - 1
    table = CliRunner().invoke(cli, ["inspect", str(tmp_path / "m.h5")]).output
    assert "NOT ±scale" in table and "7 of 8 binary convs" in table
