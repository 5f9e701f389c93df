"""Training: McDonnell 2018's recipe (SGD momentum 0.9, cosine warm restarts, weight
decay on the latent weights) for the networks in `models`."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .datasets import load_dataset
from .errors import OnebitError
from .layers import BinaryConv2D
from .modelfile import ModelMeta, save_model, write_text_atomic


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits"
    data: Path | None = None
    arch: str = "tiny-resnet"
    epochs: int = 30
    batch_size: int = 125
    lr_max: float = 0.1
    lr_min: float = 1e-4
    first_cycle: int = 2  # warm restarts: cycles of 2, 4, 8, ... epochs
    seed: int = 0


def warm_restarts(steps_per_epoch: int, config: TrainConfig):
    """Cosine annealing with warm restarts (Loshchilov & Hutter) per step, from lr_max to
    lr_min, cycle lengths first_cycle, 2*first_cycle, 4*first_cycle, ... epochs (McDonnell
    2018 uses 2, 4, 8, ...: restarts after epochs 2, 6, 14, 30, 62, ...)."""
    import keras
    from keras import ops

    class WarmRestarts(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            epoch = ops.cast(step, "float32") / steps_per_epoch
            cycle = ops.floor(ops.log2(epoch / config.first_cycle + 1.0))  # cycle c starts at first*(2^c - 1)
            start = config.first_cycle * (ops.power(2.0, cycle) - 1.0)
            t = (epoch - start) / (config.first_cycle * ops.power(2.0, cycle))
            return config.lr_min + 0.5 * (config.lr_max - config.lr_min) * (1.0 + ops.cos(math.pi * t))

    return WarmRestarts()


def train(config: TrainConfig, out: Path, log=print) -> dict:
    """Trains, writes `out` (model + metadata) and `out` with suffix .json (the log)."""
    import keras

    from .models import build_model

    if config.epochs < 1:
        raise OnebitError("--epochs must be at least 1")
    data = load_dataset(config.dataset, config.data)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config.arch, data.input_shape, len(data.class_names))
    steps = math.ceil(len(data.x_train) / config.batch_size)

    model.compile(
        optimizer=keras.optimizers.SGD(warm_restarts(steps, config), momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log_path = out.with_suffix(".json")
    history: list[dict] = []

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
            write_text_atomic(log_path, json.dumps({"config": _jsonable(config), "epochs": history}, indent=2))

    x_train = data.x_train.astype("float32")  # raw 0..255 pixels: the input BN normalises
    t0 = time.time()
    model.fit(
        x_train, data.y_train, batch_size=config.batch_size, epochs=config.epochs,
        validation_data=(data.x_test.astype("float32"), data.y_test),
        shuffle=True, verbose=2, callbacks=[EpochLog()],
    )
    _, test_accuracy = model.evaluate(data.x_test.astype("float32"), data.y_test, verbose=0)
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    meta = ModelMeta(config.dataset, config.arch, data.input_shape, data.class_names, binary)
    save_model(model, meta, out)
    result = {
        "config": _jsonable(config), "epochs": history, "test_accuracy": float(test_accuracy),
        "train_seconds": round(time.time() - t0, 1), "model": str(out),
    }
    write_text_atomic(log_path, json.dumps(result, indent=2))
    log(f"test accuracy {test_accuracy:.4f}; wrote {out} and {log_path}")
    return result


def _jsonable(config: TrainConfig) -> dict:
    d = asdict(config)
    d["data"] = str(config.data) if config.data else None
    return d
