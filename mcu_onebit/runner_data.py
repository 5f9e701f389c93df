"""`mcu-onebit runner-data`: the images `eval` runs, as a data set folder for MLPerf Tiny's runner.

The runner (benchmark/runner in mlcommons/tiny) reads `<dataset_path>/<model>/y_labels.csv`,
one `file,classes,class` row per image, and sends each file's bytes unchanged with `db`.
The firmware takes those bytes as the model's int8 input tensor (docs/energyrunner.md), so
each `.bin` here holds what `eval` sends for that image: the pixels quantized with the
model's input scale and zero point (`HostTwin.quantize`). MLPerf's own ic01 files are raw
uint8 pixels instead, which its reference firmware shifts by 128.

The files are named by test-set index (`00007.bin` is eval's sample 7). The folder is
written whole, staged beside it and renamed into place; it may replace only an empty
folder or one this command wrote (its manifest lists the files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .convert import resolve_project
from .datasets import load_dataset
from .errors import OnebitError
from .outputs import check_writable_folder, listing, replace_folder

LABELS = "y_labels.csv"  # the truth file of MLPerf's test scripts (tests_accuracy.yaml)
MANIFEST = "mcu-onebit-runner-data.json"
WRITTEN_BY = "mcu-onebit runner-data"


@dataclass(frozen=True)
class RunnerData:
    folder: Path
    samples: int
    model_hash: str

    def summary_line(self) -> str:
        return (f"wrote {self.samples} images of model {self.model_hash} to {self.folder} "
                f"(MLPerf Tiny runner: --dataset_path {self.folder.parent})")


def _owns(folder: Path) -> Callable[[str], bool] | None:
    """The files an earlier runner-data wrote in `folder` (its manifest's), or None."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY or not isinstance(manifest.get("files"), list):
        return None
    written = set(map(str, manifest["files"]))
    return lambda relative: relative in written


def _check_out(out: Path) -> None:
    """`out` may be (re)written: absent, empty, or holding only what runner-data wrote."""
    if out.exists() and not out.is_dir():
        raise OnebitError(f"--out {out} is a file; give a folder for the data set")
    if out.is_dir():
        owns = _owns(out)
        foreign = [f for f in listing(out) if owns is None or not owns(f)]
        if foreign:
            raise OnebitError(f"--out {out} holds {foreign[0]}, which `mcu-onebit runner-data` did not write; "
                              "choose another --out or move it away")
    check_writable_folder(out.parent, f"--out {out}")


def write_runner_data(project: Path | None, out: Path, data: Path | None = None, limit: int | None = None) -> RunnerData:
    """Write the first `limit` (default: all) images of eval's test set for the project's
    model into `out`: one `<index>.bin` of int8 input bytes each, `y_labels.csv`, and the
    manifest."""
    from .evaluate import HostTwin, _check_shapes, evaluation_split

    if limit is not None and limit < 1:
        raise OnebitError("--limit must be at least 1")
    project, report = resolve_project(project)
    out = Path(out).resolve()
    _check_out(out)
    dataset, split = evaluation_split(load_dataset(report["dataset"]["name"], data or report["dataset"]["data"]),
                                      report["dataset"], data)
    host = HostTwin(project.parent / "twin_int8.tflite")
    _check_shapes(dataset, host, data)
    count = len(dataset.y_test) if limit is None else min(limit, len(dataset.y_test))
    classes = len(report.get("class_names") or dataset.class_names)

    def fill(staging: Path) -> None:
        rows = []
        for index in range(count):
            name = f"{index:05d}.bin"
            (staging / name).write_bytes(host.quantize(dataset.x_test[index]).tobytes())
            rows.append(f"{name},{classes},{int(dataset.y_test[index])}\n")
        (staging / LABELS).write_text("".join(rows))
        manifest = {"written_by": WRITTEN_BY, "project": str(project), "model_hash": report["model_hash"],
                    "dataset": split, "samples": count, "files": [*listing(staging), MANIFEST]}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    replace_folder(out, fill, recheck=lambda: _check_out(out))
    return RunnerData(out, count, report["model_hash"])
