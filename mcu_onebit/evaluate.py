"""`mcu-onebit eval`: on-device accuracy over the serial link, against host inference.

Every test image goes to the device as int8 bytes; the same bytes go through the int8
twin in ai-edge-litert with TFLite's reference kernels, and in TFLite Micro's host
interpreter. The device must return the same output bytes: `agreement` is the fraction
of samples where it does.

The work is spread so that the boards never wait on the host: each port has its own
thread and link, which keeps a request queued at the device while it computes
(DeviceLink.infer_stream); the twins run in another thread; the main thread only
writes each result to the journal (eval_journal.py) as it arrives and draws progress.
Results are keyed by test-set index and the journal keeps one per index, so retries,
resets and resumes never count a sample twice. The report (eval_report.py, JSON, and
report_html.py) is computed from the journal at the end, or when the run stops.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
import numpy as np

from .boards import get_board
from .convert import resolve_project
from .datasets import Dataset, load_dataset, split_validation
from .errors import Interrupted, OnebitError
from .eval_journal import (
    DEFAULT_EVAL_REPORT,
    JOURNAL_FORMAT,
    JournalMeta,
    SampleJournal,
    SampleRecord,
    SessionFigures,
    read_meta,
    meta_path,
    read_samples,
    samples_path,
    write_meta,
)
from .eval_report import REPORT_FORMAT, EvalReport, build_report
from .modelfile import write_text_atomic
from .native import load
from .outputs import check_file_target
from .serial_link import DeviceLink, LinkStats

__all__ = ["EvalReport", "HostTwin", "MicroTwin", "evaluate"]


class MicroTwin:
    """The int8 twin under TFLite Micro's host interpreter (the `tflite-micro` wheel)."""

    def __init__(self, path: Path):
        runtime = load("tflite_micro.python.tflite_micro.runtime")
        self.interpreter = runtime.Interpreter.from_bytes(Path(path).read_bytes())

    def run(self, quantized: np.ndarray) -> np.ndarray:
        self.interpreter.set_input(quantized, 0)
        self.interpreter.invoke()
        return self.interpreter.get_output(0).ravel().copy()


class HostTwin:
    """The int8 twin under ai-edge-litert's reference kernels: TFLite's int8 arithmetic."""

    def __init__(self, path: Path):
        interpreter = load("ai_edge_litert.interpreter")
        Interpreter, OpResolverType = interpreter.Interpreter, interpreter.OpResolverType
        if not Path(path).is_file():
            raise OnebitError(f"{path} is missing; convert the model again with `mcu-onebit convert`")
        self.interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"][1:])

    def quantize(self, image: np.ndarray) -> np.ndarray:
        scale, zero_point = self.input["quantization"]
        q = np.round(image.astype(np.float64) / scale) + zero_point
        return np.clip(q, -128, 127).astype(np.int8).reshape(self.input["shape"])

    def run(self, quantized: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], quantized)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).ravel().copy()


@dataclass(frozen=True)
class _DeviceResult:
    index: int
    output: bytes
    count: int
    port: str


class _HostResults:
    """The twins' outputs, computed in a thread ahead of the devices; `get` waits."""

    def __init__(self, host: HostTwin, micro: MicroTwin, inputs: dict[int, np.ndarray]):
        self._host, self._micro, self._inputs = host, micro, inputs
        self._done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._ready = threading.Condition()
        self._error: BaseException | None = None
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="host-twins", daemon=True)

    def _run(self) -> None:
        try:
            for index, quantized in self._inputs.items():
                if self._stop:
                    return
                outputs = (self._host.run(quantized), self._micro.run(quantized))
                with self._ready:
                    self._done[index] = outputs
                    self._ready.notify_all()
        except BaseException as exc:  # reported to the main thread
            with self._ready:
                self._error = exc
                self._ready.notify_all()

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        with self._ready:
            while index not in self._done:
                if self._error is not None:
                    raise self._error
                self._ready.wait(0.5)
            return self._done.pop(index)

    def stop(self) -> None:
        self._stop = True


def _device_url(project: Path, board, stack: ExitStack, log) -> str:
    from .emulator import find_running, start_emulator
    from .project import build_project

    running = find_running(project)
    if running:
        return running.url
    if not board.emulated:
        raise OnebitError(f"{board.id} is a real board: pass --port (e.g. /dev/ttyACM0)")
    log(f"no emulator running for {project}: booting one for this run")
    return stack.enter_context(start_emulator(build_project(project, board), board)).url


def _check_shapes(dataset, host: HostTwin, data: Path | None) -> None:
    image_shape = tuple(int(d) for d in dataset.x_test.shape[1:])
    if image_shape != host.input_shape:
        where = f" ({data})" if data else ""
        raise OnebitError(
            f"the test set{where} has images of shape {'x'.join(map(str, image_shape))}, the model takes "
            f"{'x'.join(map(str, host.input_shape))}; pass the data set the model was trained on with --data"
        )


def evaluate(project: Path | None, port: str | list[str] | tuple[str, ...] | None = None, limit: int | None = None,
             json_path: Path | None = None, data: Path | None = None, timeout: float = 10.0, log=print, *,
             resume: Path | None = None, html: bool = True, depth: int = 2, progress: bool = True) -> EvalReport:
    """Evaluate the project's model on one or more devices; returns the report and writes
    it (JSON at json_path, HTML beside it). resume: a report whose journal to continue."""
    setup_start = time.monotonic()
    ports = [port] if isinstance(port, str) else list(port or [])
    if len(set(ports)) != len(ports):
        raise OnebitError("the same --port is given twice; give each board once")
    if limit is not None and limit < 1:
        raise OnebitError("--limit must be at least 1")
    if not timeout > 0:
        raise OnebitError(f"--timeout must be a positive number of seconds, got {timeout}")
    meta: JournalMeta | None = None
    if resume is not None:
        json_path = Path(resume)
        meta = read_meta(json_path)
        if project is not None and Path(project).resolve() != Path(meta.project):
            raise OnebitError(f"{json_path} is a run of {meta.project}, not of {Path(project).resolve()}; drop --project")
        if limit is not None and limit != meta.limit:
            raise OnebitError(f"{json_path} is a run with --limit {meta.limit}; resume it without --limit")
        project, limit = Path(meta.project), meta.limit
        data = Path(meta.data) if meta.data and data is None else data
    project, report = resolve_project(project)
    board = get_board(report["board"])
    if meta is not None and meta.model_hash != report["model_hash"]:
        raise OnebitError(f"{project} now holds model {report['model_hash']}, the run in {json_path} was of "
                          f"{meta.model_hash}; start a new run without --resume")
    json_path = Path(json_path) if json_path else project.parent / DEFAULT_EVAL_REPORT
    check_report_target(json_path, resuming=meta is not None)
    dataset, split = evaluation_split(load_dataset(report["dataset"]["name"], data or report["dataset"]["data"]),
                                      report["dataset"], data)
    count = len(dataset.y_test) if limit is None else min(limit, len(dataset.y_test))
    host = HostTwin(project.parent / "twin_int8.tflite")
    _check_shapes(dataset, host, data)
    micro = MicroTwin(project.parent / "twin_int8.tflite")

    if meta is not None and meta.planned != count:
        raise OnebitError(f"{json_path} planned {meta.planned} samples, the test set now gives {count}; start a new run")
    done, keep_bytes = read_samples(json_path, count) if meta is not None else ({}, None)
    pending = [i for i in range(count) if i not in done]

    with ExitStack() as stack:
        if not ports:
            ports = [_device_url(project, board, stack, log)]
        links = []
        for url in ports:
            link = stack.enter_context(DeviceLink(url, timeout=timeout, baud=board.baud, expected_model=report["model_hash"]))
            identity = link.identify()
            if identity.input_bytes != int(np.prod(host.input_shape)):
                raise OnebitError(f"the device at {url} takes {identity.input_bytes} input bytes, the project's model "
                                  f"{int(np.prod(host.input_shape))}; run `mcu-onebit flash` first")
            links.append(link)

        # The devices are ours: only now is a previous report replaced.
        if meta is None:
            meta = JournalMeta(project=str(project), model_hash=report["model_hash"], dataset=split,
                               data=str(Path(data).resolve()) if data else None, limit=limit, planned=count)
        for link in links:
            meta.boards[link.url] = link.identity.raw
        write_meta(json_path, meta)
        journal = stack.enter_context(SampleJournal(json_path, keep_bytes=keep_bytes))
        inputs = {i: host.quantize(dataset.x_test[i]) for i in pending}
        setup_s = time.monotonic() - setup_start

        figures, failure = _stream(links, inputs, host, micro, dataset, journal, board.id, depth, progress)
        figures = SessionFigures(**{**asdict(figures), "setup_s": round(setup_s, 3)})
        if figures.samples or not meta.sessions:
            meta.sessions.append(asdict(figures))
        if failure is None:
            for link in links:  # the model must not have changed under us
                link.identify()
        write_meta(json_path, meta)

    samples, _ = read_samples(json_path)
    result = build_report(meta, samples, board.id, report.get("class_names", dataset.class_names))
    write_text_atomic(json_path, result.to_json())
    if html:
        from .report_html import render_html

        write_text_atomic(json_path.with_suffix(".html"), render_html(result, samples))
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            raise Interrupted(f"interrupted: {result.samples} of {count} samples kept in {json_path}; "
                              f"continue with `mcu-onebit eval --resume {json_path}`") from None
        if isinstance(failure, OnebitError):
            raise OnebitError(f"{failure} ({result.samples} of {count} samples kept in {json_path}; "
                              f"continue with `mcu-onebit eval --resume {json_path}`)") from failure
        raise failure
    log(f"wrote {json_path} (per-sample records in {samples_path(json_path)}"
        + (f", page {json_path.with_suffix('.html')})" if html else ")"))
    return result


def evaluation_split(dataset: Dataset, recorded: dict, data: Path | None) -> tuple[Dataset, str]:
    """The images `eval` runs, as the dataset's test split, and their name: the test split
    when the archive has one, else the validation split the model was trained with
    (`train --val-split`, recorded in the model and in convert's report)."""
    name = recorded["name"]
    if len(dataset.y_test):
        return dataset, name
    fraction, seed = float(recorded.get("val_split") or 0.0), int(recorded.get("seed") or 0)
    if not fraction:
        where = data or recorded.get("data") or name
        raise OnebitError(f"the test set of {where} holds no samples (no x_test, y_test) and the model was trained "
                          "without --val-split; pass --data with a test split")
    _, _, x_val, y_val = split_validation(dataset.x_train, dataset.y_train, fraction, seed)
    return replace(dataset, x_test=x_val, y_test=y_val), f"{name} (validation split {fraction:g}, seed {seed})"


def check_report_target(json_path: Path, resuming: bool) -> None:
    """Before any evaluation: the report, its page and its journal can be written, and
    none of them, where it exists, is a file that `eval` did not write."""
    json_path = Path(json_path)
    check_file_target(json_path, "--json", ".json")
    family = [json_path, json_path.with_suffix(".html"), meta_path(json_path), samples_path(json_path)]
    for path in family[1:]:
        if path.is_dir():
            raise OnebitError(f"{path} is a folder, in the way of the report {json_path}; choose another --json")
    if resuming or not any(path.exists() for path in family):
        return
    if not (_has_format(json_path, REPORT_FORMAT) or _has_format(meta_path(json_path), JOURNAL_FORMAT)):
        existing = next(path for path in family if path.exists())
        raise OnebitError(f"{existing} exists and was not written by `mcu-onebit eval`; choose another --json or move it away")


def _has_format(path: Path, fmt: str) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == fmt


def _stream(links: list[DeviceLink], inputs: dict[int, np.ndarray], host: HostTwin, micro: MicroTwin, dataset,
            journal: SampleJournal, board_id: str, depth: int, progress: bool
            ) -> tuple[SessionFigures, BaseException | None]:
    """Run the pending samples on the links; journal each result. Returns the session's
    figures and the error that stopped it, if any."""
    work: queue.Queue[int] = queue.Queue()
    for index in inputs:
        work.put(index)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    twins = _HostResults(host, micro, inputs)

    def items():
        while not stop.is_set():
            try:
                index = work.get_nowait()
            except queue.Empty:
                return
            yield index, inputs[index].tobytes()

    def drive(link: DeviceLink) -> None:
        try:
            for index, result in link.infer_stream(items(), depth=depth):
                results.put(_DeviceResult(index, result.output, result.count, link.url))
        except BaseException as exc:  # reported to the main thread
            results.put(exc)
        finally:
            results.put(None)

    for link in links:  # the session's figures start here (identify traffic excluded)
        link.stats = LinkStats()
    start = time.monotonic()
    twins.thread.start()
    threads = [threading.Thread(target=drive, args=(link,), name=f"link {link.url}", daemon=True) for link in links]
    for thread in threads:
        thread.start()
    failure: BaseException | None = None
    written = 0
    running = len(threads)
    label = f"eval on {board_id}" + (f" x{len(links)}" if len(links) > 1 else "")
    bar = click.progressbar(length=len(inputs), label=label, show_pos=True, show_eta=True,
                            file=sys.stderr,
                            item_show_func=lambda _: f"{written / max(time.monotonic() - start, 1e-9):.1f}/s")
    if not progress:
        bar.is_hidden = True
    try:
        with bar:
            while running:
                item = results.get()
                if item is None:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    failure = failure or item
                    stop.set()
                    continue
                host_out, micro_out = twins.get(item.index)
                device_out = np.frombuffer(item.output, np.int8)
                journal.append(SampleRecord(
                    index=item.index, label=int(dataset.y_test[item.index]), device=device_out.tolist(),
                    host=host_out.tolist(), tflm=micro_out.tolist(), count=item.count, port=item.port,
                    agree=device_out.shape == host_out.shape and bool(np.array_equal(device_out, host_out)),
                    agree_tflm=device_out.shape == micro_out.shape and bool(np.array_equal(device_out, micro_out)),
                ))
                written += 1
                bar.update(1)
    except BaseException as exc:  # Ctrl-C, a twin that failed: the journal so far is kept
        failure = failure or exc
        stop.set()
    finally:
        stop.set()
        twins.stop()
        for thread in threads:
            thread.join(timeout=1.0 if failure is not None else None)
    wall = time.monotonic() - start
    stats = [link.stats for link in links]
    figures = SessionFigures(
        samples=written, wall_s=round(wall, 3), busy_s=[round(min(s.busy_s, wall), 3) for s in stats],
        link_bytes=sum(s.bytes_in + s.bytes_out for s in stats), noise=sum(s.noise for s in stats),
        silences=sum(s.silences for s in stats), resets=sum(s.resets for s in stats),
        reconnects=sum(s.reconnects for s in stats), setup_s=0.0,
    )
    return figures, failure
