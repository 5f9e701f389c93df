"""Training with McDonnell's recipes: SGD momentum 0.9, batch 125, weight decay on the
latent weights (in the model's regularisers), cosine warm restarts (2018) or one cosine
decay (2019), and McDonnell's augmentation.

Everything here is Keras 3's backend-agnostic API: the model, the schedules (`keras.ops`)
and the input pipeline (a `keras.utils.PyDataset` over `datasets.BatchStream`: numpy
augmentation with seeded generators), so training runs on the backend KERAS_BACKEND names
(tensorflow, jax, torch), and the `.h5` it writes loads under TensorFlow for conversion.
Several devices go through the backend's own data parallelism:
`keras.distribution.DataParallel` on JAX, `tf.distribute.MirroredStrategy` on TensorFlow
with several GPUs; one device (a CPU) needs neither. Several processes (`cluster.Cluster`,
JAX only) run the same training: every process builds the same seeded global batches and
reads its own rows of each (`cluster.Share`), and process 0 alone writes files.

`recompute_bn_statistics` optionally replaces the batch-norm moving statistics after
training by the average batch statistics over one epoch of augmented training batches,
the weights frozen (McDonnell 2018 reports a small benefit).

Options, the output path and the data are checked before Keras is imported, so a user
mistake is a quick one-line `OnebitError` and nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import native
from .archs import default_bn_affine, parse_arch
from .cluster import Cluster, Share, broadcast_bytes, check_cluster, join, local_devices
from .datasets import Augmentation, BatchStream, default_augmentation, load_dataset, split_validation
from .errors import ClusterFailure, Interrupted, OnebitError
from .modelfile import ModelMeta, atomic_write, save_model, write_text_atomic
from .outputs import check_file_target

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
    # After training, BN moving statistics := the mean batch statistics of the final weights
    # over one augmented epoch. On by default: with 1-bit weights, latent weights near zero
    # keep flipping signs to the last step, so moving averages lag the final network
    # (digits, tiny-resnet, 62 epochs: test accuracy 0.939 without, 0.978 with).
    recompute_bn: bool = True
    # Network options for small networks (see models.Recipe); the defaults are McDonnell's.
    weight_decay: float = 5e-4  # SGD convention, full-precision convs
    binary_weight_decay: float = 5e-4  # SGD convention, the binary convs' latent weights
    bn_affine: bool | None = None  # inner BNs learn scale and offset; None: archs.default_bn_affine
    float_stem: bool = False
    float_classifier: bool = False

    @property
    def resolved_bn_affine(self) -> bool:
        return default_bn_affine(self.arch) if self.bn_affine is None else self.bn_affine

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


def py_dataset(stream: BatchStream, start: int = 0, share: Share = Share()):
    """`stream` as an endless `keras.utils.PyDataset` (fit it with steps_per_epoch):
    item i is this process's share of `stream.batch(start + i)` on every backend (start:
    the batches a resumed run has trained on already). Every process augments the whole
    global batch and keeps its rows: the random draws are per batch, so that is what makes
    the union of the shares the batch of a single-process run."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        @property
        def num_batches(self):
            return None  # endless: Keras keeps one iterator across epochs

        def __getitem__(self, i):
            return share.of(stream.batch(start + i))

    return Batches()


def recompute_bn_statistics(model, batches) -> int:
    """Sets every BatchNormalization layer's moving mean and variance to the average, over
    `batches` (image batches), of the per-channel batch mean and (biased) batch variance
    of that layer's input in training mode, the weights frozen: during the pass every BN
    normalises with its batch statistics, as in training, so a BN sees what it saw while
    training. Returns the number of batches.

    One compiled `predict` of a model that outputs, per BN, the moments of its input;
    `keras.ops` only, so any backend."""
    import keras
    from keras import ops

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    batches = [np.asarray(b, np.float32) for b in batches]
    if not bns or not batches:
        return 0
    features = keras.Model(model.inputs, [bn.input for bn in bns])

    class BatchMoments(keras.Model):
        def call(self, x, training=False):
            outputs = features(x, training=True)  # every BN normalises with its batch statistics
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            moments = []
            for t in outputs:
                mean, var = ops.moments(t, axes=list(range(len(t.shape) - 1)))
                moments += [ops.expand_dims(mean, 0), ops.expand_dims(var, 0)]  # one row per batch
            return moments

    class Items(keras.utils.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return (batches[i],)

    moments = BatchMoments().predict(Items(), verbose=0)
    for k, bn in enumerate(bns):
        bn.moving_mean.assign(np.mean(moments[2 * k], axis=0))
        bn.moving_variance.assign(np.mean(moments[2 * k + 1], axis=0))
    return len(batches)


def distribution(batch_size: int, processes: int = 1):
    """(context, description, device count) for data-parallel training over the backend's
    devices, those of all `processes` (JAX's distributed runtime started). JAX with several
    devices: `keras.distribution.DataParallel`, set while the context is open; TensorFlow
    with several GPUs: a `tf.distribute.MirroredStrategy` scope; else one device and a
    no-op context. A (global) batch must split evenly over the devices."""
    import keras

    backend = keras.backend.backend()
    devices: list = []
    if backend == "jax":
        devices = keras.distribution.list_devices()
    elif backend == "tensorflow":
        import tensorflow as tf  # TF's own multi-GPU support: the one tf.* use, TF backend only

        devices = tf.config.list_logical_devices("GPU")
    if len(devices) < 2:
        return contextlib.nullcontext(), "one device", 1
    where = f" ({processes} processes of {local_devices()})" if processes > 1 else ""
    if batch_size % len(devices):
        multiple = -(-batch_size // len(devices)) * len(devices)
        raise OnebitError(
            f"--batch-size {batch_size} does not split evenly over {len(devices)} devices{where}; "
            f"pass a multiple of {len(devices)} (e.g. {multiple})"
        )
    if backend == "jax":
        where = f" in {processes} processes" if processes > 1 else ""
        return (_jax_data_parallel(devices), f"keras.distribution.DataParallel over {len(devices)} devices{where}",
                len(devices))
    return (tf.distribute.MirroredStrategy().scope(), f"tf.distribute.MirroredStrategy over {len(devices)} GPUs",
            len(devices))


def evaluation_arrays(x, y, devices: int, share: Share = Share()):
    """(x, y, sample_weight, batch_size) for evaluating on `devices` data-parallel devices:
    every batch must split evenly, so the arrays are padded to a multiple of `devices` with
    copies of the first sample weighted 0 (accuracy counts only the real ones; the mean
    loss is scaled by n / (n + pad), pad < devices), and the batch size (500) is rounded up
    to a multiple of `devices`. On one device: the arrays as they are, weights all 1. With
    several processes, this process's `share` of every batch (and of the batch size)."""
    x = np.asarray(x, np.float32)  # raw 0..255 pixels: the input BN normalises
    pad = -len(x) % devices
    weights = np.concatenate([np.ones(len(x), np.float32), np.zeros(pad, np.float32)])
    if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
        y = np.concatenate([y, np.repeat(y[:1], pad, axis=0)])
    batch = -(-500 // devices) * devices
    if share.count > 1:  # batches of `batch` (the last one shorter, still a multiple of devices)
        x, y, weights = (np.concatenate([share.of(a[i:i + batch]) for i in range(0, len(a), batch)])
                         for a in (x, y, weights))
    return x, y, weights, batch // share.count


@contextlib.contextmanager
def _jax_data_parallel(devices):
    import keras

    previous = keras.distribution.distribution()
    # auto_shard_dataset would shard only tf.data input (and refuses any other) across
    # processes; each process's PyDataset yields its own share already.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def check_config(config: TrainConfig) -> None:
    """Every option that can be checked without data or Keras; one-line errors."""
    parse_arch(config.arch)
    if config.epochs < 1:
        raise OnebitError("--epochs must be at least 1")
    if config.batch_size < 1:
        raise OnebitError("--batch-size must be at least 1")
    if config.resolved_schedule not in SCHEDULES:
        raise OnebitError(f"unknown --schedule {config.resolved_schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if config.first_cycle < 1:
        raise OnebitError("--first-cycle must be at least 1 epoch")
    if (config.crop_pad or 0) < 0 or (config.cutout or 0) < 0:
        raise OnebitError("--crop-pad and --cutout must be 0 (off) or positive pixel counts")
    if config.weight_decay < 0 or config.binary_weight_decay < 0:
        raise OnebitError("--weight-decay and --binary-weight-decay must be 0 (off) or positive")
    if config.val_split and not 0.0 < config.val_split < 1.0:
        raise OnebitError(f"--val-split must be between 0 and 1 (exclusive), got {config.val_split}")


def check_output_path(out: Path) -> None:
    """Fails now, before any training, when `out` (or the .json log and .png curves beside
    it) cannot be written: not an .h5 name, a folder in the way, a parent that is a file,
    no permission, a read-only disk; or when one of them exists and is not what an earlier
    `train` wrote (it would be replaced). Leaves nothing behind."""
    out = Path(out)
    check_file_target(out, "--out", ".h5")
    log, curves = out.with_suffix(".json"), out.with_suffix(".png")
    ours = _written_by_train(out, log) and (not curves.exists() or out.is_file() or log.is_file())
    for path in (out, log, curves):
        if path.is_dir():
            raise OnebitError(f"{path} is a folder, in the way of what `train --out {out}` writes; choose another --out")
        if path.exists() and not ours:
            raise OnebitError(f"{path} exists and was not written by `mcu-onebit train`; choose another --out "
                              "or move it away")


def _written_by_train(out: Path, log: Path) -> bool:
    """Whether the files at `out` and `log` that exist are an earlier run's (none counts too)."""
    if out.is_file():
        from .modelfile import read_meta

        try:
            read_meta(out)
        except OnebitError:
            return False
    if log.is_file():
        try:
            logged = json.loads(log.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(logged, dict) or "config" not in logged or "epochs" not in logged:
            return False
    return True


def checkpoint_path(out: Path) -> Path:
    """Where training keeps its state after every epoch, beside OUT; removed once OUT is written."""
    return Path(out).with_suffix(".ckpt.npz")


def _save_checkpoint(path: Path, model, config: TrainConfig, history: list[dict]) -> None:
    """Weights (BN statistics included), optimizer state (momenta, step count) and the log
    so far, in one file replaced atomically: a run killed at any moment loses at most the
    epoch in progress."""
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays |= {f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
    state = {"config": _jsonable(config), "history": history}
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, state=np.frombuffer(json.dumps(state).encode(), dtype=np.uint8), **arrays)


def _read_checkpoint(path: Path) -> bytes:
    """The bytes of the checkpoint `--resume` goes on from."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise OnebitError(f"no checkpoint {path} to resume from; train without --resume") from None
    except OSError as exc:
        raise OnebitError(f"cannot read the checkpoint {path} ({exc.strerror or exc}); delete it and train "
                          "without --resume") from None


def _load_checkpoint(path: Path, saved: bytes, model, config: TrainConfig) -> list[dict]:
    """Restores `_save_checkpoint`'s state, `saved` (read from `path`), into the compiled
    `model`; returns the log so far."""
    try:
        with np.load(io.BytesIO(saved)) as f:
            state = json.loads(f["state"].tobytes())
            weights = [f[f"w{i}"] for i in range(sum(k.startswith("w") for k in f.files))]
            optimizer = [f[f"o{i}"] for i in range(sum(k.startswith("o") for k in f.files))]
    except (OSError, ValueError, KeyError) as exc:
        raise OnebitError(f"cannot read the checkpoint {path} ({exc}); delete it and train without --resume") from None
    if state["config"] != _jsonable(config):
        changed = sorted(k for k, v in _jsonable(config).items() if state["config"].get(k) != v)
        raise OnebitError(f"the checkpoint {path} was made with other options ({', '.join(changed)}); "
                          "resume with the same options, or train without --resume to start again")
    model.optimizer.build(model.trainable_variables)
    if len(weights) != len(model.get_weights()) or len(optimizer) != len(model.optimizer.variables):
        raise OnebitError(f"the checkpoint {path} does not fit this network; delete it and train without --resume")
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, optimizer):
        variable.assign(value)
    return state["history"]


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss, accuracy and learning rate per epoch as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (loss, acc, lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, key in ((loss, "loss"), (acc, "accuracy")):
        axis.plot(epochs, [h.get(key) for h in history], "o-", label="train")
        if any(f"val_{key}" in h for h in history):
            axis.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", label="validation")
        axis.set(xlabel="epoch", title=key)
        axis.legend()
        axis.grid(alpha=0.3)
    lr.plot(epochs, [h["lr"] for h in history], "o-")
    lr.set(xlabel="epoch", title="learning rate at the epoch's start", yscale="log")
    lr.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
    finally:
        plt.close(fig)


def train(config: TrainConfig, out: Path, log=print, resume: bool = False, cluster: Cluster | None = None) -> dict:
    """Trains, writes `out` (model + metadata), `out` with suffix .json (the log) and .png
    (the curves). After every epoch the state goes to `checkpoint_path(out)`; with `resume`
    training goes on from there. Options, the output path and the data are checked before
    Keras is imported.

    With a `cluster`, this is one process of a multi-process run (JAX backend): the same
    training, each process reading its share of every global batch; process 0 alone checks
    and writes `out` and the checkpoint, and sends the checkpoint to the others on resume."""
    out = Path(out)
    check_config(config)
    if cluster is not None:
        check_cluster(cluster, config.batch_size, native.backend())
    writes = cluster is None or cluster.writes
    checkpoint = checkpoint_path(out)
    saved, problem = None, None
    if writes:
        try:
            check_output_path(out)
            saved = _read_checkpoint(checkpoint) if resume else None
        except OnebitError as exc:
            if cluster is None:
                raise
            problem = str(exc)  # every process stops with it (cluster.join)
    data = load_dataset(config.dataset, config.data)
    x_train, y_train = data.x_train, data.y_train
    if config.val_split:
        x_train, y_train, x_val, y_val = split_validation(x_train, y_train, config.val_split, config.seed)
    elif len(data.x_test):
        x_val, y_val = data.x_test, data.y_test
    else:
        raise OnebitError(f"dataset {config.dataset!r} has no test split; hold out a validation split with --val-split 0.1")
    aug = config.augmentation(data.input_shape)
    share = Share()
    if cluster is not None:
        join(cluster, {**_jsonable(config), "resume": resume}, problem)
        share = cluster.share
        if resume:
            saved = broadcast_bytes(saved)
    say = log if writes else (lambda *_: None)

    keras = native.keras()
    from .layers import BinaryConv2D
    from .models import Recipe, build_model

    recipe = Recipe(config.method, config.precision, weight_decay=config.weight_decay,
                    binary_weight_decay=config.binary_weight_decay, bn_affine=config.resolved_bn_affine,
                    float_stem=config.float_stem, float_classifier=config.float_classifier)
    keras.utils.set_random_seed(config.seed)  # the same in every process: the same initial weights
    stream = BatchStream(x_train, y_train, config.batch_size, aug, config.seed)
    steps = stream.steps_per_epoch
    schedule = lr_schedule(steps, config)
    context, placement, devices = distribution(config.batch_size, share.count)
    with context:
        model = build_model(config.arch, data.input_shape, len(data.class_names), recipe)
        model.compile(
            optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
            loss="sparse_categorical_crossentropy",
            weighted_metrics=["accuracy"],  # weighted: evaluation_arrays' padding counts 0 (training: all 1)
        )
        log_path = out.with_suffix(".json")
        header = {
            "config": _jsonable(config), "augmentation": asdict(aug), "schedule": config.resolved_schedule,
            "bn_affine": config.resolved_bn_affine,
            "train_images": len(x_train), "validation_images": len(x_val),
            "backend": keras.backend.backend(), "devices": placement, "processes": share.count,
        }
        history: list[dict] = _load_checkpoint(checkpoint, saved, model, config) if resume else []
        done = len(history)
        curves = out.with_suffix(".png")
        title = f"{config.method} {config.precision} {config.arch} on {config.dataset}"

        class EpochLog(keras.callbacks.Callback):
            signs = None

            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.time()
                if self.signs is None:
                    self.signs = _binary_signs(model)

            def on_epoch_end(self, epoch, logs=None):
                seconds = round(time.time() - self.started, 2)
                signs = _binary_signs(model)
                history.append({
                    "epoch": epoch + 1,
                    "lr": float(schedule(epoch * steps)),  # at the epoch's first step
                    "lr_end": float(schedule((epoch + 1) * steps - 1)),
                    "seconds": seconds,
                    **{k: float(v) for k, v in (logs or {}).items()},
                    **_weight_stats(model, self.signs, signs),
                })
                self.signs = signs
                if writes:
                    write_text_atomic(log_path, json.dumps({**header, "epochs": history}, indent=2))
                    plot_curves(history, curves, title)
                    _save_checkpoint(checkpoint, model, config, history)

        log(
            f"{title}: {len(x_train)} train / "
            f"{len(x_val)} {'validation' if config.val_split else 'test'} images, {config.resolved_schedule} lr, "
            f"augmentation {asdict(aug)}; Keras {keras.backend.backend()} backend, {placement}"
            + (f"; {cluster.describe()}" if cluster else "")
        )
        if done:
            say(f"resuming from {checkpoint} after epoch {done}")
        elif writes and checkpoint.exists():
            say(f"starting again: {checkpoint} (an interrupted run) is replaced after this epoch; "
                "stop now and add --resume to go on from it instead")
        *validation, eval_batch = evaluation_arrays(x_val, y_val, devices, share)
        with _stopping(cluster, checkpoint, history):
            model.fit(
                py_dataset(stream, start=done * steps, share=share), steps_per_epoch=steps, epochs=config.epochs,
                initial_epoch=done, shuffle=False, validation_data=tuple(validation),
                validation_batch_size=eval_batch, verbose=2 if writes else 0, callbacks=[EpochLog()],
            )
            train_seconds = sum(h["seconds"] for h in history)  # resumed runs included
            bn = {}
            if config.recompute_bn:
                first = config.epochs * steps  # the stream's next epoch: augmented batches not trained on
                n = recompute_bn_statistics(model, (share.of(stream.batch(first + b)[0]) for b in range(steps)))
                _, val_accuracy = _evaluate(model, *validation, eval_batch)
                before = history[-1].get("val_accuracy")
                bn = {"bn_recomputed_batches": n, "val_accuracy_before_bn_recompute": before,
                      "val_accuracy_after_bn_recompute": float(val_accuracy)}
                say(f"recomputed BN statistics over {n} augmented batches: validation accuracy {before:.4f} -> "
                    f"{val_accuracy:.4f}")
            test_accuracy = None
            if not config.val_split:  # the test split was the validation data: its last figure is final
                test_accuracy = bn.get("val_accuracy_after_bn_recompute", history[-1].get("val_accuracy"))
            elif len(data.x_test):
                _, test_accuracy = _evaluate(model, *evaluation_arrays(data.x_test, data.y_test, devices, share))
    result = {
        **header, "epochs": history, **bn,
        "test_accuracy": None if test_accuracy is None else float(test_accuracy),
        "val_accuracy": bn.get("val_accuracy_after_bn_recompute", history[-1].get("val_accuracy")),
        "train_seconds": round(train_seconds, 1), "model": str(out), "weights_sha256": weights_digest(model),
    }
    score = (f"test accuracy {test_accuracy:.4f}" if test_accuracy is not None
             else f"validation accuracy {result['val_accuracy']:.4f} (no test split)")
    if not writes:
        log(f"{score}; {cluster.describe()} done with weights sha256 {result['weights_sha256']}; process 0 writes "
            "the model")
        return result
    binary = [layer.name for layer in model.layers if isinstance(layer, BinaryConv2D)]
    meta = ModelMeta(config.dataset, config.arch, data.input_shape, data.class_names, binary,
                     method=config.method, precision=config.precision, val_split=config.val_split, seed=config.seed)
    save_model(model, meta, out)
    write_text_atomic(log_path, json.dumps(result, indent=2))
    checkpoint.unlink(missing_ok=True)  # everything it held is in OUT and the log now
    log(f"{score}; {result['train_seconds']} s of training; wrote {out}, {log_path} and {curves}")
    return result


@contextlib.contextmanager
def _stopping(cluster: Cluster | None, checkpoint: Path, history: list[dict]):
    """Turns Ctrl-C, and in a multi-process run the failure of a process (its collectives
    fail at once in every other process), into a one-line error that says what was kept."""
    try:
        yield
    except KeyboardInterrupt:
        kept = (f"the state after epoch {len(history)} is in {checkpoint}; continue with the same "
                "command and --resume") if history else "no epoch was finished, so nothing was kept"
        raise Interrupted(f"interrupted: {kept}") from None
    except Exception as exc:
        if cluster is None or not _lost_a_process(exc):
            raise
        if not history:
            kept = "no epoch was finished, so nothing was kept"
        else:
            where = (f"the state after epoch {len(history)} is in {checkpoint}" if cluster.writes else  # process 0's
                     "process 0 kept the state of its last finished epoch beside its --out (.ckpt.npz)")  # own path
            kept = f"{where}; start every process again with the same options and --resume"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterFailure(f"the multi-process run stopped, probably because another process failed (see its "
                             f"output): {first}; {kept}") from None


def _lost_a_process(exc: Exception) -> bool:
    """Whether `exc` is JAX's runtime failing, as it does when a peer process has died."""
    import jax

    return isinstance(exc, jax.errors.JaxRuntimeError) or "Gloo" in str(exc)


def weights_digest(model) -> str:
    """sha256 of the model's weights (`get_weights` order, float32 bytes): every process of a
    multi-process run reports it, so anyone can see that they all hold the weights process 0
    saved."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w, np.float32).tobytes())
    return digest.hexdigest()


def _binary_signs(model) -> np.ndarray:
    """The signs of every binary conv's latent weights, concatenated (empty without any)."""
    from .layers import BinaryConv2D

    kernels = [np.asarray(layer.kernel).ravel() >= 0 for layer in model.layers if isinstance(layer, BinaryConv2D)]
    return np.concatenate(kernels) if kernels else np.zeros(0, bool)


def _weight_stats(model, before: np.ndarray, after: np.ndarray) -> dict:
    """Diagnostics for the log: the weight-decay term the loss includes; the binary convs'
    mean |latent weight| relative to their deployed scale (1 = the He init's expected
    0.8); the fraction of binary weights whose sign changed during the epoch."""
    from keras import ops

    from .layers import BinaryConv2D

    stats = {"weight_decay_loss": float(sum(float(ops.convert_to_numpy(v)) for v in model.losses))}
    binary = [layer for layer in model.layers if isinstance(layer, BinaryConv2D)]
    if binary:
        total = sum(int(np.prod(layer.kernel.shape)) for layer in binary)
        stats["latent_abs_over_scale"] = sum(
            float(np.abs(np.asarray(layer.kernel)).sum()) / layer.scale for layer in binary) / total
        stats["sign_flip_fraction"] = float(np.mean(before != after)) if len(before) == len(after) else None
    return stats


def _evaluate(model, x, y, weights, batch_size):
    return model.evaluate(x, y, sample_weight=weights, batch_size=batch_size, verbose=0)


def _jsonable(config: TrainConfig) -> dict:
    d = asdict(config)
    d["data"] = str(config.data) if config.data else None
    return d
