"""Datasets as uint8 images (N, H, W, C) with int labels, the way the device sees them.

`digits` (scikit-learn's 8x8 handwritten digits) ships with scikit-learn and works
offline; anything else comes from an `.npz` with x_train, y_train, x_test, y_test.
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
            arrays = tuple(archive[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    except FileNotFoundError:
        raise OnebitError(f"dataset file {path} not found; pass an existing --data PATH.npz") from None
    except KeyError as exc:
        raise OnebitError(
            f"{path} lacks array {exc}; it needs x_train, y_train, x_test, y_test"
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
    n_classes = int(max(arrays[1].max(), arrays[3].max())) + 1
    class_names = CLASS_NAMES.get(name, [str(i) for i in range(n_classes)])
    if len(class_names) < n_classes:
        raise OnebitError(f"dataset {name!r} has labels up to {n_classes - 1}, more than its classes")
    return Dataset(name, *arrays, class_names=class_names[:n_classes])
