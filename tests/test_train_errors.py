"""`mcu-onebit train` refuses bad input through the real CLI: one line on stderr, exit 2,
no traceback, and nothing written. These checks run before Keras is imported, so each
costs about a second."""

from __future__ import annotations

import os


import numpy as np
import pytest
from cli_run import assert_one_line_error, cli_env, run_cli




@pytest.fixture
def env(tmp_path) -> dict:
    return cli_env(MCU_ONEBIT_HOME=str(tmp_path / "home"))


def _train(tmp_path, env, *args):
    out = tmp_path / "out" / "m.h5"
    result = run_cli("train", *args, "--out", str(out), "--epochs", "1", env=env)
    assert not (tmp_path / "out").exists(), "train wrote something before failing"
    return result


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def _images(n=20, h=8, w=8, dtype=np.uint8):
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 1)).astype(dtype)


def _labels(n=20):
    return np.arange(n) % 4


def test_unknown_dataset(env, tmp_path):
    assert_one_line_error(_train(tmp_path, env, "--dataset", "imagenet-xl"), "unknown dataset 'imagenet-xl'", "--data")


def test_known_dataset_without_its_arrays_names_data(env, tmp_path):
    assert_one_line_error(_train(tmp_path, env, "--dataset", "cifar10"), "cifar10", "--data PATH.npz")


def test_unknown_arch_through_the_cli(env, tmp_path):  # the one case that loads Keras first
    assert_one_line_error(_train(tmp_path, env, "--arch", "resnet-50"), "resnet-50", "wrn-D-K")


BAD_ARCHIVES = {
    "missing x_train": (lambda: {"images": _images(), "y_train": _labels()}, ["lacks array", "x_train"]),
    "labels length mismatch": (lambda: {"x_train": _images(), "y_train": _labels(19)}, ["19 labels for 20 images"]),
    "negative labels": (lambda: {"x_train": _images(), "y_train": _labels() - 1}, ["label -1"]),
    "one-hot labels": (lambda: {"x_train": _images(), "y_train": np.eye(4)[_labels()]}, ["(20, 4)", "one-hot"]),
    "2-D arrays": (lambda: {"x_train": _images().reshape(20, 64), "y_train": _labels()}, ["(20, 64)", "(N, H, W"]),
    "floats outside 0-255": (lambda: {"x_train": _images(dtype=np.float32) * 4 - 300, "y_train": _labels()},
                             ["-300", "0..255"]),
    "normalised floats": (lambda: {"x_train": _images(dtype=np.float32) / 255, "y_train": _labels()},
                          ["fractional", "uint8"]),
    "wrong dtype": (lambda: {"x_train": _images().astype(bool), "y_train": _labels()}, ["dtype bool"]),
    "test shape differs": (lambda: {"x_train": _images(), "y_train": _labels(),
                                    "x_test": _images(h=9), "y_test": _labels()}, ["x_test", "(9, 8, 1)"]),
    "labels beyond the dataset's classes": (lambda: {"x_train": _images(), "y_train": _labels() * 4}, ["12", "10 classes"]),
}


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_bad_archive(env, tmp_path, case):
    make, words = BAD_ARCHIVES[case]
    data = _npz(tmp_path, **make())
    assert_one_line_error(_train(tmp_path, env, "--dataset", "mnist", "--data", data), *words)


def test_not_an_archive(env, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(2000))  # numpy would read it as a pickle and advise allow_pickle
    result = _train(tmp_path, env, "--data", str(junk))
    assert_one_line_error(result, "junk.npz", "not an .npz archive")
    assert "allow_pickle" not in result.stderr


def test_whole_valued_float_pixels_are_accepted(tmp_path):
    from mcu_onebit.datasets import load_dataset

    data = load_dataset("mine", _npz(tmp_path, x_train=_images(dtype=np.float64), y_train=_labels()))
    assert data.x_train.dtype == np.uint8 and np.array_equal(data.x_train, _images())


@pytest.mark.parametrize("where", ["parent is a file", "out is a folder", "not .h5"])
def test_unwritable_output_fails_before_training(env, tmp_path, where):
    blocker = tmp_path / "blocker"
    if where == "parent is a file":
        blocker.write_text("x")
        out, words = blocker / "sub" / "m.h5", ["cannot write", "not a folder"]
    elif where == "out is a folder":
        blocker.mkdir()
        out, words = blocker, ["is a folder"]
    else:
        out, words = tmp_path / "model.keras", [".h5"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_cli("train", "--out", str(out), "--epochs", "1", env=env)
    assert_one_line_error(result, *words)
    assert "Epoch" not in result.stdout  # refused before training started
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
