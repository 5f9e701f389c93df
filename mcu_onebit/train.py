"""Training with McDonnell's recipes: SGD momentum 0.9, batch 125, weight decay on the
latent weights (in the model's regularisers), cosine warm restarts (2018) or one cosine
decay (2019), and McDonnell's augmentation, fed by tf.data.

Training runs inside a `tf.distribute` strategy scope: MirroredStrategy when more than
one GPU is visible, TF's default (a no-op) otherwise; the same code path either way.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .datasets import Augmentation, augment_batch, default_augmentation, load_dataset
from .errors import OnebitError
from .layers import BinaryConv2D
from .modelfile import ModelMeta, save_model, write_text_atomic

SCHEDULES = ("warm-restarts", "cosine")
DEFAULT_SCHEDULE = {"mcdonnell2018": "warm-restarts", "shifted-relu2019": "cosine"}


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits"
    data: Path | None = None
    arch: str = "tiny-resnet"
    method: str = "mcdonnell2018"  # or shifted-relu2019
    precision: str = "1bit"  # or float: the same network with full-precision convs
    epochs: int = 30
    batch_size: int = 125
    lr_max: float = 0.1
    lr_min: float = 1e-4
    schedule: str | None = None  # None: the method's own (warm-restarts 2018, cosine 2019)
    first_cycle: int = 2  # warm restarts: cycles of 2, 4, 8, ... epochs
    flip: bool | None = None  # None: the dataset's default (see datasets.default_augmentation)
    crop_pad: int | None = None
    cutout: int | None = None
    val_split: float = 0.0  # > 0: hold out this fraction of the training data for validation
    seed: int = 0

    @property
    def resolved_schedule(self) -> str:
        return self.schedule or DEFAULT_SCHEDULE.get(self.method, "warm-restarts")

    def augmentation(self, input_shape) -> Augmentation:
        base = default_augmentation(self.dataset, input_shape)
        return Augmentation(
            flip=base.flip if self.flip is None else self.flip,
            crop_pad=base.crop_pad if self.crop_pad is None else self.crop_pad,
            cutout=base.cutout if self.cutout is None else self.cutout,
        )


def warm_restarts_lr(epoch, lr_max: float, lr_min: float, first_cycle: float):
    """Cosine annealing with warm restarts (Loshchilov & Hutter) at fractional `epoch`:
    lr_min + (lr_max - lr_min)(1 + cos(pi t)) / 2, t the position within the current cycle;
    cycles of first_cycle, 2 first_cycle, 4 first_cycle, ... epochs (McDonnell 2018 uses
    2, 4, 8, ...: restarts at epochs 2, 6, 14, 30, 62, ...). Works on numpy or keras tensors."""
    from keras import ops

    cycle = ops.floor(ops.log2(epoch / first_cycle + 1.0))  # cycle c starts at first*(2^c - 1)
    start = first_cycle * (ops.power(2.0, cycle) - 1.0)
    t = (epoch - start) / (first_cycle * ops.power(2.0, cycle))
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + ops.cos(math.pi * t))


def cosine_lr(epoch, lr_max: float, lr_min: float, epochs: float):
    """One cosine decay from lr_max at epoch 0 to lr_min at `epochs` (McDonnell 2019)."""
    from keras import ops

    t = ops.minimum(epoch / epochs, 1.0)
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + ops.cos(math.pi * t))


def lr_schedule(steps_per_epoch: int, config: TrainConfig):
    """The per-step Keras schedule for `config.resolved_schedule`."""
    import keras
    from keras import ops

    name = config.resolved_schedule
    if name not in SCHEDULES:
        raise OnebitError(f"unknown --schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")

    class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            epoch = ops.cast(step, "float32") / steps_per_epoch
            if name == "cosine":
                return cosine_lr(epoch, config.lr_max, config.lr_min, float(config.epochs))
            return warm_restarts_lr(epoch, config.lr_max, config.lr_min, float(config.first_cycle))

    return EpochSchedule()


def warm_restarts(steps_per_epoch: int, config: TrainConfig):
    """The warm-restarts schedule whatever config.schedule says (kept for callers)."""
    from dataclasses import replace

    return lr_schedule(steps_per_epoch, replace(config, schedule="warm-restarts"))


def training_dataset(x, y, batch_size: int, aug: Augmentation, seed: int):
    """An endless tf.data stream of (augmented float32 images, labels): reshuffled every
    epoch, each batch augmented with its own stateless seed (seed, batch number), so the
    run is reproducible. Take ceil(N / batch_size) batches per epoch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat()

    def prepare(i, batch):
        images, labels = batch
        images = tf.cast(images, tf.float32)  # raw 0..255 pixels: the input BN normalises
        if aug.enabled:
            images = augment_batch(images, tf.stack([tf.constant(seed, tf.int64), i]), aug)
        return images, labels

    return ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def split_validation(x, y, fraction: float, seed: int):
    """(x_train, y_train, x_val, y_val): a seeded random `fraction` of the samples held out."""
    if not 0.0 < fraction < 1.0:
        raise OnebitError(f"--val-split must be between 0 and 1 (exclusive), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def distribution_strategy():
    """MirroredStrategy over the GPUs when there are several, else TF's default strategy."""
    import tensorflow as tf

    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(config: TrainConfig, out: Path, log=print) -> dict:
    """Trains, writes `out` (model + metadata) and `out` with suffix .json (the log)."""
    import keras

    from .models import Recipe, build_model

    if config.epochs < 1:
        raise OnebitError("--epochs must be at least 1")
    if config.batch_size < 1:
        raise OnebitError("--batch-size must be at least 1")
    if config.resolved_schedule not in SCHEDULES:
        raise OnebitError(f"unknown --schedule {config.resolved_schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if config.first_cycle < 1:
        raise OnebitError("--first-cycle must be at least 1 epoch")
    recipe = Recipe(config.method, config.precision)
    data = load_dataset(config.dataset, config.data)
    x_train, y_train = data.x_train, data.y_train
    if config.val_split:
        x_train, y_train, x_val, y_val = split_validation(x_train, y_train, config.val_split, config.seed)
    elif len(data.x_test):
        x_val, y_val = data.x_test, data.y_test
    else:
        raise OnebitError(f"dataset {config.dataset!r} has no test split; hold out a validation split with --val-split 0.1")
    aug = config.augmentation(data.input_shape)
    if aug.crop_pad < 0 or aug.cutout < 0:
        raise OnebitError("--crop-pad and --cutout must be 0 (off) or positive pixel counts")

    keras.utils.set_random_seed(config.seed)
    steps = math.ceil(len(x_train) / config.batch_size)
    schedule = lr_schedule(steps, config)
    with distribution_strategy().scope():
        model = build_model(config.arch, data.input_shape, len(data.class_names), recipe)
        model.compile(
            optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    log_path = out.with_suffix(".json")
    header = {
        "config": _jsonable(config), "augmentation": asdict(aug), "schedule": config.resolved_schedule,
        "train_images": len(x_train), "validation_images": len(x_val),
    }
    history: list[dict] = []

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            history.append({
                "epoch": epoch + 1,
                "lr": float(schedule(epoch * steps)),  # at the epoch's first step
                "lr_end": float(schedule((epoch + 1) * steps - 1)),
                "seconds": round(time.time() - self.started, 2),
                **{k: float(v) for k, v in (logs or {}).items()},
            })
            write_text_atomic(log_path, json.dumps({**header, "epochs": history}, indent=2))

    log(
        f"{config.method} {config.precision} {config.arch} on {config.dataset}: {len(x_train)} train / "
        f"{len(x_val)} {'validation' if config.val_split else 'test'} images, {config.resolved_schedule} lr, "
        f"augmentation {asdict(aug)}"
    )
    t0 = time.time()
    if aug.enabled:
        inputs = {
            "x": training_dataset(x_train, y_train, config.batch_size, aug, config.seed),
            "steps_per_epoch": steps, "shuffle": False,  # the dataset reshuffles itself
        }
    else:  # nothing to augment: arrays straight to Keras, which shuffles them (the digits demo's path)
        inputs = {"x": x_train.astype("float32"), "y": y_train, "batch_size": config.batch_size, "shuffle": True}
    model.fit(
        **inputs, epochs=config.epochs,
        validation_data=(x_val.astype("float32"), y_val), validation_batch_size=500,
        verbose=2, callbacks=[EpochLog()],
    )
    train_seconds = time.time() - t0
    test_accuracy = None
    if len(data.x_test):
        _, test_accuracy = model.evaluate(data.x_test.astype("float32"), data.y_test, batch_size=500, verbose=0)
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    meta = ModelMeta(config.dataset, config.arch, data.input_shape, data.class_names, binary,
                     method=config.method, precision=config.precision)
    save_model(model, meta, out)
    result = {
        **header, "epochs": history,
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
        "val_accuracy": history[-1].get("val_accuracy"),
        "train_seconds": round(train_seconds, 1), "model": str(out),
    }
    write_text_atomic(log_path, json.dumps(result, indent=2))
    score = f"test accuracy {test_accuracy:.4f}" if test_accuracy is not None else f"validation accuracy {result['val_accuracy']:.4f} (no test split)"
    log(f"{score}; wrote {out} and {log_path}")
    return result


def _jsonable(config: TrainConfig) -> dict:
    d = asdict(config)
    d["data"] = str(config.data) if config.data else None
    return d
