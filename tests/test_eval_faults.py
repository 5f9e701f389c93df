"""`eval` on real links: the real QEMU firmware of a small digits model behind a proxy
that drops and flips bytes and restarts the board, a run killed and resumed, two boards
sharing the test set, a board that dies mid-run, and the user mistakes around a port."""

from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from cli_run import assert_one_line_error, cli_env, run_cli

from mcu_onebit.boards import get_board
from mcu_onebit.emulator import Emulator, start_emulator
from mcu_onebit.errors import OnebitError
from mcu_onebit.eval_journal import meta_path, read_meta, read_samples, samples_path
from mcu_onebit.evaluate import evaluate
from mcu_onebit.project import build_project, generate_project
from mcu_onebit.serial_link import RESET_BANNER

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm and arm-none-eabi-gcc are needed (make setup installs them)",
)
SAMPLES = 60
BOARD = get_board("qemu-m4")
ECHO_MODEL = Path(__file__).parent / "data" / "echo_model.c"


def quiet(*_args) -> None:
    pass


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCU_ONEBIT_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def project(home, tmp_path_factory) -> Path:
    """A digits model trained for one epoch, converted for qemu-m4 and built."""
    from mcu_onebit.convert import convert
    from mcu_onebit.train import TrainConfig, train

    work = tmp_path_factory.mktemp("model")
    train(TrainConfig(epochs=1), work / "m.h5", log=quiet)
    project = convert(work / "m.h5", BOARD.id, work / "out", log=quiet).project_dir
    build_project(project, BOARD)
    return project


@pytest.fixture(scope="module")
def elf(project) -> Path:
    return build_project(project, BOARD)


@pytest.fixture(scope="module")
def board(elf):
    with start_emulator(elf, BOARD) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def clean(project, board, tmp_path_factory) -> Path:
    """The reference: an uninterrupted run on a clean link."""
    report = tmp_path_factory.mktemp("clean") / "eval.json"
    evaluate(project, port=board.url, limit=SAMPLES, json_path=report, log=quiet, progress=False)
    return report


def outputs(report: Path) -> dict[int, tuple[list[int], int]]:
    """index -> (device output, count), asserting one line per index."""
    lines = samples_path(report).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    indices = [r["index"] for r in records]
    assert len(indices) == len(set(indices)), "a sample was recorded twice"
    return {r["index"]: (r["device"], r["count"]) for r in records}


def without_run(report: Path) -> dict:
    data = json.loads(report.read_text())
    del data["run"]
    return data


def test_clean_report_fields_and_page(clean):
    report = json.loads(clean.read_text())
    assert report["format"] == "mcu-onebit-eval/1" and report["complete"] and report["samples"] == SAMPLES
    assert report["agreement"] == 1.0 and report["agreement_tflm"] == 1.0
    assert sum(map(sum, report["confusion"])) == SAMPLES
    assert np.trace(np.array(report["confusion"])) == round(report["accuracy_device"] * SAMPLES)
    [board] = report["boards"]
    assert board["samples"] == SAMPLES and board["counter"] == "instructions" and board["arena_bytes"] > 0
    assert report["latency"]["median_ms"] is None and report["latency"]["max"] >= report["latency"]["median"] > 0
    run = report["run"]
    assert run["samples_per_s"] > 0 and 0 <= run["host_overhead"] <= 1 and run["link_bytes_per_sample"] > 64
    page = clean.with_suffix(".html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "Confusion matrix" in page


# --- a link that drops and flips bytes, and a board that restarts ------------------------


class FaultyProxy:
    """Forwards a client to a board's TCP port, dropping and flipping `rate` of the bytes
    each way (half each). When the board's side closes (the board restarted), it connects
    again to the same port and keeps the client's connection: as a board reset looks
    through a USB serial adapter.

    With `restart`, the proxy itself restarts the board once `restart_when()` holds,
    before forwarding the board's next bytes: the run cannot finish without those bytes,
    so the restart always lands mid-run. The new board's boot banner passes undamaged, so
    that the link must see the reset (with a damaged banner it may see only silence, and
    that is right too). An error while restarting is kept in `error`."""

    def __init__(self, upstream_port: int, rate: float, seed: int = 1,
                 restart: Callable[[], None] | None = None, restart_when: Callable[[], bool] | None = None) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.restarts = 0
        self.error: BaseException | None = None
        self._restart = restart
        self._restart_when = restart_when
        self._banner_pending = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.faults = 0
        self.reconnects = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._up: socket.socket | None = None
        self._down: socket.socket | None = None
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _damage(self, data: bytes) -> bytes:
        out = bytearray()
        with self._lock:
            for byte in data:
                r = self._rng.random()
                if r < self.rate / 2:
                    self.faults += 1
                    continue  # dropped
                if r < self.rate:
                    self.faults += 1
                    byte ^= 1 << self._rng.randrange(8)  # flipped
                out.append(byte)
        return bytes(out)

    def _connect_up(self) -> socket.socket | None:
        while not self._closed:
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
                up.settimeout(None)
                return up
            except OSError:
                time.sleep(0.02)
        return None

    def _serve(self) -> None:
        self._down, _ = self.server.accept()
        self._up = self._connect_up()
        threading.Thread(target=self._downstream_to_board, daemon=True).start()
        while not self._closed:  # board -> client, reconnecting to the board as needed
            up = self._up
            try:
                data = up.recv(4096) if up else b""
            except OSError:
                data = b""
            if not data:
                if self._closed:
                    return
                self._up = None
                if up:
                    up.close()
                self._up = self._connect_up()
                self.reconnects += 1
                continue
            if self._restart and not self.restarts and self._restart_when():
                self._restart_board(up)
                continue  # the old board's bytes are lost with it
            if self._banner_pending:  # the new board's boot banner passes undamaged
                self._banner_pending = RESET_BANNER not in data
                self._down.sendall(data)
                continue
            try:
                self._down.sendall(self._damage(data))
            except OSError:
                return

    def _restart_board(self, up: socket.socket) -> None:
        self.restarts += 1
        self._up = None
        up.close()
        try:
            self._restart()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in this thread
            self.error = exc
            return
        self._banner_pending = True
        self._up = self._connect_up()
        self.reconnects += 1

    def _downstream_to_board(self) -> None:
        while not self._closed:
            try:
                data = self._down.recv(4096)
            except OSError:
                return
            if not data:
                return
            up = self._up
            if up is None:
                continue  # the board is down: bytes are lost, as on a real line
            try:
                up.sendall(self._damage(data))
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        for sock in (self._down, self._up, self.server):
            if sock is not None:
                sock.close()


def _port_of(emulator: Emulator) -> int:
    return int(emulator.url.rsplit(":", 1)[1])


def _samples_recorded(report: Path) -> int:
    path = samples_path(report)
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait_for_samples(report: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _samples_recorded(report) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} samples in {samples_path(report)} after {timeout} s")


def test_noisy_link_and_board_restart_give_the_clean_results(project, elf, clean, tmp_path):
    boards = [start_emulator(elf, BOARD)]
    port = _port_of(boards[0])
    report = tmp_path / "eval.json"

    def restart() -> None:
        boards[-1].stop()
        # The proxy is the new board's first client and hands its banner on, as a USB-UART
        # adapter that stays attached while a board restarts.
        boards.append(start_emulator(elf, BOARD, tcp_port=port, timeout=60, keep_boot_banner=True))

    proxy = FaultyProxy(port, rate=0.01, restart=restart,
                        restart_when=lambda: _samples_recorded(report) >= SAMPLES // 3)
    try:
        result = evaluate(project, port=proxy.url, limit=SAMPLES, json_path=report, timeout=30, log=quiet,
                          progress=False, html=False)
    finally:
        proxy.close()
        for board in boards:
            board.stop()
        if proxy.error is not None:
            raise AssertionError(f"restarting the board failed: {proxy.error}") from proxy.error
    assert proxy.restarts == 1 and len(boards) == 2
    assert proxy.faults > 20 and proxy.reconnects >= 1
    assert result.run.noise > 0 and result.run.resets >= 1  # the link saw the damage and the reset
    assert outputs(report) == outputs(clean)  # every sample once, with the clean run's bytes and counts
    assert without_run(report) | {"port": None, "boards": None} == without_run(clean) | {"port": None, "boards": None}


# --- kill and resume ---------------------------------------------------------------------



def test_killed_run_resumes_to_the_same_report(project, board, clean, tmp_path):
    report = tmp_path / "eval.json"
    cli = Path(sys.executable).with_name("mcu-onebit")
    process = subprocess.Popen(
        [str(cli), "eval", "--project", str(project), "--port", board.url, "--limit", str(SAMPLES), "--json", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_samples(report, 10)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    kept, _ = read_samples(report)
    assert 10 <= len(kept) < SAMPLES and not report.exists()  # killed mid-run: journal only

    resumed = run_cli("eval", "--resume", str(report), "--port", board.url)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(report) == outputs(clean)
    assert without_run(report) == without_run(clean)
    # The killed session recorded no figures; the resumed one did only the rest.
    assert [s["samples"] for s in read_meta(report).sessions] == [SAMPLES - len(kept)]


def test_ctrl_c_says_how_to_go_on(project, board, clean, tmp_path):
    report = tmp_path / "eval.json"
    cli = Path(sys.executable).with_name("mcu-onebit")
    process = subprocess.Popen(
        [str(cli), "eval", "--project", str(project), "--port", board.url, "--limit", str(SAMPLES), "--json", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    try:
        _wait_for_samples(report, 10)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    last = stderr.strip().splitlines()[-1]
    assert process.returncode == 130, stderr
    assert last.startswith("error: interrupted") and f"mcu-onebit eval --resume {report}" in last, stderr
    resumed = run_cli("eval", "--resume", str(report), "--port", board.url)
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(report) == outputs(clean)


def _copy_run(clean: Path, report: Path) -> None:
    for path in (clean, samples_path(clean), meta_path(clean)):
        shutil.copy(path, report.with_name(report.stem + path.name[len(clean.stem):]))


def test_resume_refuses_a_journal_with_a_sample_outside_the_run(board, clean, tmp_path):
    report = tmp_path / "eval.json"
    _copy_run(clean, report)
    record = json.loads(samples_path(report).read_text().splitlines()[0])
    with samples_path(report).open("a") as journal:
        journal.write(json.dumps({**record, "index": SAMPLES + 5}) + "\n")
    result = run_cli("eval", "--resume", str(report), "--port", board.url)
    assert_one_line_error(result, f"line {SAMPLES + 1}", "outside this run")
    assert json.loads(report.read_text()) == json.loads(clean.read_text())  # the report is not recomputed


def test_resume_without_its_journal(board, clean, tmp_path):
    report = tmp_path / "eval.json"
    _copy_run(clean, report)
    samples_path(report).unlink()
    result = run_cli("eval", "--resume", str(report), "--port", board.url)
    assert_one_line_error(result, str(samples_path(report)), "missing")


def test_board_dying_mid_run_keeps_the_partial_report(project, elf, clean, tmp_path):
    emulator = start_emulator(elf, BOARD)
    report = tmp_path / "eval.json"

    def kill_midway() -> None:
        _wait_for_samples(report, 10)
        emulator.stop()

    killer = threading.Thread(target=kill_midway, daemon=True)
    killer.start()
    try:
        with pytest.raises(OnebitError, match="--resume"):
            evaluate(project, port=emulator.url, limit=SAMPLES, json_path=report, timeout=2, log=quiet,
                     progress=False, html=False)
    finally:
        killer.join(30)
        emulator.stop()
    partial = json.loads(report.read_text())
    assert not partial["complete"] and 10 <= partial["samples"] < SAMPLES

    with start_emulator(elf, BOARD) as fresh:
        evaluate(None, port=fresh.url, resume=report, log=quiet, progress=False, html=False)
    assert outputs(report) == outputs(clean)


# --- several boards ----------------------------------------------------------------------


def test_two_boards_share_the_test_set(project, elf, board, clean, tmp_path):
    report = tmp_path / "eval.json"
    with start_emulator(elf, BOARD) as second:
        result = evaluate(project, port=[board.url, second.url], limit=SAMPLES, json_path=report, log=quiet,
                          progress=False, html=False)
    assert outputs(report) == outputs(clean)
    assert [b.port for b in result.boards] == [board.url, second.url]
    assert all(b.samples > 0 for b in result.boards) and sum(b.samples for b in result.boards) == SAMPLES
    ports = {json.loads(line)["port"] for line in samples_path(report).read_text().splitlines()}
    assert ports == {board.url, second.url}
    assert result.agreement == 1.0 and "samples" in result.table()


# --- user mistakes: one line, exit 2, an existing report kept ----------------------------



@pytest.fixture
def kept(clean, tmp_path) -> Path:
    """A finished report at the path the failing run is told to write."""
    report = tmp_path / "eval.json"
    for path in (clean, clean.with_suffix(".samples.jsonl"), clean.with_suffix(".meta.json")):
        shutil.copy(path, report.with_name("eval" + path.name[len("eval"):]))
    return report


def assert_unchanged(report: Path, clean: Path) -> None:
    assert report.read_text() == clean.read_text()
    assert samples_path(report).read_text() == samples_path(clean).read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_port_that_does_not_exist(project, kept, clean):
    url = f"socket://127.0.0.1:{_free_port()}"
    result = run_cli("eval", "--project", str(project), "--port", url, "--json", str(kept))
    assert_one_line_error(result, url)
    assert_unchanged(kept, clean)


def test_port_of_another_kind_of_device(project, kept, clean):
    server = socket.create_server(("127.0.0.1", 0))

    def chatter() -> None:  # a text protocol: a banner, then a complaint for every line
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            while connection.recv(1024):
                connection.sendall(b"Protocol mismatch.\r\n")

    threading.Thread(target=chatter, daemon=True).start()
    try:
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        result = run_cli("eval", "--project", str(project), "--port", url, "--json", str(kept), "--timeout", "1")
    finally:
        server.close()
    assert_one_line_error(result, url, "does not speak the mcu-onebit serial protocol")
    assert_unchanged(kept, clean)


def test_device_with_another_model(project, kept, clean, home):
    echo = generate_project(BOARD, {"model.c": ECHO_MODEL.read_text()}, home / "echo")
    with start_emulator(build_project(echo, BOARD), BOARD) as other:
        result = run_cli("eval", "--project", str(project), "--port", other.url, "--json", str(kept))
    assert_one_line_error(result, "runs model 0000", "mcu-onebit flash")
    assert_unchanged(kept, clean)


def test_test_set_of_another_shape(project, board, kept, clean, tmp_path):
    data = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 10, 10, 1), dtype=np.uint8)
    np.savez(data, x_train=images, y_train=np.arange(20) % 10, x_test=images, y_test=np.arange(20) % 10)
    result = run_cli("eval", "--project", str(project), "--port", board.url, "--data", str(data), "--json", str(kept))
    assert_one_line_error(result, "10x10x1", "8x8x1")
    assert_unchanged(kept, clean)
