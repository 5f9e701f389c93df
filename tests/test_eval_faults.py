"""`eval` on real links: the real QEMU firmware of a small digits model behind a proxy
that drops and flips bytes and restarts the board, a run killed and resumed, two boards
sharing the test set, a board that dies mid-run, and the user mistakes around a port."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from cli_run import assert_one_line_error, cli_env, run_cli
from faulty_link import Damage, FaultyProxy

from mcu_onebit.boards import get_board
from mcu_onebit.emulator import Emulator, start_emulator
from mcu_onebit.errors import OnebitError
from mcu_onebit.eval_journal import meta_path, read_meta, read_samples, samples_path
from mcu_onebit.evaluate import evaluate
from mcu_onebit.project import build_project, generate_project

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


def _faulty_run(project: Path, elf: Path, report: Path, damage: Damage, seed: int = 1,
                restart_at: int | None = None, close_at: int | None = None, samples: int = SAMPLES):
    """`eval` of `samples` through a FaultyProxy on a freshly booted board; the board
    restarts once `restart_at` samples are recorded, the host's port closes at
    `close_at`. Returns (EvalResult, proxy). The line's chunks are kept beside the report
    (streams.jsonl) when the run fails."""
    boards = [start_emulator(elf, BOARD)]
    port = _port_of(boards[0])

    def restart() -> None:
        boards[-1].stop()
        # The proxy is the new board's first client and hands its banner on, as a USB-UART
        # adapter that stays attached while a board restarts.
        boards.append(start_emulator(elf, BOARD, tcp_port=port, timeout=60, keep_boot_banner=True))

    proxy = FaultyProxy(port, damage, seed=seed, restart=None if restart_at is None else restart,
                        restart_when=lambda: _samples_recorded(report) >= restart_at,
                        close_when=None if close_at is None else lambda: _samples_recorded(report) >= close_at)
    failed = True
    try:
        result = evaluate(project, port=proxy.url, limit=samples, json_path=report, timeout=30, log=quiet,
                          progress=False, html=False)
        failed = False
    finally:
        proxy.close()
        for board in boards:
            board.stop()
        if failed:
            proxy.dump(report.with_name("streams.jsonl"))
        if proxy.error is not None:
            raise AssertionError(f"restarting the board failed: {proxy.error}") from proxy.error
    return result, proxy


def _assert_clean_results(report: Path, clean: Path) -> None:
    assert outputs(report) == outputs(clean)  # every sample once, with the clean run's bytes and counts
    assert without_run(report) | {"port": None, "boards": None} == without_run(clean) | {"port": None, "boards": None}


def test_noisy_link_and_board_restart_give_the_clean_results(project, elf, clean, tmp_path):
    result, proxy = _faulty_run(project, elf, tmp_path / "eval.json", Damage(drop=0.005, flip=0.005),
                                restart_at=SAMPLES // 3)
    assert proxy.restarts == 1 and proxy.faults > 20 and proxy.reconnects >= 1
    assert result.run.noise > 0 and result.run.resets >= 1  # the link saw the damage and the reset
    _assert_clean_results(tmp_path / "eval.json", clean)


# --- every damage model a serial line shows (hypothesis draws the seeds and the moments) --

LINE_DAMAGE = {
    "drops": Damage(drop=0.01),
    "flips": Damage(flip=0.01),
    "bursts": Damage(burst=0.003),
    "duplicated chunks": Damage(duplicate=0.1),
    "reordered bytes": Damage(reorder=0.1),
    "drops and flips, restart": Damage(drop=0.005, flip=0.005),
    "port closing": Damage(),
}


@pytest.mark.parametrize("name", LINE_DAMAGE)
@settings(max_examples=2, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), moment=st.integers(1, SAMPLES - 1))
def test_every_damage_model_gives_the_clean_results(project, elf, clean, tmp_path_factory, name, seed, moment):
    report = tmp_path_factory.mktemp("damaged") / "eval.json"
    restart_at = moment if "restart" in name else None
    close_at = moment if name == "port closing" else None
    start = time.monotonic()
    result, proxy = _faulty_run(project, elf, report, LINE_DAMAGE[name], seed, restart_at=restart_at, close_at=close_at)
    # Liveness, not speed: a link stuck in some state would run into evaluate's limits.
    assert time.monotonic() - start < 300
    if LINE_DAMAGE[name] != Damage():
        assert proxy.faults > 0
    assert proxy.restarts == (restart_at is not None) and proxy.closes == (close_at is not None)
    if close_at is not None:
        assert result.run.reconnects >= 1
    _assert_clean_results(report, clean)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [Damage(drop=0.005, flip=0.005), Damage(burst=0.003)], ids=str)
@pytest.mark.parametrize("seed", range(25))
def test_many_seeds_give_the_clean_results(project, elf, clean, tmp_path, damage, seed):
    _faulty_run(project, elf, tmp_path / "eval.json", damage, seed)
    _assert_clean_results(tmp_path / "eval.json", clean)


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
