"""The `eval` report: built from the journal alone (docs/eval_report.md names every field).

Everything but `run` is a pure function of the recorded samples and board identities,
so an interrupted-and-resumed run reports exactly what an uninterrupted one does;
`run` holds the timing and link figures of the sessions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from .eval_journal import JournalMeta, SampleRecord, SessionFigures

REPORT_FORMAT = "mcu-onebit-eval/1"


@dataclass(frozen=True)
class Latency:
    unit: str  # "instructions" (emulated boards) or "cycles" (real boards)
    median: float
    p90: float
    max: int
    median_ms: float | None  # cycles / clock_hz; None for instructions
    p90_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class BoardFigures:
    port: str
    board: str  # board id from identify
    counter: str
    clock_hz: int
    arena_bytes: int  # from identify
    flash_bytes: int | None  # from identify when the firmware reports it, else None
    samples: int
    accuracy_device: float
    agreement: float
    latency: Latency | None


@dataclass(frozen=True)
class RunFigures:
    """Timing and link figures: they differ between runs (docs/eval_report.md)."""

    sessions: int  # invocations that added samples (1 + resumes)
    wall_s: float  # summed over sessions: streaming phases
    setup_s: float  # summed: loading, opening ports, identifying
    samples_per_s: float
    host_overhead: float  # fraction of streaming wall time the boards waited on the host
    link_bytes_per_sample: float
    noise: int
    silences: int
    resets: int
    reconnects: int


@dataclass(frozen=True)
class EvalReport:
    format: str
    board: str  # the first board's id
    port: str  # the ports, comma-separated
    model_hash: str
    dataset: str
    planned: int  # samples the run covers
    samples: int  # samples recorded (== planned when complete)
    complete: bool
    accuracy_device: float
    accuracy_host: float
    agreement: float
    accuracy_host_tflm: float  # the twin under TFLite Micro's host interpreter
    agreement_tflm: float
    latency: Latency | None  # over all samples when every board has the same board id
    disagreements: list[int]  # indices whose device output differs from TFLite's
    disagreements_tflm: list[int]
    arena_bytes: int
    flash_bytes: int | None
    class_names: list[str]
    confusion: list[list[int]]  # [true label][device prediction]
    boards: list[BoardFigures]
    run: RunFigures

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def table(self) -> str:
        rows = [
            ("board", self.board), ("samples", f"{self.samples} of {self.planned}" + ("" if self.complete else " (incomplete)")),
            ("accuracy (device)", f"{self.accuracy_device:.4f}"), ("accuracy (host, TFLite reference)", f"{self.accuracy_host:.4f}"),
            ("accuracy (host, TFLite Micro)", f"{self.accuracy_host_tflm:.4f}"),
            ("agreement (identical output bytes)", f"{self.agreement:.4f}"),
            ("agreement with TFLite Micro", f"{self.agreement_tflm:.4f}"),
        ]
        if self.latency is not None:
            rows.append(_latency_row(self.latency))
        rows.append(("arena", f"{self.arena_bytes:,} B"))
        if self.flash_bytes is not None:
            rows.append(("flash", f"{self.flash_bytes:,} B"))
        run = self.run
        rows += [
            ("throughput", f"{run.samples_per_s:.1f} samples/s, {run.link_bytes_per_sample:.0f} link bytes/sample"),
            ("host overhead", f"{run.host_overhead:.1%} of {run.wall_s:.1f} s streaming (+{run.setup_s:.1f} s setup)"),
        ]
        if run.noise or run.silences or run.resets or run.reconnects:
            rows.append(("link trouble", f"{run.noise} damaged, {run.silences} timed out, {run.resets} resets, "
                                         f"{run.reconnects} reconnects"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if len(self.boards) > 1:
            lines.append("")
            lines.append(f"{'port':<28} {'board':<10} {'samples':>7} {'accuracy':>8} {'agree':>6}  latency median / p90 / max")
            for b in self.boards:
                lat = "-" if b.latency is None else _latency_row(b.latency)[1]
                lines.append(f"{b.port:<28} {b.board:<10} {b.samples:>7} {b.accuracy_device:>8.4f} {b.agreement:>6.3f}  {lat}")
        return "\n".join(lines)


def _latency_row(lat: Latency) -> tuple[str, str]:
    value = f"{lat.median:,.0f} / {lat.p90:,.0f} / {lat.max:,}"
    if lat.median_ms is not None:
        value += f" ({lat.median_ms:.2f} / {lat.p90_ms:.2f} / {lat.max_ms:.2f} ms)"
    return f"latency median / p90 / max ({lat.unit})", value


def latency(counts: list[int], unit: str, clock_hz: int) -> Latency | None:
    if not counts:
        return None
    median, p90, top = float(np.median(counts)), float(np.percentile(counts, 90)), int(max(counts))
    if unit == "cycles" and clock_hz > 0:
        ms = [1000.0 * v / clock_hz for v in (median, p90, top)]
        return Latency(unit, median, p90, top, *ms)
    return Latency(unit, median, p90, top, None, None, None)


def build_report(meta: JournalMeta, samples: dict[int, SampleRecord], board_id: str, class_names: list[str]) -> EvalReport:
    """The report of the recorded samples (one per index, ordered by index)."""
    records = [samples[i] for i in sorted(samples)]
    n = len(records)
    labels = np.array([r.label for r in records], dtype=np.int64)
    device = np.array([int(np.argmax(r.device)) for r in records], dtype=np.int64)
    host = np.array([int(np.argmax(r.host)) for r in records], dtype=np.int64)
    tflm = np.array([int(np.argmax(r.tflm)) for r in records], dtype=np.int64)
    classes = max(len(class_names), int(labels.max(initial=-1)) + 1, int(device.max(initial=-1)) + 1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, device), 1)

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values)) if n else 0.0

    ports = list(meta.boards) + sorted({r.port for r in records} - set(meta.boards))
    boards = []
    for port in ports:
        identity = meta.boards.get(port, {})
        mine = [r for r in records if r.port == port]
        unit, clock = str(identity.get("counter", "")), int(identity.get("clock_hz", 0))
        boards.append(BoardFigures(
            port=port, board=str(identity.get("board", board_id)), counter=unit, clock_hz=clock,
            arena_bytes=int(identity.get("arena_bytes", 0)),
            flash_bytes=int(identity["flash_bytes"]) if "flash_bytes" in identity else None,
            samples=len(mine),
            accuracy_device=float(np.mean([int(np.argmax(r.device)) == r.label for r in mine])) if mine else 0.0,
            agreement=float(np.mean([r.agree for r in mine])) if mine else 0.0,
            latency=latency([r.count for r in mine], unit, clock),
        ))
    same_kind = len({(b.board, b.counter, b.clock_hz) for b in boards}) <= 1
    first = boards[0] if boards else None
    overall = latency([r.count for r in records], first.counter, first.clock_hz) if first and same_kind else None
    return EvalReport(
        format=REPORT_FORMAT, board=first.board if first else board_id, port=", ".join(b.port for b in boards),
        model_hash=meta.model_hash, dataset=meta.dataset, planned=meta.planned, samples=n, complete=n == meta.planned,
        accuracy_device=mean(device == labels), accuracy_host=mean(host == labels),
        agreement=mean(np.array([r.agree for r in records])),
        accuracy_host_tflm=mean(tflm == labels), agreement_tflm=mean(np.array([r.agree_tflm for r in records])),
        latency=overall,
        disagreements=[r.index for r in records if not r.agree],
        disagreements_tflm=[r.index for r in records if not r.agree_tflm],
        arena_bytes=max((b.arena_bytes for b in boards), default=0),
        flash_bytes=max((b.flash_bytes for b in boards if b.flash_bytes is not None), default=None),
        class_names=list(class_names), confusion=confusion.tolist(), boards=boards,
        run=run_figures([SessionFigures(**s) for s in meta.sessions]),
    )


def run_figures(sessions: list[SessionFigures]) -> RunFigures:
    samples = sum(s.samples for s in sessions)
    wall = sum(s.wall_s for s in sessions)
    links_wall = sum(s.wall_s * len(s.busy_s) for s in sessions)
    busy = sum(sum(s.busy_s) for s in sessions)
    return RunFigures(
        sessions=len(sessions), wall_s=round(wall, 3), setup_s=round(sum(s.setup_s for s in sessions), 3),
        samples_per_s=round(samples / wall, 2) if wall > 0 else 0.0,
        host_overhead=round(max(0.0, 1.0 - busy / links_wall), 4) if links_wall > 0 else 0.0,
        link_bytes_per_sample=round(sum(s.link_bytes for s in sessions) / samples, 1) if samples else 0.0,
        noise=sum(s.noise for s in sessions), silences=sum(s.silences for s in sessions),
        resets=sum(s.resets for s in sessions), reconnects=sum(s.reconnects for s in sessions),
    )
