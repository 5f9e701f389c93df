"""Datasets as uint8 images (N, H, W, C) with int labels, the way the device sees them.

`digits` (scikit-learn's 8x8 handwritten digits) ships with scikit-learn and works
offline; anything else comes from an `.npz` with x_train, y_train and, optionally,
x_test, y_test (without them the test split is empty: hold out a validation split).

Every array is checked on load (shapes, dtypes, pixel range, label count and range) and
a problem is a one-line `OnebitError` naming the array.

Training-time augmentation (McDonnell 2018) is `augment_batch`, vectorised over a batch
in numpy with a seeded `np.random.Generator`, so it is the same on every Keras backend;
`default_augmentation` picks it per dataset.
"""

from __future__ import annotations

import zipfile
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


KNOWN = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")


def _from_npz(path: Path) -> tuple[np.ndarray, ...]:
    if path.is_dir():
        raise OnebitError(f"--data {path} is a folder; pass an .npz archive with x_train, y_train[, x_test, y_test]")
    if not path.exists():
        raise OnebitError(f"dataset file {path} not found; pass an existing --data PATH.npz")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and give advice about allow_pickle
        raise OnebitError(f"{path} is not an .npz archive (not a zip file); save one with numpy.savez(path, x_train=..., "
                          "y_train=..., x_test=..., y_test=...)")
    try:
        with np.load(path, allow_pickle=False) as archive:
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
    except (OSError, ValueError, EOFError) as exc:
        raise OnebitError(f"cannot read {path} as a numpy .npz archive ({exc})".replace("\n", " ")) from None
    x_train, y_train, x_test, y_test = arrays
    x_train, x_test = (_as_images(path, name, x) for name, x in (("x_train", x_train), ("x_test", x_test)))
    y_train, y_test = (_as_labels(path, name, y, len(x)) for name, y, x in
                       (("y_train", y_train, x_train), ("y_test", y_test, x_test)))
    if len(x_train) == 0:
        raise OnebitError(f"{path}: x_train holds no images")
    if len(x_test) and x_test.shape[1:] != x_train.shape[1:]:
        raise OnebitError(f"{path}: x_test images are {x_test.shape[1:]}, x_train images {x_train.shape[1:]}; they must match")
    return x_train, y_train, x_test, y_test


def _as_images(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) from uint8 or whole-valued 0..255 numbers (N, H, W[, C]); else an error."""
    if x.ndim not in (3, 4) or 0 in x.shape[1:]:
        raise OnebitError(f"{path}: {name} must be images (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x if x.ndim == 4 else x[..., None]
    if x.dtype.kind not in "iuf":
        raise OnebitError(f"{path}: {name} has dtype {x.dtype}; images must be uint8 pixels 0..255")
    if x.size:
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise OnebitError(f"{path}: {name} holds NaN or infinite values; images must be pixels 0..255")
        low, high = x.min(), x.max()
        if low < 0 or high > 255:
            raise OnebitError(f"{path}: {name} values span {low}..{high}; images must be pixels 0..255 (uint8)")
        if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise OnebitError(
                f"{path}: {name} holds fractional values ({low}..{high}): pass raw 0..255 pixels as uint8, not normalised data"
            )
    x = x.astype(np.uint8)
    return x if x.ndim == 4 else x[..., None]


def _as_labels(path: Path, name: str, y: np.ndarray, n: int) -> np.ndarray:
    """int64 (N,) class indices from (N,) or (N, 1) whole numbers >= 0; else an error."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise OnebitError(f"{path}: {name} must be class indices of shape (N,), got {y.shape} (one-hot? pass argmax)")
    if len(y) != n:
        raise OnebitError(f"{path}: {name} has {len(y)} labels for {n} images")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise OnebitError(f"{path}: {name} must hold integer class indices, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise OnebitError(f"{path}: {name} holds label {y.min()}; labels are class indices 0..C-1")
    return y.astype(np.int64)


def load_dataset(name: str, data: Path | None = None) -> Dataset:
    """`name` picks class names and defaults; `data` overrides where arrays come from."""
    if data is not None:
        arrays = _from_npz(Path(data))
    elif name == "digits":
        arrays = _digits()
    elif name in KNOWN:
        raise OnebitError(
            f"dataset {name!r} needs its arrays: pass --data PATH.npz (x_train, y_train, x_test, y_test)"
        )
    else:
        raise OnebitError(
            f"unknown dataset {name!r}; use digits (built in), one of {', '.join(KNOWN[1:])} with --data PATH.npz, "
            "or any name with --data PATH.npz"
        )
    n_classes = int(max(arrays[1].max(), arrays[3].max(initial=0))) + 1
    if n_classes < 2:
        raise OnebitError(f"dataset {name!r}: the labels name a single class; a classifier needs at least 2")
    class_names = CLASS_NAMES.get(name, [str(i) for i in range(n_classes)])
    if len(class_names) < n_classes:
        raise OnebitError(
            f"dataset {name!r} has labels up to {n_classes - 1}, out of range for its {len(class_names)} classes"
        )
    return Dataset(name, *arrays, class_names=class_names[:n_classes])


def split_validation(x, y, fraction: float, seed: int):
    """(x_train, y_train, x_val, y_val): a seeded random `fraction` of the samples held out."""
    if not 0.0 < fraction < 1.0:
        raise OnebitError(f"--val-split must be between 0 and 1 (exclusive), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * fraction)))
    if n_val >= len(x):
        raise OnebitError(f"--val-split {fraction} leaves no training images out of {len(x)}")
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


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


def augment_batch(images, rng, aug: Augmentation) -> np.ndarray:
    """Augments a batch (B, H, W, C) of 0..255 pixels, in numpy, into float32 of the same
    shape. `rng` is a `np.random.Generator` or a seed for one (an int or ints): the same
    seed gives the same batch, on every Keras backend.

    flip: each image mirrored left-right with probability 1/2. crop_pad p: the image is
    placed on a (H+2p, W+2p) canvas of random values 0..255 and a HxW window is cut at a
    uniform offset 0..2p in each axis. cutout s: a s x s square whose top-left is uniform
    over the positions where it overlaps the image (it may be clipped by the border) is
    filled with random values 0..255. Random values are whole numbers, like pixels."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = np.asarray(images, dtype=np.float32)
    if not aug.enabled:
        return x.copy()
    b, h, w, c = x.shape
    if aug.flip:
        flip = rng.random(b) < 0.5
        x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if aug.crop_pad > 0:
        p = aug.crop_pad
        canvas = rng.integers(0, 256, (b, h + 2 * p, w + 2 * p, c)).astype(np.float32)
        canvas[:, p:p + h, p:p + w] = x
        rows = rng.integers(0, 2 * p + 1, b)[:, None] + np.arange(h)  # (B, H)
        cols = rng.integers(0, 2 * p + 1, b)[:, None] + np.arange(w)  # (B, W)
        x = canvas[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if aug.cutout > 0:
        s = aug.cutout
        top = rng.integers(1 - s, h, b)[:, None]
        left = rng.integers(1 - s, w, b)[:, None]
        in_rows = (np.arange(h) >= top) & (np.arange(h) < top + s)  # (B, H)
        in_cols = (np.arange(w) >= left) & (np.arange(w) < left + s)  # (B, W)
        mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
        x = np.where(mask, rng.integers(0, 256, x.shape).astype(np.float32), x)
    return x


class BatchStream:
    """An endless, reproducible stream of training batches, `batch(i)` for i = 0, 1, 2, ...

    Epoch e = i // steps_per_epoch reads the images in its own seeded permutation; every
    batch has exactly `batch_size` images (the epoch's last batch wraps around to the start
    of the same permutation), so batch shapes never change: no re-tracing or recompiling,
    and a batch always splits evenly over data-parallel devices. Batch i is augmented with
    its own generator seeded by (seed, i), so `batch(i)` is a pure function of i: any
    backend, prefetching order or worker count gives the same numbers.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, aug: Augmentation, seed: int):
        self.x, self.y, self.batch_size, self.aug, self.seed = x, y, int(batch_size), aug, int(seed)
        self.steps_per_epoch = -(-len(x) // self.batch_size)
        self._cached = (-1, None)  # (epoch, its permutation), replaced in one assignment: thread-safe

    def order(self, epoch: int) -> np.ndarray:
        cached_epoch, order = self._cached
        if cached_epoch != epoch:
            order = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.x))
            self._cached = (epoch, order)
        return order

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, b = divmod(int(i), self.steps_per_epoch)
        order = self.order(epoch)
        index = order[(b * self.batch_size + np.arange(self.batch_size)) % len(order)]
        images = augment_batch(self.x[index], np.random.default_rng([self.seed, 1, epoch, b]), self.aug)
        return images, self.y[index]
