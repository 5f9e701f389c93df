"""The durable journal of an `eval` run (docs/eval_report.md).

Two files beside the report REPORT.json:

- REPORT.samples.jsonl: one JSON object per line per sample, appended and flushed as
  each result arrives (fsync'd at least every second). A run killed mid-write leaves at
  most a partial last line, which reading ignores and resuming cuts off.
- REPORT.meta.json: what the run is (project, model hash, dataset, how many samples),
  the identity of every board that took part and the figures of each session (one
  `eval` or `eval --resume` invocation). Rewritten atomically whenever it changes.

The report is a pure function of these two files (timing figures aside), so a resumed
run ends with the same report as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import OnebitError
from .modelfile import write_text_atomic

JOURNAL_FORMAT = "mcu-onebit-eval-journal/1"
DEFAULT_EVAL_REPORT = "eval.json"  # in the convert folder, when `eval` is given no --json
_FSYNC_EVERY_S = 1.0


@dataclass(frozen=True)
class SampleRecord:
    index: int  # position in the test set
    label: int
    device: list[int]  # the device's output bytes, as int8 values
    host: list[int]  # the twin under TFLite's reference kernels (ai-edge-litert)
    tflm: list[int]  # the twin under TFLite Micro's host interpreter
    count: int  # instructions or cycles of the invoke (the board's `counter`)
    port: str  # the board that answered
    agree: bool  # device == host, byte for byte
    agree_tflm: bool  # device == tflm, byte for byte


@dataclass(frozen=True)
class SessionFigures:
    """One invocation of `eval` (the first or a resume): timing and link figures."""

    samples: int  # samples this session added
    wall_s: float  # streaming phase: first request to last record written
    busy_s: list[float]  # per link: time with at least one request at the device
    link_bytes: int  # bytes written and read on all links, retries included
    noise: int  # attempts lost to damaged frames
    silences: int  # attempts lost to timeouts
    resets: int  # device resets detected
    reconnects: int  # ports closed and opened again
    setup_s: float  # loading the twins, opening the ports, identifying


@dataclass
class JournalMeta:
    project: str
    model_hash: str
    dataset: str
    data: str | None
    limit: int | None
    planned: int  # samples the run covers: min(limit, test set size)
    format: str = JOURNAL_FORMAT
    started: float = field(default_factory=time.time)
    boards: dict[str, dict] = field(default_factory=dict)  # port -> its identify JSON
    sessions: list[dict] = field(default_factory=list)  # SessionFigures as dicts


def meta_path(report: Path) -> Path:
    return Path(report).with_suffix(".meta.json")


def samples_path(report: Path) -> Path:
    return Path(report).with_suffix(".samples.jsonl")


def read_meta(report: Path) -> JournalMeta:
    path = meta_path(report)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return JournalMeta(**data)
    except FileNotFoundError:
        raise OnebitError(f"{report} has no journal to resume ({path} is missing); run `mcu-onebit eval` without --resume") from None
    except (ValueError, TypeError) as exc:
        raise OnebitError(f"{path} is not an eval journal written by this mcu-onebit ({exc})") from None


def write_meta(report: Path, meta: JournalMeta) -> None:
    write_text_atomic(meta_path(report), json.dumps(asdict(meta), indent=1) + "\n")


def read_samples(report: Path, planned: int | None = None) -> tuple[dict[int, SampleRecord], int]:
    """The samples recorded so far, one per index (the first wins), and the byte length
    of the file's complete lines (a partial last line is not counted). With `planned`
    (resuming a run of that many samples) the journal must exist and every record's
    index lie in 0..planned-1: anything else is another run's or an edited journal."""
    path = samples_path(report)
    samples: dict[int, SampleRecord] = {}
    good = 0
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if planned is not None:
            raise OnebitError(f"{path}, the journal of {report}, is missing; start a new run without --resume") from None
        return samples, 0
    for number, line in enumerate(raw.splitlines(keepends=True), 1):
        if not line.endswith(b"\n"):
            break  # cut off mid-write
        try:
            record = SampleRecord(**json.loads(line))
        except (ValueError, TypeError):
            break  # torn line: everything after it is suspect
        if planned is not None and not (type(record.index) is int and 0 <= record.index < planned):
            raise OnebitError(f"{path} line {number} records sample {record.index!r}, outside this run's {planned} "
                              "samples; the journal was edited or belongs to another run: start a new run without --resume")
        samples.setdefault(record.index, record)
        good += len(line)
    return samples, good


class SampleJournal:
    """Appends sample records; each is flushed at once and fsync'd within a second."""

    def __init__(self, report: Path, *, keep_bytes: int | None) -> None:
        """keep_bytes: None starts an empty journal; a length keeps that much of the
        existing file (its complete lines) and appends after it."""
        path = samples_path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_bytes is None:
            self._file = path.open("wb")
        else:
            self._file = path.open("r+b")
            self._file.truncate(keep_bytes)
            self._file.seek(keep_bytes)
        self._synced = time.monotonic()

    def append(self, record: SampleRecord) -> None:
        self._file.write((json.dumps(asdict(record), separators=(",", ":")) + "\n").encode())
        self._file.flush()
        if time.monotonic() - self._synced > _FSYNC_EVERY_S:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> SampleJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
