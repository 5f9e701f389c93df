"""Training recipes: schedules, augmentation, the 2019 layers, both methods x both
precisions end to end on tiny data, architecture formulas and the int8 twin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_run import assert_one_line_error, run_cli

from mcu_onebit.converters.twin import convert_twin, inference_clone
from mcu_onebit.datasets import Augmentation, BatchStream, augment_batch, default_augmentation
from mcu_onebit.errors import OnebitError
from mcu_onebit.layers import BinaryConv2D, shifted_relu
from mcu_onebit.modelfile import load_model, write_text_atomic
from mcu_onebit.models import LOGITS, METHODS, PRECISIONS, Recipe, build_model
from mcu_onebit.train import (
    TrainConfig, _save_checkpoint, checkpoint_path, cosine_lr, lr_schedule, recompute_bn_statistics, train,
    warm_restarts_lr,
)

# --- learning-rate schedules -------------------------------------------------------------


@pytest.mark.parametrize("restart", [0, 2, 6, 14, 30])
def test_warm_restarts_return_to_lr_max_at_each_restart(restart):
    assert float(warm_restarts_lr(float(restart), 0.1, 1e-4, 2.0)) == pytest.approx(0.1)
    if restart:  # just before a restart the rate has annealed to (almost) lr_min
        assert float(warm_restarts_lr(restart - 1e-3, 0.1, 1e-4, 2.0)) < 2e-4


def test_warm_restarts_per_step_schedule_restarts_at_epochs_2_6_14():
    steps = 7
    schedule = lr_schedule(steps, TrainConfig(method="mcdonnell2018", epochs=62))
    lrs = np.array([float(schedule(s)) for s in range(62 * steps)])
    restarts = [s // steps for s in range(1, len(lrs)) if lrs[s] > lrs[s - 1]]
    assert restarts == [2, 6, 14, 30]
    assert lrs[0] == pytest.approx(0.1) and lrs.min() >= 1e-4


def test_cosine_is_monotone_from_lr_max_to_lr_min():
    steps, epochs = 5, 20
    config = TrainConfig(method="shifted-relu2019", epochs=epochs)
    assert config.resolved_schedule == "cosine"
    schedule = lr_schedule(steps, config)
    lrs = np.array([float(schedule(s)) for s in range(epochs * steps + 1)])
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(1e-4)
    assert np.all(np.diff(lrs) <= 1e-9)
    assert float(cosine_lr(10.0, 0.1, 1e-4, 20.0)) == pytest.approx((0.1 + 1e-4) / 2)


# --- augmentation --------------------------------------------------------------------------


def _images(n=16, h=12, w=12, c=3):
    return np.random.default_rng(1).integers(0, 256, (n, h, w, c)).astype("float32")


def test_no_augmentation_is_identity_and_shapes_are_preserved():
    x = _images()
    np.testing.assert_array_equal(augment_batch(x, 0, Augmentation()), x)
    y = augment_batch(x, [0, 0], Augmentation(flip=True, crop_pad=4, cutout=6))
    assert y.shape == x.shape and y.dtype == np.float32


def test_flips_only_when_enabled():
    x = _images(n=64)
    y = augment_batch(x, [3, 4], Augmentation(flip=True))
    flipped = np.array([np.array_equal(a, b[:, ::-1]) for a, b in zip(y, x)])
    same = np.array([np.array_equal(a, b) for a, b in zip(y, x)])
    assert np.all(flipped | same) and 10 < flipped.sum() < 54
    y = augment_batch(x, [3, 4], Augmentation(flip=False, crop_pad=0, cutout=0))
    np.testing.assert_array_equal(y, x)


def test_crop_shifts_content_and_fills_the_border_with_random_values():
    p = 3
    x = _images(n=32, c=1) + 0.5  # non-integers: every random fill value differs from them
    y = augment_batch(x, [5, 6], Augmentation(crop_pad=p))
    shifts = []
    for a, b in zip(y, x):
        for dy in range(-p, p + 1):
            for dx in range(-p, p + 1):
                shifted = np.roll(b, (-dy, -dx), axis=(0, 1))
                rows = slice(max(0, -dy), b.shape[0] - max(0, dy))
                cols = slice(max(0, -dx), b.shape[1] - max(0, dx))
                if np.array_equal(a[rows, cols], shifted[rows, cols]):
                    shifts.append((dy, dx))
                    border = np.ones(a.shape, bool)
                    border[rows, cols] = False
                    fill = a[border]
                    assert np.all((fill >= 0) & (fill <= 255) & (fill == np.round(fill)))
                    break
            else:
                continue
            break
        else:
            pytest.fail("an output is not a shifted copy of its input")
    assert len(set(shifts)) > 5  # offsets vary between images


def test_cutout_fills_a_clipped_square_with_random_values():
    s = 5
    x = np.full((64, 12, 12, 3), 0.5, np.float32)
    y = augment_batch(x, [7, 8], Augmentation(cutout=s))
    for a in y:
        changed = a != 0.5
        rows, cols = np.nonzero(changed.any(axis=(1, 2)))[0], np.nonzero(changed.any(axis=(0, 2)))[0]
        assert 1 <= len(rows) <= s and 1 <= len(cols) <= s
        assert changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one filled rectangle
        fill = a[changed]
        assert np.all((fill >= 0) & (fill <= 255) & (fill == np.round(fill))) and len(np.unique(fill)) > 1
    full = np.mean([(a != 0.5).any(axis=2).sum() == s * s for a in y])
    assert 0.2 < full < 1.0  # mostly inside, sometimes clipped at the border


def test_augmentation_is_deterministic_given_the_seed():
    x, aug = _images(), Augmentation(flip=True, crop_pad=4, cutout=6)
    a = augment_batch(x, [11, 2], aug)
    np.testing.assert_array_equal(a, augment_batch(x, [11, 2], aug))
    assert not np.array_equal(a, augment_batch(x, [11, 3], aug))


def test_augmentation_keeps_pixels_whole_and_in_range():
    x = _images(n=32).round()
    y = augment_batch(x, 9, Augmentation(flip=True, crop_pad=4, cutout=6))
    assert y.min() >= 0 and y.max() <= 255 and np.array_equal(y, np.round(y))


def test_batch_stream_is_a_pure_function_of_the_batch_index():
    x = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 1), np.uint8)  # image i: all i
    y = np.arange(10)
    stream = BatchStream(x, y, 4, Augmentation(crop_pad=1), seed=3)
    assert stream.steps_per_epoch == 3
    epoch0 = [stream.batch(i) for i in range(3)]
    assert all(images.shape == (4, 8, 8, 1) and labels.shape == (4,) for images, labels in epoch0)  # last batch wraps
    seen = np.concatenate([labels for _, labels in epoch0])
    assert set(seen) == set(range(10)) and len(seen) == 12
    for images, labels in epoch0:  # labels stay with their images: a 1-pixel shift keeps >= 7x7 of them
        assert all((image == label).sum() >= 49 for image, label in zip(images, labels))
    again = BatchStream(x, y, 4, Augmentation(crop_pad=1), seed=3)
    for i in (4, 1, 0):  # any order, a fresh stream: the same batches
        np.testing.assert_array_equal(again.batch(i)[0], stream.batch(i)[0])
    assert not np.array_equal(stream.batch(3)[1], stream.batch(0)[1])  # each epoch its own order


def test_default_augmentation_per_dataset():
    assert not default_augmentation("digits", (8, 8, 1)).enabled
    mnist = default_augmentation("mnist", (28, 28, 1))
    assert mnist.crop_pad > 0 and not mnist.flip and mnist.cutout == 0
    assert default_augmentation("cifar10", (32, 32, 3)) == Augmentation(flip=True, crop_pad=4, cutout=18)
    assert TrainConfig(dataset="cifar10", cutout=0, flip=False).augmentation((32, 32, 3)) == Augmentation(crop_pad=4)


# --- shifted ReLU ----------------------------------------------------------------------------


def test_shifted_relu_forward_and_gradient():
    x = tf.Variable([-3.0, -1.5, -0.5, 0.0, 2.0])
    with tf.GradientTape() as tape:
        y = shifted_relu(x)
    np.testing.assert_array_equal(y.numpy(), [-1.0, -1.0, -0.5, 0.0, 2.0])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 0.0, 1.0, 1.0, 1.0])


# --- architectures ----------------------------------------------------------------------------


def _bns(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("arch", ["wrn-8-1", "tiny-resnet", "cnn-small"])
def test_2018_bn_has_no_affine_except_the_input_bn(arch):
    model = build_model(arch, (16, 16, 3), 10, Recipe("mcdonnell2018"))
    bns = {layer.name: layer for layer in _bns(model)}
    assert bns.pop("input_bn").center and bns["classifier_bn"].epsilon == 1e-5
    assert bns and not any(bn.center or bn.scale for bn in bns.values())


@pytest.mark.parametrize("arch", ["wrn-8-1", "tiny-resnet", "cnn-small"])
def test_small_network_options_affine_bn_float_ends_and_weight_decay(arch):
    recipe = Recipe("mcdonnell2018", bn_affine=True, float_stem=True, float_classifier=True,
                    weight_decay=1e-4, binary_weight_decay=0.0)
    model = build_model(arch, (16, 16, 3), 10, recipe)
    assert all(bn.center and bn.scale for bn in _bns(model))
    convs = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    ends = [convs.pop("stem_conv"), convs.pop("classifier_conv")]
    assert not any(isinstance(c, BinaryConv2D) for c in ends) and all(isinstance(c, BinaryConv2D) for c in convs.values())
    assert all(c.kernel_regularizer.get_config()["l2"] == pytest.approx(5e-5) for c in ends)
    assert all(c.kernel_regularizer is None for c in convs.values())  # no decay on the latent weights
    default = build_model(arch, (16, 16, 3), 10, Recipe("mcdonnell2018"))
    assert all(layer.kernel_regularizer.get_config()["l2"] == pytest.approx(2.5e-4)
               for layer in default.layers if isinstance(layer, BinaryConv2D))


@pytest.mark.parametrize("arch", ["wrn-8-1", "tiny-resnet", "cnn-small"])
def test_2019_has_no_bn_but_the_input_one(arch):
    model = build_model(arch, (16, 16, 3), 10, Recipe("shifted-relu2019"))
    assert [layer.name for layer in _bns(model)] == ["input_bn"]
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("ShiftedReLU") == kinds.count("BinaryConv2D") - 1  # before every conv but the stem
    assert "Temperature" in kinds


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("depth, k", [(8, 1), (20, 4)])
def test_wrn_conv_count_and_parameters_match_the_formula(depth, k, precision):
    cin, classes = 3, 10
    model = build_model(f"wrn-{depth}-{k}", (32, 32, cin), classes, Recipe(precision=precision))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    n = (depth - 2) // 6
    assert len(convs) == 1 + 2 * 3 * n + 1
    assert all(isinstance(c, BinaryConv2D) == (precision == "1bit") and not c.use_bias for c in convs)
    w1, w2, w3 = 16 * k, 32 * k, 64 * k
    expected = 9 * cin * w1 + 2 * n * 9 * w1 * w1  # stem, stage 1
    expected += 9 * w1 * w2 + (2 * n - 1) * 9 * w2 * w2  # stage 2
    expected += 9 * w2 * w3 + (2 * n - 1) * 9 * w3 * w3  # stage 3
    expected += w3 * classes  # 1x1 classifier
    assert sum(int(np.prod(c.kernel.shape)) for c in convs) == expected
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected + 2 * cin  # + the input BN's scale and offset
    assert model.get_layer(LOGITS).output.shape == (None, classes)


def test_unknown_recipe_and_arch_are_one_line_errors():
    with pytest.raises(OnebitError, match="--method"):
        Recipe("mcdonnell2017")
    with pytest.raises(OnebitError, match="--arch"):
        build_model("wrn-9-1", (8, 8, 1), 10)


# --- BN statistics recomputed after training ----------------------------------------------------


def test_recompute_bn_sets_moving_stats_to_the_mean_batch_statistics():
    keras.utils.set_random_seed(0)
    model = build_model("cnn-small", (8, 8, 2), 4, Recipe("mcdonnell2018"))
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (16, 8, 8, 2)).astype("float32") * (k + 1) / 3 for k in range(3)]
    bns = _bns(model)
    input_bn, after_stem = bns[0], bns[1]
    assert input_bn.name == "input_bn" and after_stem.input is model.get_layer("stem_conv").output
    gamma, beta = (keras.ops.convert_to_numpy(w) for w in (input_bn.gamma, input_bn.beta))
    # Expected, in numpy: the input BN sees the raw batches; the BN after the stem sees the
    # stem conv of the batches normalised with their own batch statistics (training mode).
    stem_inputs = [gamma * (b - b.mean((0, 1, 2))) / np.sqrt(b.var((0, 1, 2)) + input_bn.epsilon) + beta for b in batches]
    stem_outputs = [keras.ops.convert_to_numpy(model.get_layer("stem_conv")(x)) for x in stem_inputs]
    expected = {
        input_bn.name: (np.mean([b.mean((0, 1, 2)) for b in batches], 0), np.mean([b.var((0, 1, 2)) for b in batches], 0)),
        after_stem.name: (np.mean([s.mean((0, 1, 2)) for s in stem_outputs], 0),
                          np.mean([s.var((0, 1, 2)) for s in stem_outputs], 0)),
    }
    weights = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]

    assert recompute_bn_statistics(model, batches) == 3
    for bn in (input_bn, after_stem):
        mean, var = expected[bn.name]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), var, rtol=1e-4, atol=1e-4)
    assert np.abs(expected[input_bn.name][0]).min() > 50  # far from the initial moving mean 0
    for before, after in zip(weights, model.trainable_weights):  # weights frozen
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))


# --- end to end on tiny data -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    y = rng.integers(0, 4, 48)
    x = (rng.integers(0, 60, (48, 16, 16, 3)) + 60 * y[:, None, None, None]).astype(np.uint8)
    np.savez(path, x_train=x, y_train=y)  # train split only, like cifar10_train.npz
    return path


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("method", METHODS)
def test_each_recipe_trains_and_round_trips(tiny_npz, tmp_path, method, precision):
    out = tmp_path / "m.h5"
    config = TrainConfig(dataset="tiny", data=tiny_npz, arch="cnn-small", method=method, precision=precision,
                         epochs=2, batch_size=16, val_split=0.25, recompute_bn=precision == "1bit")
    result = train(config, out, log=lambda *_: None)
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["backend"] == "tensorflow" and log["devices"] == "one device"
    if config.recompute_bn:  # one epoch of 36 training images in batches of 16: 3 batches
        assert log["bn_recomputed_batches"] == 3 and log["val_accuracy"] == log["val_accuracy_after_bn_recompute"]
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert all(e["lr"] > 0 and e["seconds"] > 0 and "val_accuracy" in e for e in log["epochs"])
    assert log["test_accuracy"] is None and log["val_accuracy"] == result["val_accuracy"]
    assert log["augmentation"] == {"flip": True, "crop_pad": 4, "cutout": 9}
    model, meta = load_model(out)
    assert (meta.method, meta.precision) == (method, precision)
    assert bool(meta.binary_layers) == (precision == "1bit")
    x = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3)).astype("float32")
    original = keras.models.load_model(out, compile=False)  # same file; prediction must be deterministic
    np.testing.assert_allclose(model.predict(x, verbose=0), original.predict(x, verbose=0), atol=1e-6)


def test_a_dataset_without_test_split_needs_a_validation_split(tiny_npz, tmp_path):
    with pytest.raises(OnebitError, match="--val-split"):
        train(TrainConfig(dataset="tiny", data=tiny_npz, arch="cnn-small", epochs=1), tmp_path / "m.h5")


# --- the int8 twin ---------------------------------------------------------------------------


def _twin_ops_and_filters(model, calibration):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=convert_twin(model, calibration))
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    filters = []
    for op in interpreter._get_ops_details():
        if op["op_name"] == "CONV_2D":
            filters.append(interpreter.get_tensor(op["inputs"][1]))
    return ops, filters


def test_2019_twin_keeps_1bit_filters_through_shifted_relu_and_temperature():
    keras.utils.set_random_seed(0)
    model = build_model("wrn-8-1", (12, 12, 1), 10, Recipe("shifted-relu2019"))
    assert isinstance(inference_clone(model).get_layer("temperature"), type(model.get_layer("temperature")))
    calibration = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    ops, filters = _twin_ops_and_filters(model, calibration)
    assert set(ops) == {"CONV_2D", "MAXIMUM", "ADD", "AVERAGE_POOL_2D", "PAD", "MEAN"}
    assert ops.count("CONV_2D") == 8 and ops.count("MAXIMUM") == 7  # the temperature folds into the classifier
    for f in filters:
        assert f.dtype == np.int8 and set(np.unique(np.abs(f))) == {127}


# --- checkpoints, resume and curves ------------------------------------------------------------


def _checkpoint_epochs(path) -> int:
    try:
        with np.load(path) as f:
            return len(json.loads(f["state"].tobytes())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_npz, tmp_path):
    """A CLI run killed (SIGKILL) after its first checkpoints, then `train --resume`, ends
    with the weights and per-epoch log of a run that was never interrupted."""
    args = ["--dataset", "tiny", "--data", str(tiny_npz), "--arch", "cnn-small", "--epochs", "12",
            "--batch-size", "16", "--val-split", "0.25", "--no-recompute-bn"]
    reference = tmp_path / "reference.h5"
    train(TrainConfig(dataset="tiny", data=tiny_npz, arch="cnn-small", epochs=12, batch_size=16, val_split=0.25,
                      recompute_bn=False), reference, log=lambda *_: None)
    assert not checkpoint_path(reference).exists()  # removed once the model is written

    out = tmp_path / "m.h5"
    cli = Path(sys.executable).with_name("mcu-onebit")
    process = subprocess.Popen([str(cli), "train", *args, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _checkpoint_epochs(checkpoint_path(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    kept = _checkpoint_epochs(checkpoint_path(out))
    assert 2 <= kept < 12 and not out.exists()

    resumed = run_cli("train", *args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {kept}" in resumed.stdout
    log, expected = (json.loads(p.with_suffix(".json").read_text())["epochs"] for p in (out, reference))
    assert [e["epoch"] for e in log] == list(range(1, 13))
    for field in ("lr", "lr_end", "loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([e[field] for e in log], [e[field] for e in expected], rtol=1e-5, err_msg=field)
    got, want = (keras.models.load_model(p, compile=False).get_weights() for p in (out, reference))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not checkpoint_path(out).exists()
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_resume_mistakes_are_one_line_errors(tiny_npz, tmp_path):
    args = ["--dataset", "tiny", "--data", str(tiny_npz), "--arch", "cnn-small", "--epochs", "1",
            "--batch-size", "16", "--val-split", "0.25", "--out", str(tmp_path / "m.h5")]
    assert_one_line_error(run_cli("train", *args, "--resume"), "no checkpoint")
    # A checkpoint that a run with other options left:
    model = build_model("cnn-small", (16, 16, 3), 4, Recipe("mcdonnell2018", "1bit"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    other = TrainConfig(dataset="tiny", data=tiny_npz, arch="cnn-small", epochs=5, batch_size=16, val_split=0.25)
    _save_checkpoint(checkpoint_path(tmp_path / "m.h5"), model, other, [])
    assert_one_line_error(run_cli("train", *args, "--resume"), "other options (epochs)")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_get_the_permissions_of_a_plain_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "report.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("report.json", "plain.json")}
    assert modes["report.json"] == modes["plain.json"] == 0o666 & ~umask
