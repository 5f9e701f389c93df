"""Datasets as uint8 images (N, H, W, C) with int labels, the way the device sees them.

`digits` (scikit-learn's 8x8 handwritten digits) ships with scikit-learn and works
offline; anything else comes from an `.npz` with x_train, y_train and, optionally,
x_test, y_test (without them the test split is empty: hold out a validation split).

Training-time augmentation (McDonnell 2018) is `augment_batch`, vectorised over a batch
in TF so it runs inside a tf.data pipeline; `default_augmentation` picks it per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import OnebitError

CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # uint8 (N, H, W, C)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 intensities -> 0..255 pixels, so every dataset reaches the device as uint8 images.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))  # fixed split, same for every run
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def _from_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path) as archive:
            arrays = tuple(archive[key] for key in ("x_train", "y_train"))
            if "x_test" in archive.files or "y_test" in archive.files:
                arrays += tuple(archive[key] for key in ("x_test", "y_test"))
            else:  # a train-only archive (CIFAR-10 here): an empty test split of the same shape
                arrays += (arrays[0][:0], arrays[1][:0])
    except FileNotFoundError:
        raise OnebitError(f"dataset file {path} not found; pass an existing --data PATH.npz") from None
    except KeyError as exc:
        raise OnebitError(
            f"{path} lacks array {exc}; it needs x_train, y_train (and x_test, y_test together)"
        ) from None
    except (OSError, ValueError) as exc:
        raise OnebitError(f"cannot read {path} as a numpy .npz archive ({exc})") from None
    x_train, y_train, x_test, y_test = arrays
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise OnebitError(f"{path}: {name} must be uint8 images (N,H,W[,C]), got {x.dtype} {x.shape}")
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return x_train, y_train.astype(np.int64).ravel(), x_test, y_test.astype(np.int64).ravel()


def load_dataset(name: str, data: Path | None = None) -> Dataset:
    """`name` picks class names and defaults; `data` overrides where arrays come from."""
    if data is not None:
        arrays = _from_npz(Path(data))
    elif name == "digits":
        arrays = _digits()
    else:
        raise OnebitError(
            f"dataset {name!r} needs its arrays: pass --data PATH.npz (x_train, y_train, x_test, y_test)"
        )
    n_classes = int(max(arrays[1].max(), arrays[3].max(initial=0))) + 1
    class_names = CLASS_NAMES.get(name, [str(i) for i in range(n_classes)])
    if len(class_names) < n_classes:
        raise OnebitError(f"dataset {name!r} has labels up to {n_classes - 1}, more than its classes")
    return Dataset(name, *arrays, class_names=class_names[:n_classes])


@dataclass(frozen=True)
class Augmentation:
    """McDonnell 2018's training augmentation. flip: random horizontal flips; crop_pad: pad
    by this many pixels of random values 0..255, then crop back at a random offset (a shift
    of -p..p); cutout: one square of this side, its top-left uniform over positions that
    overlap the image (it may be clipped at the border), filled with random values 0..255."""

    flip: bool = False
    crop_pad: int = 0
    cutout: int = 0

    @property
    def enabled(self) -> bool:
        return self.flip or self.crop_pad > 0 or self.cutout > 0


def default_augmentation(name: str, input_shape) -> Augmentation:
    """None for tiny inputs (8x8 digits); crop only for grayscale (MNIST: no flips on digits);
    flips + 4-pixel crop + cutout (18x18 at 32x32, scaled with the side) for colour images."""
    h, w, c = input_shape
    if name == "digits" or min(h, w) < 16:
        return Augmentation()
    if name == "mnist" or c == 1:
        return Augmentation(crop_pad=2)
    return Augmentation(flip=True, crop_pad=4, cutout=max(1, round(18 * min(h, w) / 32)))


def augment_batch(images, seed, aug: Augmentation):
    """Augments a float batch (B, H, W, C) of 0..255 pixels; `seed` is a shape-(2,) int
    tensor, and the same seed gives the same result. Shapes are preserved."""
    import tensorflow as tf

    x = tf.convert_to_tensor(images, tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    batch, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]

    def random_pixels(shape, s):
        return tf.cast(tf.random.stateless_uniform(shape, s, minval=0, maxval=256, dtype=tf.int32), tf.float32)

    def random_offsets(s, low, high):  # ints in [low, high], one per image
        return tf.random.stateless_uniform([batch], s, minval=low, maxval=high + 1, dtype=tf.int32)

    if aug.flip:
        flip = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
        x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if aug.crop_pad > 0:
        p = aug.crop_pad
        inside = tf.pad(tf.ones_like(x[:1, ..., :1]), [[0, 0], [p, p], [p, p], [0, 0]]) > 0
        canvas = tf.where(inside, tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]), random_pixels(tf.shape(x) + [0, 2 * p, 2 * p, 0], seeds[1]))
        rows = random_offsets(seeds[2], 0, 2 * p)[:, None] + tf.range(h)[None]
        cols = random_offsets(seeds[3], 0, 2 * p)[:, None] + tf.range(w)[None]
        x = tf.gather(tf.gather(canvas, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    if aug.cutout > 0:
        s = aug.cutout
        top = random_offsets(seeds[4], 1 - s, h - 1)[:, None]
        left = random_offsets(tf.random.experimental.stateless_fold_in(seeds[4], 1), 1 - s, w - 1)[:, None]
        in_rows = (tf.range(h)[None] >= top) & (tf.range(h)[None] < top + s)  # (B, H)
        in_cols = (tf.range(w)[None] >= left) & (tf.range(w)[None] < left + s)  # (B, W)
        mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
        x = tf.where(mask, random_pixels(tf.shape(x), seeds[5]), x)
    return x
