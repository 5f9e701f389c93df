"""User mistakes end in one line on stderr and exit code 2, never a traceback, and
leave no partial output."""

from __future__ import annotations

import importlib.util
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from cli_run import assert_one_line_error, cli_env, run_cli

from mcu_onebit.modelfile import ModelMeta, save_model




@pytest.fixture
def env(tmp_path) -> dict:
    return cli_env(MCU_ONEBIT_HOME=str(tmp_path / "home"))


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


# --- TensorFlow's start-up lines, and mistakes refused before TensorFlow loads -----------


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TF_ENABLE_ONEDNN_OPTS=1 forces oneDNN's start-up line on x86-64; elsewhere TF may stay quiet")
def test_these_tests_run_with_tensorflow_printing_its_start_up_lines():
    """The precondition of every one-line check here: TensorFlow, loaded plainly in the
    tests' environment, does print its start-up lines on stderr."""
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], env=cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "oneDNN custom operations are on" in result.stderr


def _user_errors_benchmark():
    """benchmarks/user_errors.py: the ten typical mistakes, written once for it and for this test."""
    spec = importlib.util.spec_from_file_location("user_errors", Path(__file__).parents[1] / "benchmarks" / "user_errors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


USER_ERRORS = _user_errors_benchmark()


@pytest.mark.parametrize("case", USER_ERRORS.MISTAKES)
def test_mistakes_are_refused_before_tensorflow_loads(case, tmp_path, env):
    """Checked first, so refused at once: the command never imports TensorFlow or Keras.
    (How long each takes: benchmarks/user_errors.py.)"""
    args, word = USER_ERRORS.arguments(case, tmp_path), USER_ERRORS.MISTAKES[case][1]
    code = ("import sys\nfrom mcu_onebit import cli\nsys.argv = ['mcu-onebit', *sys.argv[1:]]\n"
            "try:\n    cli.main()\nfinally:\n"
            "    print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, word)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


# --- files that are not what they claim ---------------------------------------------------


def test_model_metadata_that_is_not_json(env, tmp_path):
    model = tmp_path / "m.h5"
    with h5py.File(model, "w") as f:
        f.attrs["mcu_onebit"] = "{this is not json"
    for command in ("convert", "inspect"):
        assert_one_line_error(run_cli(command, str(model), env=env), "m.h5", "damaged")


def test_broken_graph_names_its_file(env, tmp_path):
    graph = tmp_path / "broken.tflite"
    graph.write_bytes(os.urandom(300))
    assert_one_line_error(run_cli("inspect", str(graph), env=env), str(graph))


# --- output folders and report files -------------------------------------------------------


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which this process may not create files (root may everywhere but /proc)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_convert_out_that_cannot_be_written(env, project, tmp_path):
    model = project.parent.parent / "m.h5"
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    cases = {
        str(_unwritable_folder(tmp_path) / "out"): "cannot write",
        str(afile / "out"): "is a file",
        str(afile): "is a file",
    }
    for out, words in cases.items():
        assert_one_line_error(run_cli("convert", str(model), "--out", out, env=env), out, words)
    assert afile.read_text() == "mine\n" and _leftovers(tmp_path) == []


def test_convert_never_replaces_a_folder_it_did_not_write(env, project, tmp_path):
    model = project.parent.parent / "m.h5"
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    assert_one_line_error(run_cli("convert", str(model), "--out", str(out), env=env), "notes.txt")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and _leftovers(tmp_path) == []


def test_convert_replaces_its_own_output_but_not_a_file_added_to_it(env, project, tmp_path):
    model = project.parent.parent / "m.h5"
    out = tmp_path / "out"
    run_cli("convert", str(model), "--out", str(out), env=env, check=True)
    (out / "project" / ".pio").mkdir()  # a build leaves this: still convert's folder
    (out / "project" / ".pio" / "firmware.elf").write_bytes(b"\0")
    run_cli("convert", str(model), "--out", str(out), env=env, check=True)
    assert not (out / "project" / ".pio").exists()  # replaced as a whole
    (out / "project" / "src" / "my_patch.c").write_text("int mine;\n")
    assert_one_line_error(run_cli("convert", str(model), "--out", str(out), env=env), "my_patch.c")
    assert (out / "project" / "src" / "my_patch.c").read_text() == "int mine;\n"


def test_eval_json_that_cannot_be_written_is_refused_before_the_run(env, project, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    mine = tmp_path / "mine.json"
    mine.write_text("{}\n")
    folder = tmp_path / "a-folder.json"
    folder.mkdir()
    cases = {
        str(_unwritable_folder(tmp_path) / "eval.json"): "cannot write",
        str(afile / "eval.json"): "is a file",
        str(folder): "is a folder",
        str(mine): "was not written by `mcu-onebit eval`",
    }
    for target, words in cases.items():
        # A port nobody listens on: the run would fail at once, but the target is refused first.
        result = run_cli("eval", "--project", str(project), "--port", "/dev/ttyNOPE0", "--json", target, env=env)
        assert_one_line_error(result, words)
    assert afile.read_text() == "mine\n" and mine.read_text() == "{}\n" and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder.json", "afile", "mine.json"]  # no journal begun


def test_eval_on_an_empty_test_set(env, project, tmp_path):
    archive = tmp_path / "empty-test.npz"
    rng = np.random.default_rng(0)
    np.savez(archive, x_train=rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=np.zeros((0, 8, 8, 1), np.uint8), y_test=np.zeros(0, np.int64))
    result = run_cli("eval", "--project", str(project), "--data", str(archive), "--port", "/dev/ttyNOPE0", env=env)
    assert_one_line_error(result, "no samples")


def test_emulate_refuses_a_real_board_at_once(env, project, tmp_path):
    from mcu_onebit.convert import convert

    real = convert(project.parent.parent / "m.h5", "nano33ble", tmp_path / "nano", log=lambda *_: None)
    start = time.monotonic()
    assert_one_line_error(run_cli("emulate", "--project", str(real.project_dir), env=env), "real board")
    assert time.monotonic() - start < 60  # no PlatformIO build was tried (it would wait on the registry)
    assert not (real.project_dir / ".pio").exists()


def test_project_may_be_named_by_its_convert_folder(env, project):
    result = run_cli("eval", "--project", str(project.parent), "--port", "/dev/ttyNOPE0", env=env)
    assert_one_line_error(result, "/dev/ttyNOPE0")  # got as far as opening the port
