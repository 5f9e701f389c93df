"""`model.h5`: the Keras model plus what later stages need, in one file.

The metadata (dataset, input shape, class names, binary layers, training recipe) is a JSON string in
the HDF5 root attribute `mcu_onebit`; a `.h5` without it was not made by `train`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import OnebitError

META_ATTR = "mcu_onebit"
META_VERSION = 1


@dataclass(frozen=True)
class ModelMeta:
    dataset: str
    arch: str
    input_shape: tuple[int, int, int]
    class_names: list[str]
    binary_layers: list[str]  # empty for --precision float
    version: int = META_VERSION
    method: str = "mcdonnell2018"  # added later in version 1: older files read with these defaults
    precision: str = "1bit"
    val_split: float = 0.0  # the validation split `train --val-split` held out (0: none), and its seed
    seed: int = 0


@contextlib.contextmanager
def atomic_write(final: Path) -> Iterator[Path]:
    """Yields a temporary path beside `final` to write; renames it onto `final` when the
    block completes, removes it when the block fails. It has the permissions a plain new
    file would (mkstemp's are 0600: models, reports and pages would be unreadable to the
    rest of a team)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def save_model(model, meta: ModelMeta, path: Path) -> None:
    import logging

    import h5py

    absl = logging.getLogger("absl")  # Keras warns there that .h5 is "legacy": it is this tool's format
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with atomic_write(path) as tmp:
            model.save(str(tmp), include_optimizer=False)
            with h5py.File(tmp, "a") as f:
                f.attrs[META_ATTR] = json.dumps(asdict(meta))
    finally:
        absl.setLevel(level)


def read_meta(path: Path) -> ModelMeta:
    """The mcu-onebit metadata of a `.h5`, without loading Keras; every failure is a
    one-line OnebitError."""
    import h5py

    path = Path(path)
    if path.is_dir():
        raise OnebitError(f"{path} is a folder, not a model file; pass the .h5 that `mcu-onebit train` wrote")
    if not path.is_file():
        raise OnebitError(f"model file {path} not found; train one with `mcu-onebit train --out {path}`")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(META_ATTR)
    except OSError:
        raise OnebitError(f"{path} is not a readable HDF5 file (truncated or corrupt?); re-run `mcu-onebit train`") from None
    if raw is None:
        raise OnebitError(
            f"{path} was not written by `mcu-onebit train` (no {META_ATTR} metadata); train it with mcu-onebit"
        )
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if data.get("version") != META_VERSION:
            raise OnebitError(f"{path} has metadata version {data.get('version')}; this mcu-onebit reads {META_VERSION}")
        data["input_shape"] = tuple(int(d) for d in data["input_shape"])
        meta = ModelMeta(**data)
    except OnebitError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise OnebitError(f"{path} has damaged {META_ATTR} metadata ({type(exc).__name__}); re-run `mcu-onebit train`") from None
    if len(meta.input_shape) != 3 or not all(isinstance(v, str) for v in [*meta.class_names, *meta.binary_layers]):
        raise OnebitError(f"{path} has damaged {META_ATTR} metadata (input shape or layer names); re-run `mcu-onebit train`")
    return meta


def load_model(path: Path):
    """Returns (keras model, ModelMeta); every failure is a one-line OnebitError."""
    from .native import keras as load_keras

    meta = read_meta(path)
    keras = load_keras()
    from . import layers  # noqa: F401  registers the custom layers

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # h5py/keras raise many types for damaged files
        raise OnebitError(f"cannot load the Keras model in {path} ({type(exc).__name__}: {exc}".splitlines()[0] + ")") from None
    return model, meta
