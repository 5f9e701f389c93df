"""User mistakes end in one line on stderr and exit code 2, never a traceback, and
leave no partial output."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import keras
import pytest
from cli_run import run_cli, assert_one_line_error

from mcu_onebit.modelfile import ModelMeta, save_model




@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, "MCU_ONEBIT_HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _float_model_with_metadata(path: Path) -> None:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    save_model(keras.Model(inputs, x), ModelMeta("digits", "custom", (8, 8, 1), [str(i) for i in range(10)], []), path)


def test_missing_model(env, tmp_path):
    assert_one_line_error(run_cli("convert", str(tmp_path / "nope.h5"), env=env), "not found")


def test_corrupt_model(env, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(500))
    assert_one_line_error(run_cli("inspect", str(bad), env=env), "bad.h5")


def test_model_from_another_tool(env, tmp_path):
    inputs = keras.Input((8, 8, 1))
    foreign = tmp_path / "foreign.h5"
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)).save(foreign)
    assert_one_line_error(run_cli("convert", str(foreign), env=env), "not written by `mcu-onebit train`")


def test_model_without_binary_conv(env, tmp_path):
    model = tmp_path / "float.h5"
    _float_model_with_metadata(model)
    out = tmp_path / "out"
    assert_one_line_error(run_cli("convert", str(model), "--out", str(out), env=env), "full-precision conv", "--allow-float")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unsupported_layers_are_named(env, tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten(name="flat")(inputs)
    x = keras.layers.Dense(10, name="dense_head")(x)
    path = tmp_path / "dense.h5"
    save_model(keras.Model(inputs, x), ModelMeta("digits", "custom", (8, 8, 1), [str(i) for i in range(10)], []), path)
    assert_one_line_error(run_cli("convert", str(path), env=env), "flat (Flatten)", "dense_head (Dense)")


def test_unknown_board(env, tmp_path):
    model = tmp_path / "float.h5"
    _float_model_with_metadata(model)
    assert_one_line_error(run_cli("convert", str(model), "--board", "arduino-uno-r9", env=env), "unknown board", "qemu-m4")


def test_unknown_arch(env, tmp_path):
    assert_one_line_error(run_cli("train", "--arch", "wrn-9-1", "--out", str(tmp_path / "m.h5"), env=env), "wrn-9-1")


def test_nothing_converted_yet(env):
    assert_one_line_error(run_cli("flash", env=env), "mcu-onebit convert")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A converted project whose device side we replace by a bad port or a mute one."""
    from mcu_onebit.convert import convert
    from mcu_onebit.train import TrainConfig, train

    work = tmp_path_factory.mktemp("errors")
    os.environ.setdefault("MCU_ONEBIT_HOME", str(work / "home"))
    train(TrainConfig(epochs=1), work / "m.h5", log=lambda *_: None)
    return convert(work / "m.h5", "qemu-m4", work / "out", log=lambda *_: None).project_dir


def test_unreachable_port(env, project):
    result = run_cli("eval", "--project", str(project), "--port", "/dev/ttyNOPE0", env=env)
    assert_one_line_error(result, "/dev/ttyNOPE0")


def test_device_that_does_not_answer(env, project):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    port = server.getsockname()[1]
    start = time.monotonic()
    result = run_cli("eval", "--project", str(project), "--port", f"socket://127.0.0.1:{port}", "--timeout", "1", env=env)
    assert_one_line_error(result, "did not answer")
    assert time.monotonic() - start < 60
    server.close()
