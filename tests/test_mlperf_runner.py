"""MLPerf Tiny's runner against an emulated board flashed by mcu-onebit: a host written from
the runner's observed behaviour (mlcommons/tiny benchmark/runner: serial_device.py,
device_under_test.py, datasets.py, main.py) drives a CIFAR-10-shaped 1-bit model on
qemu-m4 over the EnergyRunner text protocol, reading the data set folder that
`mcu-onebit runner-data` writes, and gets `mcu-onebit eval`'s top-1 on every image; one
image is made so that the model's logits sum to exactly zero."""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from cli_run import assert_one_line_error, run_cli

from mcu_onebit.boards import get_board
from mcu_onebit.emulator import start_emulator
from mcu_onebit.eval_journal import read_samples
from mcu_onebit.evaluate import evaluate
from mcu_onebit.project import build_project
from mcu_onebit.runner_data import LABELS, MANIFEST, write_runner_data

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm and arm-none-eabi-gcc are needed (make setup installs them)",
)
BOARD = get_board("qemu-m4")
CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_train.npz"
TRAIN, TEST = 1000, 200  # images: training (one epoch), and the runner's and eval's test set


def quiet(*_args) -> None:
    pass


class RunnerHost:
    """What MLPerf Tiny's runner does with a DUT on a serial port, from its code's behaviour:
    a command is its text and '%'; the reply is the lines ('\\n' ends one; '\\r' and NUL are
    dropped, empty lines skipped) up to the first containing "m-ready"; `db` sends 31 bytes
    of hex per command; accuracy mode runs `infer 1 0` per file, takes the line matching
    `^m-results-\\[([^]]+)\\]$` as floats, divides them by their sum (normalize_probabilities)
    and takes np.argmax of that."""

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port
        self.pending = b""

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no response (got {self.pending!r})")  # the runner's "No response to command"
            self.pending += self.port.read(max(1, self.port.in_waiting))
        line, self.pending = self.pending.split(b"\n", 1)
        return line.replace(b"\r", b"").replace(b"\0", b"").decode()

    def send_command(self, command: str, timeout: float = 5.0) -> list[str]:
        self.port.write(f"{command}%".encode())
        lines = []
        while True:
            line = self._line(timeout)
            if line:
                lines.append(line)
            if "m-ready" in line:
                return lines

    def name(self) -> str | None:
        for line in self.send_command("name"):
            match = re.match(r"^m-(name)-dut-\[([^]]+)]$", line)
            if match:
                return match.group(2)
        return None

    def load(self, data: bytes) -> None:
        self.send_command(f"db load {len(data)}")
        for i in range(0, len(data), 31):
            self.send_command(f"db {''.join(f'{d:02x}' for d in data[i : i + 31])}")

    def infer_results(self) -> list[float]:
        for line in self.send_command("infer 1 0", timeout=30.0):
            match = re.match(r"^m-results-\[([^]]+)\]$", line)
            if match:
                return [float(x) for x in match.group(1).split(",") if x.strip()]
        raise RuntimeError("no m-results line")  # the runner then fails with KeyError: 'results'

    def top1(self, dataset: Path) -> dict[str, tuple[int, int]]:
        """file -> (true class, top-1) over the data set folder, in its y_labels.csv order."""
        with open(dataset / LABELS) as file:
            truth = list(csv.DictReader(file, fieldnames=["file", "classes", "class", "bytes_to_send", "stride"]))
        out = {}
        for row in truth:
            self.load((dataset / row["file"]).read_bytes())
            scores = self.infer_results()
            total = sum(scores)
            normalised = [s / total for s in scores]  # ZeroDivisionError where they sum to 0
            out[row["file"]] = (int(row["class"]), int(np.argmax(normalised)))
        return out


def _zero_sum_image(twin, images: np.ndarray) -> np.ndarray:
    """An image on which the twin's int8 logits dequantize to a sum of exactly 0: on the
    path from one image to another, one pixel at a time, where the sum of the outputs
    crosses `classes * zero_point`, by bisection. The device gives the twin's bytes."""
    zero_point = twin.output["quantization"][1]

    def excess(image) -> int:
        output = twin.run(twin.quantize(image)).astype(np.int64)
        return int(output.sum() - len(output) * zero_point)

    sums = [excess(image) for image in images]
    below = [i for i, s in enumerate(sums) if s < 0]
    above = [i for i, s in enumerate(sums) if s > 0]
    for a in below:
        for b in above:
            start, end = images[a].reshape(-1), images[b].reshape(-1)

            def path(k: int) -> np.ndarray:
                return np.concatenate([end[:k], start[k:]]).reshape(images[a].shape)

            low, high = 0, start.size  # excess(path(low)) < 0 < excess(path(high))
            while high - low > 1:
                middle = (low + high) // 2
                value = excess(path(middle))
                if value == 0:
                    return path(middle)
                low, high = (middle, high) if value < 0 else (low, middle)
    raise AssertionError("no image with logits summing to zero on any path; the model is degenerate")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCU_ONEBIT_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def model(home, tmp_path_factory) -> dict:
    """tiny-resnet on 32x32x3 CIFAR-10 images, one epoch, converted for qemu-m4 and built;
    the test set: 200 held-out training images and one whose logits sum to zero."""
    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} is absent (real data lives in ../shared/data on developer and CI machines)")
    from mcu_onebit.convert import convert
    from mcu_onebit.evaluate import HostTwin
    from mcu_onebit.train import TrainConfig, train

    work = tmp_path_factory.mktemp("cifar")
    with np.load(CIFAR) as archive:
        x, y = archive["x_train"][: TRAIN + TEST], archive["y_train"][: TRAIN + TEST]
    np.savez(work / "train.npz", x_train=x[:TRAIN], y_train=y[:TRAIN], x_test=x[TRAIN:], y_test=y[TRAIN:])
    train(TrainConfig(dataset="cifar10", data=work / "train.npz", epochs=1), work / "m.h5", log=quiet)
    out = convert(work / "m.h5", BOARD.id, work / "out", data=work / "train.npz", log=quiet)
    twin = HostTwin(out.out_dir / "twin_int8.tflite")
    zero = _zero_sum_image(twin, x[TRAIN : TRAIN + 20])
    x_test, y_test = np.concatenate([x[TRAIN:], zero[None]]), np.concatenate([y[TRAIN:], [0]])
    np.savez(work / "test.npz", x_train=x[:10], y_train=y[:10], x_test=x_test, y_test=y_test)
    return {"project": out.project_dir, "elf": build_project(out.project_dir, BOARD), "test": work / "test.npz",
            "twin": twin, "work": work}


def test_runner_gets_evals_top1_on_every_image(model, tmp_path):
    report = tmp_path / "eval.json"
    with start_emulator(model["elf"], BOARD) as board:
        result = evaluate(model["project"], port=board.url, data=model["test"], json_path=report, log=quiet,
                          progress=False, html=False)
    samples, _ = read_samples(report)
    assert result.agreement == 1.0 and len(samples) == TEST + 1
    device = {i: np.array(r.device, np.int64) for i, r in samples.items()}
    zero_point = model["twin"].output["quantization"][1]
    sums = {i: int(out.sum() - len(out) * zero_point) for i, out in device.items()}  # of the logits, in steps
    assert sums[TEST] == 0  # the made image: the runner used to divide by zero here
    assert any(s < 0 for s in sums.values())  # where normalising the logits flipped the top-1

    dataset = tmp_path / "datasets" / "ic01"
    written = write_runner_data(model["project"], dataset, data=model["test"])
    assert written.samples == TEST + 1
    with start_emulator(model["elf"], BOARD) as board:  # a fresh boot, as the runner finds a board
        port = serial.serial_for_url(board.url, baudrate=BOARD.baud, timeout=0.1)
        try:
            runner = RunnerHost(port)
            assert runner.name() == f"mcu-onebit-{BOARD.id}"
            top1 = runner.top1(dataset)
        finally:
            port.close()
    assert len(top1) == TEST + 1
    for index, record in samples.items():
        label, runner_top1 = top1[f"{index:05d}.bin"]
        assert label == record.label
        assert runner_top1 == int(np.argmax(device[index])), (index, device[index].tolist())
    accuracy = sum(label == t for label, t in top1.values()) / len(top1)
    assert accuracy == pytest.approx(result.accuracy_device)


def test_runner_data_files_are_evals_input_bytes(model, tmp_path):
    folder = tmp_path / "ic01"
    written = write_runner_data(model["project"], folder, data=model["test"], limit=5)
    with np.load(model["test"]) as archive:
        images, labels = archive["x_test"][:5], archive["y_test"][:5]
    rows = (folder / LABELS).read_text().splitlines()
    assert rows == [f"{i:05d}.bin,10,{labels[i]}" for i in range(5)]
    for i in range(5):
        assert (folder / f"{i:05d}.bin").read_bytes() == model["twin"].quantize(images[i]).tobytes()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["model_hash"] == written.model_hash and sorted(manifest["files"]) == sorted(p.name for p in folder.iterdir())
    write_runner_data(model["project"], folder, data=model["test"], limit=3)  # its own folder is replaced
    assert len((folder / LABELS).read_text().splitlines()) == 3 and not (folder / "00004.bin").exists()


def test_runner_data_never_replaces_a_folder_it_did_not_write(model, tmp_path):
    folder = tmp_path / "ic01"
    folder.mkdir()
    (folder / LABELS).write_text("emergency_vehicle_s_000060.bin,10,9\n")  # MLPerf's own data set, say
    result = run_cli("runner-data", "--project", str(model["project"]), "--data", str(model["test"]), "--out", str(folder))
    assert_one_line_error(result, str(folder), "runner-data` did not write")
    assert (folder / LABELS).read_text() == "emergency_vehicle_s_000060.bin,10,9\n"
