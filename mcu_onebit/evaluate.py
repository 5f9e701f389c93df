"""`mcu-onebit eval`: on-device accuracy over the serial link, against host inference.

Every test image goes to the device as int8 bytes; the same bytes go through the int8
twin in ai-edge-litert with TFLite's reference kernels, and in TFLite Micro's host
interpreter. The device must return the same
output bytes: `agreement` is the fraction of samples where it does. Each sample's record
is appended to <report>.samples.jsonl as it arrives, so an interrupted run keeps them.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from .boards import get_board
from .convert import resolve_project
from .datasets import load_dataset
from .errors import OnebitError
from .modelfile import write_text_atomic
from .serial_link import DeviceLink


@dataclass(frozen=True)
class Latency:
    unit: str  # "instructions" (emulated boards) or "cycles"
    median: float
    p90: float
    max: int


@dataclass(frozen=True)
class EvalReport:
    board: str
    port: str
    model_hash: str
    samples: int
    accuracy_device: float
    accuracy_host: float
    agreement: float
    accuracy_host_tflm: float  # the twin under TFLite Micro's host interpreter
    agreement_tflm: float  # fraction of samples whose TFLM output bytes equal the device's
    latency: Latency
    disagreements: list[int]  # test-set indices whose device output differs from the host's
    arena_bytes: int

    def table(self) -> str:
        rows = [
            ("board", self.board), ("samples", f"{self.samples}"),
            ("accuracy (device)", f"{self.accuracy_device:.4f}"), ("accuracy (host, TFLite reference)", f"{self.accuracy_host:.4f}"),
            ("accuracy (host, TFLite Micro)", f"{self.accuracy_host_tflm:.4f}"),
            ("agreement (identical output bytes)", f"{self.agreement:.4f}"),
            ("agreement with TFLite Micro", f"{self.agreement_tflm:.4f}"),
            (f"latency median / p90 / max ({self.latency.unit})", f"{self.latency.median:,.0f} / {self.latency.p90:,.0f} / {self.latency.max:,}"),
            ("arena", f"{self.arena_bytes:,} B"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class MicroTwin:
    """The int8 twin under TFLite Micro's host interpreter (the `tflite-micro` wheel)."""

    def __init__(self, path: Path):
        from tflite_micro.python.tflite_micro import runtime

        self.interpreter = runtime.Interpreter.from_bytes(Path(path).read_bytes())

    def run(self, quantized: np.ndarray) -> np.ndarray:
        self.interpreter.set_input(quantized, 0)
        self.interpreter.invoke()
        return self.interpreter.get_output(0).ravel().copy()


class HostTwin:
    """The int8 twin under ai-edge-litert's reference kernels: TFLite's int8 arithmetic."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def quantize(self, image: np.ndarray) -> np.ndarray:
        scale, zero_point = self.input["quantization"]
        q = np.round(image.astype(np.float64) / scale) + zero_point
        return np.clip(q, -128, 127).astype(np.int8).reshape(self.input["shape"])

    def run(self, quantized: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], quantized)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).ravel().copy()


def _device_url(project: Path, board, port: str | None, stack: ExitStack, log) -> str:
    from .emulator import find_running, start_emulator
    from .project import build_project

    if port:
        return port
    running = find_running(project)
    if running:
        return running.url
    if not board.emulated:
        raise OnebitError(f"{board.id} is a real board: pass --port (e.g. /dev/ttyACM0)")
    log(f"no emulator running for {project}: booting one for this run")
    return stack.enter_context(start_emulator(build_project(project, board), board)).url


def evaluate(project: Path | None, port: str | None = None, limit: int | None = None, json_path: Path | None = None,
             data: Path | None = None, timeout: float = 10.0, log=print) -> EvalReport:
    project, report = resolve_project(project)
    board = get_board(report["board"])
    dataset = load_dataset(report["dataset"]["name"], data or report["dataset"]["data"])
    if limit is not None and limit < 1:
        raise OnebitError("--limit must be at least 1")
    count = len(dataset.y_test) if limit is None else min(limit, len(dataset.y_test))
    host = HostTwin(project.parent / "twin_int8.tflite")
    micro = MicroTwin(project.parent / "twin_int8.tflite")
    json_path = Path(json_path) if json_path else project.parent / "eval.json"
    samples_path = json_path.with_suffix(".samples.jsonl")
    samples_path.parent.mkdir(parents=True, exist_ok=True)

    with ExitStack() as stack:
        url = _device_url(project, board, port, stack, log)
        link = stack.enter_context(DeviceLink(url, timeout=timeout, baud=board.baud))
        identity = link.identify()
        if identity.model.get("hash") != report["model_hash"]:
            raise OnebitError(
                f"the device at {url} runs model {identity.model.get('hash')}, the project has {report['model_hash']}; "
                "run `mcu-onebit flash` first"
            )
        labels, device_pred, host_pred, micro_pred, counts, disagreements = [], [], [], [], [], []
        micro_same = 0
        log_file = stack.enter_context(samples_path.open("w"))
        with click.progressbar(range(count), label=f"eval on {board.id}", show_pos=True, show_eta=True,
                               file=click.get_text_stream("stderr")) as bar:
            for i in bar:
                quantized = host.quantize(dataset.x_test[i])
                result = link.infer(quantized.tobytes())
                device_out = np.frombuffer(result.output, np.int8)
                host_out = host.run(quantized)
                micro_out = micro.run(quantized)
                micro_same += bool(np.array_equal(device_out, micro_out))
                micro_pred.append(int(micro_out.argmax()))
                same = device_out.shape == host_out.shape and bool(np.array_equal(device_out, host_out))
                if not same:
                    disagreements.append(i)
                labels.append(int(dataset.y_test[i]))
                device_pred.append(int(device_out.argmax()))
                host_pred.append(int(host_out.argmax()))
                counts.append(result.count)
                log_file.write(json.dumps({
                    "index": i, "label": labels[-1], "device": device_out.tolist(), "host": host_out.tolist(),
                    "count": result.count, "agree": same,
                }) + "\n")
                log_file.flush()

    labels_arr = np.asarray(labels)
    result = EvalReport(
        board=board.id, port=url, model_hash=report["model_hash"], samples=count,
        accuracy_device=float(np.mean(np.asarray(device_pred) == labels_arr)),
        accuracy_host=float(np.mean(np.asarray(host_pred) == labels_arr)),
        agreement=1.0 - len(disagreements) / count,
        accuracy_host_tflm=float(np.mean(np.asarray(micro_pred) == labels_arr)),
        agreement_tflm=micro_same / count,
        latency=Latency(identity.counter, float(np.median(counts)), float(np.percentile(counts, 90)), int(max(counts))),
        disagreements=disagreements, arena_bytes=identity.arena_bytes,
    )
    write_text_atomic(json_path, json.dumps(asdict(result), indent=2) + "\n")
    log(f"wrote {json_path} (per-sample records in {samples_path})")
    return result
