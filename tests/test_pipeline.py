"""The whole path through the real CLI: train -> inspect -> convert -> flash (QEMU) -> eval
over the serial link, plus the static runtime built on the host against TFLite."""

from __future__ import annotations

import ctypes
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_no_tf_chatter, cli_env, run_cli

from mcu_onebit.datasets import load_dataset
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

needs_emulator = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm and arm-none-eabi-gcc are needed (make setup installs them)",
)



STDERR: dict[str, str] = {}  # what the fixtures' commands printed on stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("home")
    return cli_env(MCU_ONEBIT_HOME=str(home))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def trained(work, env) -> Path:
    model = work / "model.h5"
    STDERR["train"] = run_cli("train", "--dataset", "digits", "--epochs", "6", "--out", str(model), env=env,
                              check=True).stderr
    return model


@pytest.fixture(scope="module")
def converted(trained, work, env) -> Path:
    out = work / "qemu-m4"
    STDERR["convert"] = run_cli("convert", str(trained), "--board", "qemu-m4", "--out", str(out), env=env,
                                check=True).stderr
    return out


def test_no_tensorflow_start_up_lines_reach_the_user(trained, converted):
    """TensorFlow is made to print its start-up lines (cli_env); train and convert hold them back."""
    assert set(STDERR) == {"train", "convert"}
    for stderr in STDERR.values():
        assert_no_tf_chatter(stderr)


def test_training_on_jax_holds_tensorflows_start_up_lines_back_too(env, tmp_path):
    """Keras imports TensorFlow on the JAX backend as well (its data utilities)."""
    result = run_cli("train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "m.h5"),
                     env={**env, "KERAS_BACKEND": "jax"}, check=True)
    assert_no_tf_chatter(result.stderr)


def test_train_writes_model_and_log(trained):
    log = json.loads(trained.with_suffix(".json").read_text())
    assert len(log["epochs"]) == 6
    assert {"loss", "accuracy", "val_accuracy"} <= set(log["epochs"][-1])
    assert 0.5 < log["test_accuracy"] <= 1.0  # 6 epochs on digits: far above chance (0.1)


def test_inspect_json_describes_every_binary_conv(trained, env):
    summary = json.loads(run_cli("inspect", str(trained), "--json", env=env, check=True).stdout)
    convs = [l for l in summary["layers"] if l["kind"] == "BinaryConv2D"]
    assert len(convs) == 6
    for layer in convs:
        kh, kw, cin, cout = layer["kernel_shape"]
        assert layer["binary"] and layer["bits"] == 1 and layer["distinct_values"] == 2
        assert layer["scale"] == pytest.approx((2.0 / (kh * kw * cin)) ** 0.5)
        assert layer["params"] == kh * kw * cin * cout
    bn = [l for l in summary["layers"] if l["kind"] == "BatchNormalization"]
    assert bn and not any(l["binary"] for l in bn)
    totals = summary["totals"]
    assert totals["macs"] == sum(l["macs"] for l in summary["layers"]) > 0
    binary = sum(l["params"] for l in convs)
    assert totals["weight_bytes_1bit"] == (binary + 7) // 8 + 4 * (totals["params"] - binary)
    table = run_cli("inspect", str(trained), env=env, check=True).stdout
    assert "stem_conv" in table and "BinaryConv2D" in table


def test_convert_writes_graphs_report_and_project(converted):
    assert {p.name for p in converted.iterdir()} == {"model.tflite", "twin_int8.tflite", "report.json", "project"}
    report = json.loads((converted / "report.json").read_text())
    assert report["ops"].count("ONEBIT_CONV2D") == 6 and "CONV_2D" not in report["ops"]
    sizes = report["sizes"]
    # 1 bit instead of 8 per weight; per-tap byte padding costs a little for cin < 8.
    assert sizes["conv_weight_bytes_1bit"] * 7 <= sizes["conv_weight_bytes_int8"]
    assert sizes["onebit_tflite_bytes"] < sizes["twin_tflite_bytes"]
    assert report["budget"]["flash_margin"] > 0 and report["budget"]["ram_margin"] > 0
    assert (converted / "project" / "platformio.ini").is_file()
    assert (converted / "project" / "src" / "model.c").is_file()


def test_static_runtime_on_host_is_bit_exact_with_tflite_reference(converted, tmp_path):
    """C equals TFLite on the PC: the generated model.c and the kernels, built with gcc."""
    from mcu_onebit.evaluate import HostTwin

    fw = firmware_dir()
    sources = [converted / "project" / "src" / "model.c", *sorted((fw / "kernels").glob("*.c"))]
    lib = ctypes.CDLL(str(build_shared_library(sources, [fw / "kernels", fw / "app"], tmp_path / "libmodel.so")))
    twin = HostTwin(converted / "twin_int8.tflite")
    data = load_dataset("digits")
    for image in data.x_test:
        quantized = twin.quantize(image)
        out = np.zeros(10, np.int8)
        status = lib.ob_model_invoke(quantized.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
        assert status == 0
        np.testing.assert_array_equal(out, twin.run(quantized))


@needs_emulator
def test_flash_and_eval_on_emulated_board(converted, env, work):
    project = converted / "project"
    flashed = run_cli("flash", "--project", str(project), env=env, check=True)
    assert "socket://127.0.0.1:" in flashed.stdout
    try:
        report_path = work / "eval.json"
        result = run_cli("eval", "--project", str(project), "--limit", "60", "--json", str(report_path), env=env, check=True)
        report = json.loads(report_path.read_text())
        assert report["samples"] == 60
        assert report["agreement"] == 1.0 and report["disagreements"] == []
        assert report["agreement_tflm"] == 1.0 and report["accuracy_host_tflm"] == report["accuracy_host"]
        assert report["accuracy_device"] == report["accuracy_host"] > 0.5
        assert report["latency"]["unit"] == "instructions" and report["latency"]["median"] > 100_000
        records = [json.loads(line) for line in report_path.with_suffix(".samples.jsonl").read_text().splitlines()]
        assert [r["index"] for r in records] == list(range(60))
        # The receive buffer is the one convert sized for this model, far below the 16 KiB default.
        identity = next(iter(json.loads(report_path.with_suffix(".meta.json").read_text())["boards"].values()))
        convert_report = json.loads((converted / "report.json").read_text())
        assert identity["max_payload"] == convert_report["memory"]["receive_buffer_bytes"] < 2048
        assert "agreement" in result.stdout
    finally:
        run_cli("emulate", "--project", str(project), "--stop", env=env, check=True)


@needs_emulator
def test_eval_boots_an_emulator_when_none_runs(converted, env, work):
    report_path = work / "eval_auto.json"
    run_cli("eval", "--project", str(converted / "project"), "--limit", "5", "--json", str(report_path), env=env, check=True)
    assert json.loads(report_path.read_text())["agreement"] == 1.0


@needs_emulator
def test_train_only_data_is_evaluated_on_its_validation_split(env, work):
    """CIFAR-10 here has no test split: a model trained with --val-split is evaluated on
    exactly the images held out for it, as `train` split them."""
    from mcu_onebit.datasets import split_validation

    digits = load_dataset("digits")
    archive = work / "train-only.npz"
    np.savez(archive, x_train=digits.x_train, y_train=digits.y_train)
    model, out = work / "val" / "model.h5", work / "val" / "qemu-m4"
    run_cli("train", "--dataset", "digits", "--data", str(archive), "--val-split", "0.1", "--seed", "3",
            "--epochs", "6", "--out", str(model), env=env, check=True)
    run_cli("convert", str(model), "--data", str(archive), "--out", str(out), env=env, check=True)
    run_cli("flash", "--project", str(out), env=env, check=True)
    try:
        run_cli("eval", "--project", str(out), env=env, check=True)
    finally:
        run_cli("emulate", "--project", str(out), "--stop", env=env, check=True)
    report = json.loads((out / "eval.json").read_text())
    _, _, _, y_val = split_validation(digits.x_train, digits.y_train, 0.1, 3)
    assert report["dataset"] == "digits (validation split 0.1, seed 3)"
    assert report["samples"] == len(y_val) and report["agreement"] == 1.0
    labels = [json.loads(line)["label"] for line in (out / "eval.samples.jsonl").read_text().splitlines()]
    assert sorted(labels) == sorted(y_val.tolist())
    logged = json.loads(model.with_suffix(".json").read_text())
    assert abs(report["accuracy_host"] - logged["val_accuracy"]) < 0.05  # the same images train validated on
