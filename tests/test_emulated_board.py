"""The serial protocol end to end: a test model built with PlatformIO (offline) for each
emulated board, booted in QEMU, driven through DeviceLink over socket://. Plus unit
tests of the host's framing and CRC."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from faulty_link import Damage, FaultyProxy

from mcu_onebit import serial_link as sl
from mcu_onebit.boards import all_boards
from mcu_onebit.emulator import _is_qemu, find_running, run_foreground, start_emulator, stop_running
from mcu_onebit.errors import OnebitError
from mcu_onebit.project import build_project, firmware_size, generate_project

ECHO_MODEL = Path(__file__).parent / "data" / "echo_model.c"
INPUT_BYTES = 64
OUTPUT_BYTES = 16
EMULATED = [board for board in all_boards().values() if board.emulated]
needs_toolchain = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc (Debian: qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi)",
)


def echo_reference(data: bytes) -> bytes:
    """What tests/data/echo_model.c computes."""
    sums = [0] * OUTPUT_BYTES
    for i, value in enumerate(data):
        sums[i % OUTPUT_BYTES] = (sums[i % OUTPUT_BYTES] + value) & 0xFF
    return bytes(s ^ 0x55 for s in sums)


# --- framing and CRC ---------------------------------------------------------------


def test_crc_matches_published_check_value():
    assert sl.crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value


def test_frame_round_trip_through_garbage_and_split_reads():
    frames = [sl.encode_frame(sl.INFER, 7, bytes(range(200))), sl.encode_frame(sl.IDENTIFY, 8)]
    stream = b"\x00\xa5\x13" + frames[0] + b"\x5a\xa5" + frames[1]
    decoder = sl.FrameDecoder()
    received = []
    for i in range(0, len(stream), 5):
        received += decoder.feed(stream[i : i + 5])
    assert received == [sl.Frame(sl.INFER, 7, bytes(range(200))), sl.Frame(sl.IDENTIFY, 8, b"")]


def test_decoder_drops_a_frame_with_a_bad_crc_and_keeps_the_next():
    bad = bytearray(sl.encode_frame(sl.INFER, 1, b"abc"))
    bad[-1] ^= 0xFF
    decoder = sl.FrameDecoder()
    assert decoder.feed(bytes(bad) + sl.encode_frame(sl.INFER, 2, b"xyz")) == [sl.Frame(sl.INFER, 2, b"xyz")]
    assert decoder.dropped == 1


def test_only_the_boot_banner_marks_a_reset():
    decoder = sl.FrameDecoder()
    decoder.feed(b"e-[Unknown command: x]\r\nm-ready\r\n")  # what a stray '%' in noise provokes
    assert not decoder.take_banner()
    decoder.feed(b"m-timestamp-mode-performance\r\nm-init")  # the banner split across reads
    decoder.feed(b"-done\r\nm-ready\r\n")
    assert decoder.take_banner() and not decoder.take_banner()


def test_frame_layout():
    frame = sl.encode_frame(sl.INFER, 0x1FF, b"\x01\x02")  # seq wraps to 8 bits
    assert frame[:2] == sl.SYNC
    assert frame[2:6] == bytes([sl.INFER, 0xFF, 2, 0])
    assert struct.unpack("<H", frame[-2:])[0] == sl.crc16(frame[2:-2])


# --- link failures without a device --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_port_names_the_port():
    url = f"socket://127.0.0.1:{_free_port()}"
    with pytest.raises(OnebitError, match=url):
        sl.DeviceLink(url)


def test_silent_device_times_out_quickly():
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    url = f"socket://127.0.0.1:{server.getsockname()[1]}"
    try:
        start = time.monotonic()
        with sl.DeviceLink(url, timeout=1.0, retries=1) as link, pytest.raises(OnebitError, match="did not answer"):
            link.identify()
        assert time.monotonic() - start < 4
    finally:
        server.close()


# --- the firmware under QEMU ---------------------------------------------------------


@pytest.fixture(scope="module", params=EMULATED, ids=lambda board: board.id)
def built(request, tmp_path_factory):
    """(board, ELF) of the echo model, built offline in a private PlatformIO core."""
    board = request.param
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCU_ONEBIT_HOME", str(home))
        project = generate_project(board, {"model.c": ECHO_MODEL.read_text()}, home / "project")
        elf = build_project(project, board)
    return board, elf


@pytest.fixture
def emulator(built):
    board, elf = built
    with start_emulator(elf, board) as emulator:
        yield emulator


def _read_frame(link: sl.DeviceLink, timeout: float = 5.0) -> sl.Frame:
    decoder = sl.FrameDecoder()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = decoder.feed(link.serial.read(max(1, link.serial.in_waiting)))
        if frames:
            return frames[0]
    raise AssertionError("no frame from the device")


@needs_toolchain
def test_firmware_fits_and_identifies(built, emulator):
    board, elf = built
    size = firmware_size(elf)
    assert 0 < size.flash_bytes < board.flash_bytes and 0 < size.ram_bytes < board.ram_bytes
    with sl.DeviceLink(emulator.url) as link:
        identity = link.identify()
    assert identity.protocol == sl.PROTOCOL_VERSION
    assert identity.board == board.id
    assert identity.counter == "instructions"
    assert identity.clock_hz == board.clock_hz
    assert (identity.input_bytes, identity.output_bytes) == (INPUT_BYTES, OUTPUT_BYTES)
    assert identity.model == {"name": "echo", "hash": "0000"}
    with sl.DeviceLink(emulator.url) as link:  # the whole object at once equals the slices the link asked for
        whole = link.exchange(sl.IDENTIFY)
        assert json.loads(whole.payload) == identity.raw and len(whole.payload) > sl.IDENTIFY_SLICE
        tail = link.exchange(sl.IDENTIFY, struct.pack("<HH", len(whole.payload) - 3, 100))
        assert tail.payload == whole.payload[-3:]
        assert link.exchange(sl.IDENTIFY, struct.pack("<HH", 0xFFFF, 1)).payload == b""
        assert link.exchange(sl.IDENTIFY, b"\x00").error_code == sl.ERR_LENGTH


@needs_toolchain
def test_inference_outputs_and_counts_are_exact_and_deterministic(built):
    board, elf = built
    inputs = [bytes(range(INPUT_BYTES)), bytes([0xFF] * INPUT_BYTES), bytes(range(100, 100 + INPUT_BYTES))]
    runs = []
    for _ in range(2):  # two boots: counts must not depend on the run
        with start_emulator(elf, board) as emulator, sl.DeviceLink(emulator.url) as link:
            runs.append([link.infer(x) for x in inputs + inputs])
    for results in runs:
        assert [r.output for r in results] == [echo_reference(x) for x in inputs + inputs]
        assert all(r.count > 0 for r in results)
    assert [r.count for r in runs[0]] == [r.count for r in runs[1]]
    assert [r.count for r in runs[0][:3]] == [r.count for r in runs[0][3:]]


@needs_toolchain
def test_device_rejects_bad_frames_and_keeps_serving(emulator):
    with sl.DeviceLink(emulator.url) as link:
        corrupt = bytearray(sl.encode_frame(sl.INFER, 42, bytes(INPUT_BYTES)))
        corrupt[10] ^= 0x01
        link.serial.write(b"\x00\xa5\x13" + bytes(corrupt))  # garbage, then a damaged frame
        reply = _read_frame(link)
        assert (reply.type, reply.seq, reply.error_code) == (sl.ERROR, 42, sl.ERR_CRC)

        reply = link.exchange(sl.INFER, bytes(INPUT_BYTES - 1))
        assert reply.error_code == sl._P["OB_PROTO_ERR_LENGTH"]
        with pytest.raises(OnebitError, match="bad length"):
            link.infer(bytes(INPUT_BYTES + 1))

        # A length the link damaged is refused from the header: the device does not sit
        # in the frame waiting for 8 KB that never come.
        damaged = bytearray(sl.encode_frame(sl.INFER, 43, bytes(INPUT_BYTES)))
        damaged[5] = 0x20  # length 64 -> 8256
        link.serial.write(bytes(damaged))
        # Nothing more is sent, so a device that waited for the payload would never answer:
        # the timeout only has to outlast a slow emulator.
        reply = _read_frame(link, timeout=10.0)
        assert (reply.type, reply.seq, reply.error_code) == (sl.ERROR, 43, sl.ERR_LENGTH)

        reply = link.exchange(0x33)
        assert reply.error_code == sl._P["OB_PROTO_ERR_UNKNOWN_TYPE"]

        with pytest.raises(OnebitError, match="inference failed"):
            link.infer(b"\x80" + bytes(INPUT_BYTES - 1))  # the echo model refuses this input

        assert link.infer(bytes(INPUT_BYTES)).output == echo_reference(bytes(INPUT_BYTES))

        # Last, since the device then scans the 16 KB it refused for the next frame, which
        # takes QEMU's UART over a second.
        reply = link.exchange(sl.INFER, bytes(16385))  # beyond the firmware's buffer
        assert reply.error_code == sl._P["OB_PROTO_ERR_LENGTH"]
    with sl.DeviceLink(emulator.url, timeout=30.0) as link:
        assert link.infer(bytes(INPUT_BYTES)).output == echo_reference(bytes(INPUT_BYTES))


@needs_toolchain
def test_a_long_run_on_a_noisy_line_completes_exactly(emulator):
    """1 % of the bytes damaged each way, over several times more sends than the link's
    cap on attempts in a row: about two in three exchanges are damaged, and every reply
    must still be the clean one."""
    # A first byte below 0x80: the echo model refuses 0x80 and resets the board on 0x81.
    inputs = [bytes([i & 0x7F]) + bytes((i * 7 + j) & 0xFF for j in range(1, INPUT_BYTES)) for i in range(150)]
    proxy = FaultyProxy(int(emulator.url.rsplit(":", 1)[1]), Damage(drop=0.005, flip=0.005), seed=3)
    try:
        with sl.DeviceLink(proxy.url, timeout=30.0, max_attempts=100) as link:
            link.identify()
            results = dict(link.infer_stream(enumerate(inputs)))
            stats = link.stats
    finally:
        proxy.close()
    assert {i: r.output for i, r in results.items()} == {i: echo_reference(x) for i, x in enumerate(inputs)}
    assert proxy.faults > 100 and stats.noise > 50
    assert stats.attempts > link.max_attempts  # more sends than the cap allows in a row


@needs_toolchain
def test_a_board_that_restarts_on_an_input_ends_the_run_with_an_error(emulator):
    with sl.DeviceLink(emulator.url, timeout=10.0) as link:
        link.identify()
        with pytest.raises(OnebitError, match="restarted or went silent 5 times while computing one INFER"):
            link.infer(b"\x81" + bytes(INPUT_BYTES - 1))  # the echo model resets the board
        assert link.stats.resets == 4
        assert link.infer(bytes(INPUT_BYTES)).output == echo_reference(bytes(INPUT_BYTES))


@needs_toolchain
def test_reconnecting_and_emulator_exit(emulator):
    for _ in range(2):  # QEMU accepts a new client after the previous one left
        with sl.DeviceLink(emulator.url) as link:
            assert link.identify().input_bytes == INPUT_BYTES
    with sl.DeviceLink(emulator.url, timeout=2.0) as link:
        emulator.stop()
        with pytest.raises(OnebitError):
            link.infer(bytes(INPUT_BYTES))


@needs_toolchain
def test_recorded_emulator_is_found_and_stopped(built, tmp_path):
    board, elf = built
    started = start_emulator(elf, board, record_in=tmp_path)
    try:
        found = find_running(tmp_path)
        assert found is not None and (found.pid, found.url) == (started.pid, started.url)
        with sl.DeviceLink(found.url) as link:
            assert link.infer(bytes(INPUT_BYTES)).output == echo_reference(bytes(INPUT_BYTES))
        assert stop_running(tmp_path)
        assert find_running(tmp_path) is None and not stop_running(tmp_path)
    finally:
        started.stop()


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _port_frees_within(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL],
                         ids=lambda signum: signal.Signals(signum).name)
def test_a_signal_to_a_foreground_emulator_stops_qemu(built, signum):
    """What `kill`, a CI timeout, a closed terminal or a supervisor sends must not leave
    QEMU holding the port; not even SIGKILL, which the wrapper cannot handle."""
    board, elf = built
    port = _free_port()
    code = ("import sys\nfrom pathlib import Path\nfrom mcu_onebit.boards import get_board\n"
            "from mcu_onebit.emulator import run_foreground\n"
            f"run_foreground(Path({str(elf)!r}), get_board({board.id!r}), tcp_port={port})\n")
    wrapper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert "serial: socket://" in wrapper.stdout.readline()
        [qemu] = _children(wrapper.pid)
        wrapper.send_signal(signum)
        assert wrapper.wait(timeout=30) == (-signal.SIGKILL if signum == signal.SIGKILL else 0)
    finally:
        wrapper.kill()
    assert _port_frees_within(port, 2.0)
    deadline = time.monotonic() + 2.0
    while _is_qemu(qemu) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _is_qemu(qemu)


def test_a_recorded_emulator_whose_starter_was_killed_is_stopped(built, tmp_path):
    """`flash` leaves the emulator running; killed while it boots, `emulate --stop` still
    finds it."""
    board, elf = built
    code = ("from pathlib import Path\nfrom mcu_onebit.boards import get_board\n"
            "from mcu_onebit.emulator import start_emulator\n"
            f"start_emulator(Path({str(elf)!r}), get_board({board.id!r}), record_in=Path({str(tmp_path)!r}))\n"
            "import time; time.sleep(60)\n")
    wrapper = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while find_running(tmp_path) is None:
            assert time.monotonic() < deadline, "no emulator recorded"
            time.sleep(0.01)
        wrapper.send_signal(signal.SIGKILL)
        wrapper.wait(timeout=30)
        found = find_running(tmp_path)
        assert found is not None, "the emulator died with its starter or lost its record"
        port = int(found.url.rsplit(":", 1)[1])
        assert stop_running(tmp_path)
    finally:
        wrapper.kill()
        stop_running(tmp_path)
    assert _port_frees_within(port, 2.0) and not _is_qemu(found.pid)


def test_foreground_emulator_on_a_port_in_use_is_an_error(built):
    board, elf = built
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(OnebitError, match="in use"):
            run_foreground(elf, board, tcp_port=taken.getsockname()[1])
