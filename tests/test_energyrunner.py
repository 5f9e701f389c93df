"""The EEMBC EnergyRunner / MLPerf Tiny DUT text protocol (docs/energyrunner.md) on the
firmware: the echo test model built for qemu-m4, booted in QEMU, driven by a host written
only from the public protocol (plain text over pyserial, as MLPerf Tiny's runner does:
`command%` out, "\\r\\n"-ended lines back until one says m-ready). Its results are checked
against the same firmware's binary INFER (DeviceLink): the softmax of the int8 output.
Also: fresh boots answer the first command, a long infer stops on a byte, a model from
the static runtime's generator (its output quantization), and the same C built for the
PC, where the results line is checked over many output scales and crafted outputs."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from mcu_onebit import serial_link as sl
from mcu_onebit.boards import get_board
from mcu_onebit.cheader import read_defines
from mcu_onebit.emulator import start_emulator
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir
from mcu_onebit.project import build_project, generate_project
from test_emulated_board import ECHO_MODEL, INPUT_BYTES, OUTPUT_BYTES, echo_reference, needs_toolchain

BOARD = get_board("qemu-m4")
ECHO_SCALE = float(re.search(r"#define ECHO_OUTPUT_SCALE (\S+)f", ECHO_MODEL.read_text()).group(1))
ECHO_ZERO_POINT = int(re.search(r"#define ECHO_OUTPUT_ZERO_POINT (\S+)", ECHO_MODEL.read_text()).group(1))
RUNNER_CHUNK = 31  # bytes per `db` command in MLPerf Tiny's runner (device_under_test.py)
_ER = read_defines("app/energyrunner.c")
MIN_DECIMALS, MAX_DECIMALS = _ER["ER_MIN_DECIMALS"], _ER["ER_MAX_DECIMALS"]
COUNT_MAX = 10 ** read_defines("app/energyrunner.h")["OB_ER_COUNT_DIGITS"] - 1
NAME = f"m-name-dut-[mcu-onebit-{BOARD.id}]"


def score_line(output: bytes, scale: float, zero_point: int) -> str:
    """A one-output model's results line: (q - zero_point) * scale in float32, "%0.3f"."""
    q = np.frombuffer(output, np.int8).astype(np.int32)
    values = (q - zero_point).astype(np.float32) * np.float32(scale)
    return "m-results-[" + ",".join("%0.3f" % float(v) for v in values) + "]"


def check_probabilities(line: str, output: bytes, scale: float) -> tuple[np.ndarray, int]:
    """A results line of a model with several outputs: the softmax of the dequantized int8
    output, one number of decimals for all (3, more only where 3 would tie the top class
    with a lower one); equal outputs print equal, the top ones above all others. Returns
    (the printed values, their decimals)."""
    match = re.match(r"^m-results-\[([^]]+)\]$", line)  # the runner's pattern
    assert match, line
    texts = match.group(1).split(",")
    assert all(re.fullmatch(r"[0-9]+\.[0-9]+", t) for t in texts), line
    decimals = {len(t.split(".")[1]) for t in texts}
    assert len(decimals) == 1, line
    decimals = decimals.pop()
    assert MIN_DECIMALS <= decimals <= MAX_DECIMALS
    values = np.array([float(t) for t in texts])
    q = np.frombuffer(output, np.int8).astype(np.int64)
    assert len(values) == len(q)
    logits = (q - q.max()) * float(np.float32(scale))  # the softmax is the same from any shift
    p = np.exp(logits) / np.exp(logits).sum()
    unit = 10.0**-decimals
    assert np.abs(values - p).max() <= unit / 2 + 1e-6, (line, p)
    assert abs(values.sum() - 1) <= len(values) * unit / 2 + 1e-6
    top = q == q.max()
    assert (values[top] == values.max()).all() and (values[~top] < values.max()).all(), (line, q)
    for v in set(q.tolist()):  # the same int8 value prints the same
        assert len(set(values[q == v])) == 1, (line, q)
    if top.all() or p.max() - p[~top].max() > 1e-3 + 2e-6:  # 3 decimals keep the top apart
        assert decimals == MIN_DECIMALS, line
    return values, decimals

class TextHost:
    """The host side of the text protocol, from its public description only."""

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port
        self.pending = b""

    def read_line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"no line from the device; got {self.pending!r}")
            self.pending += self.port.read(max(1, self.port.in_waiting))
        line, self.pending = self.pending.split(b"\n", 1)
        assert line.endswith(b"\r"), line  # every line ends in \r\n
        return line[:-1].decode("ascii")

    def read_reply(self, timeout: float = 10.0) -> list[str]:
        """Lines up to the m-ready that ends every reply; m-ready itself is checked, not returned."""
        lines = []
        while True:
            line = self.read_line(timeout)
            if line == "m-ready":
                return lines
            assert "m-ready" not in line  # MLPerf's runner ends a reply on any line containing it
            lines.append(line)

    def send(self, command: str | bytes) -> list[str]:
        self.port.write(command if isinstance(command, bytes) else f"{command}%".encode("ascii"))
        return self.read_reply()

    def load(self, data: bytes) -> None:
        """`db load N`, then the bytes in hex in the runner's chunks."""
        assert self.send(f"db load {len(data)}") == [f"m-[Expecting {len(data)} bytes]"]
        for i in range(0, len(data), RUNNER_CHUNK):
            reply = self.send("db " + data[i : i + RUNNER_CHUNK].hex())
            assert reply == (["m-load-done"] if i + RUNNER_CHUNK >= len(data) else [])

    def infer(self, iterations: int, warmups: int) -> tuple[int, str]:
        """`infer N W`: (timed microseconds, results line), the reply's order checked."""
        lines = self.send(f"infer {iterations} {warmups}")
        assert lines[:3] == [f"m-warmup-start-{warmups}", "m-warmup-done", f"m-infer-start-{iterations}"], lines
        laps = [re.fullmatch(r"m-lap-us-([0-9]+)", line) for line in lines[3:5]]
        assert all(laps) and lines[5] == "m-infer-done" and len(lines) == 7, lines
        start, end = (int(lap.group(1)) for lap in laps)
        assert end >= start
        return end - start, lines[6]


@pytest.fixture(scope="module")
def elf(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCU_ONEBIT_HOME", str(home))
        project = generate_project(BOARD, {"model.c": ECHO_MODEL.read_text()}, home / "project")
        return build_project(project, BOARD)


@pytest.fixture
def emulator(elf):
    with start_emulator(elf, BOARD) as emulator:
        yield emulator


@pytest.fixture
def host(emulator):
    port = serial.serial_for_url(emulator.url, timeout=0.05)
    try:
        yield TextHost(port)
    finally:
        port.close()


def _crafted_inputs() -> list[bytes]:
    """Inputs whose echo outputs take all 256 int8 values, 16 per inference (output[j]
    is input[j] ^ 0x55 when the rest is zero), plus one busier input."""
    inputs = []
    for k in range(16):
        head = bytes((v ^ 0x55) for v in range(16 * k, 16 * k + 16))
        inputs.append(head + bytes(INPUT_BYTES - OUTPUT_BYTES))
    inputs.append(bytes((37 * i + 11) & 0xFF for i in range(INPUT_BYTES)))
    return inputs


@needs_toolchain
def test_identification_with_nothing_unasked(host):
    time.sleep(0.3)
    assert host.port.in_waiting == 0  # the emulator read the boot banner: nothing waits for the host
    name = host.send("name")
    assert len(name) == 1 and re.match(r"^m-(name)-dut-\[([^]]+)]$", name[0])  # the runner's pattern
    assert name == [NAME]
    assert host.send("profile") == ["m-profile-[ULPMark for tinyML Firmware V0.0.1]", "m-model-[ic01]"]
    assert re.fullmatch(r"m-lap-us-[0-9]+", *host.send("timestamp"))
    help_text = host.send("help")
    assert help_text[0] == "ULPMark for tinyML Firmware V0.0.1"
    assert any(line.startswith("infer N") for line in help_text)
    assert host.send("") == []  # a lone '%' flushes a half-sent command


@needs_toolchain
def test_fresh_boots_answer_the_first_command_first(elf):
    """MLPerf Tiny's runner opens the port and sends `name%` (at once to check a name, two
    seconds later to identify): on 20 fresh boots its first reply is the name."""
    for boot in range(20):
        with start_emulator(elf, BOARD) as emulator:
            port = serial.serial_for_url(emulator.url, timeout=0.05)
            try:
                if boot % 2:
                    time.sleep(0.3)
                assert TextHost(port).send("name") == [NAME], boot
            finally:
                port.close()


@needs_toolchain
def test_fresh_pty_boots_answer_the_first_command_first(elf):
    """`mcu-onebit emulate --pty`, the way the runner (which opens serial ports only) reaches
    an emulated board: a host that opens the pty as soon as its path is printed gets the
    name as its first reply (QEMU would hand the banner to whoever opens it during boot)."""
    code = ("from pathlib import Path\nfrom mcu_onebit.boards import get_board\n"
            "from mcu_onebit.emulator import run_foreground\n"
            f"run_foreground(Path({str(elf)!r}), get_board({BOARD.id!r}), pty=True)\n")
    for boot in range(5):
        emulate = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            path = re.match(r"serial: (\S+)", emulate.stdout.readline()).group(1)
            with serial.Serial(path, timeout=0.05) as port:
                assert TextHost(port).send("name") == [NAME], boot
        finally:
            emulate.terminate()
            emulate.wait(timeout=30)


@needs_toolchain
def test_boot_banner_kept_for_the_first_client(elf):
    """With keep_boot_banner the first client sees the board boot, as a host attached to a
    board that restarts does: the banner, which DeviceLink takes as a reset, and no m-ready."""
    with start_emulator(elf, BOARD, keep_boot_banner=True) as emulator:
        port = serial.serial_for_url(emulator.url, timeout=0.05)
        try:
            host = TextHost(port)
            assert host.read_line() == "m-timestamp-mode-performance"
            assert re.fullmatch(r"m-lap-us-[0-9]+", host.read_line())
            assert host.read_line() == sl.RESET_BANNER.decode()
            time.sleep(0.2)
            assert host.pending == b"" and port.in_waiting == 0
            assert host.send("name") == [NAME]
        finally:
            port.close()


@needs_toolchain
def test_results_equal_binary_infer_and_echo_reference(emulator):
    inputs = _crafted_inputs()
    with sl.DeviceLink(emulator.url) as link:
        binary = [link.infer(x) for x in inputs]
    assert [b.output for b in binary] == [echo_reference(x) for x in inputs]

    port = serial.serial_for_url(emulator.url, timeout=0.05)  # a second client, as QEMU allows
    try:
        host = TextHost(port)
        for x, b in zip(inputs, binary):
            host.load(x)
            _, results = host.infer(1, 0)
            check_probabilities(results, b.output, ECHO_SCALE)
            assert host.send("results") == [results]

        # The runner's parsing: floats, one per output.
        values = [float(v) for v in re.match(r"^m-results-\[([^]]+)\]$", results).group(1).split(",")]
        assert len(values) == OUTPUT_BYTES
        # db print shows the loaded bytes back.
        dump = host.send("db print")
        assert all(line.startswith("m-buffer-") for line in dump)
        assert bytes.fromhex("".join(line[len("m-buffer-"):].replace("-", "") for line in dump)) == inputs[-1]

        # Timing: m-lap-us is the HAL counter (instructions under QEMU) over the 25 MHz
        # clock, around the N timed inferences only (warmups and serial output excluded).
        # The binary count of one inference also holds one counter reading (some tens of
        # instructions); the loop adds a few per iteration.
        count = binary[-1].count
        for iterations, warmups in [(1, 0), (20, 3), (200, 0)]:
            elapsed_us, _ = host.infer(iterations, warmups)
            assert iterations * (count - 40) / 25 - 1 <= elapsed_us <= iterations * (count + 20) / 25 + 2, (
                iterations, count, elapsed_us)
        # `infer N` alone: 10 warmups, as the reference DUT.
        assert host.send("infer 2")[0] == "m-warmup-start-10"
    finally:
        port.close()


@needs_toolchain
def test_text_commands_between_binary_frames(emulator):
    x1, x2 = _crafted_inputs()[3], _crafted_inputs()[-1]
    with sl.DeviceLink(emulator.url) as link:
        host = TextHost(link.serial)  # the same connection carries both protocols
        assert link.infer(x1).output == echo_reference(x1)
        assert host.send("name") == [NAME]
        host.load(x2)
        check_probabilities(host.infer(1, 0)[1], echo_reference(x2), ECHO_SCALE)

        assert link.infer(x1).output == echo_reference(x1)
        assert link.identify().input_bytes == INPUT_BYTES
        # A binary request reuses the buffer: the loaded bytes and the results are gone.
        assert host.send("infer 1 0") == [f"e-[Input db has 0 bytes, expected {INPUT_BYTES}]"]
        assert host.send("results") == ["e-[No results: run 'infer' first]"]

        # A frame sent in the middle of a command line drops that line.
        link.serial.write(b"nam")
        assert link.infer(x2).output == echo_reference(x2)
        assert host.send("e") == ["e-[Unknown command: e]"]
        host.load(x1)
        check_probabilities(host.infer(1, 0)[1], echo_reference(x1), ECHO_SCALE)


@needs_toolchain
def test_bad_commands_answer_an_error_and_m_ready(emulator, host):
    errors = {
        "foo": "e-[Unknown command: foo]",
        "db": "e-[Command 'db' requires a subcommand]",
        "db 00ff": "e-[Command 'db' needs 'db load N' first]",
        "db load": "e-[Command 'db load' requires the # of bytes]",
        "db load 0": "e-[Command 'db load' must be >0 bytes: 0]",
        "db load x1": "e-[Command 'db load' must be >0 bytes: x1]",
        "db load 999999": "e-[Supplied buffer size 999999 exceeds maximum of 16384]",
        "infer": f"e-[Input db has 0 bytes, expected {INPUT_BYTES}]",
        "infer 0": f"e-[Inference iterations must be 1 to {COUNT_MAX}: 0]",
        f"infer {COUNT_MAX + 1} 0": f"e-[Inference iterations must be 1 to {COUNT_MAX}: {COUNT_MAX + 1}]",
        "infer 1 -1": f"e-[Inference warmup must be 0 to {COUNT_MAX}: -1]",
        f"infer 1 {COUNT_MAX + 1}": f"e-[Inference warmup must be 0 to {COUNT_MAX}: {COUNT_MAX + 1}]",
        "results": "e-[No results: run 'infer' first]",
        "x" * 81: "e-[Command longer than 80 characters]",
    }
    for command, error in errors.items():
        assert host.send(command) == [error], command

    assert host.send("db load 4") == ["m-[Expecting 4 bytes]"]
    assert host.send("db 123") == ["e-[Insufficient number of hex digits]"]
    assert host.send("db 12zz") == ["e-[Invalid hex digit 'zz']"]
    assert host.send("db 0102") == []  # nothing stored by the two bad chunks
    assert host.send("db 030405") == ["m-load-done"]  # digits past N are ignored
    assert host.send("db print") == ["m-buffer-01-02-03-04"]
    assert host.send("db 05") == ["e-[All bytes of 'db load' are loaded already]"]
    assert host.send("infer 1 0") == [f"e-[Input db has 4 bytes, expected {INPUT_BYTES}]"]
    # Binary noise in a line drops what came before it.
    assert host.send(b"na\x00\xffme%") == ["e-[Unknown command: me]"]

    # The echo model refuses an input starting with -128: the failure is reported.
    host.load(b"\x80" + bytes(INPUT_BYTES - 1))
    assert host.send("infer 1 1") == ["m-warmup-start-1", "e-[Inference failed: OB_ERR_UNSUPPORTED]"]
    assert host.send("results") == ["e-[No results: run 'infer' first]"]

    x = _crafted_inputs()[5]
    host.load(x)
    check_probabilities(host.infer(3, 1)[1], echo_reference(x), ECHO_SCALE)
    host.port.close()
    with sl.DeviceLink(emulator.url) as link:  # and the binary protocol still answers
        assert link.infer(x).output == echo_reference(x)


@needs_toolchain
def test_longest_infer_stops_on_a_byte_from_the_host(host):
    """`infer N W` takes counts up to 999,999,999 (hours for a real model): a printable byte
    stops it between inferences and is taken; a line break after the '%' does not."""
    x = _crafted_inputs()[2]
    host.load(x)
    for command, phase in [(f"infer {COUNT_MAX} {COUNT_MAX}", "warmups"), (f"infer {COUNT_MAX} 0", "timed inferences")]:
        host.port.write(f"{command}%\r\n".encode())
        started = [host.read_line() for _ in range(1 if phase == "warmups" else 3)]
        assert started[0] == f"m-warmup-start-{COUNT_MAX if phase == 'warmups' else 0}"
        time.sleep(0.3)
        assert host.pending == b"" and host.port.in_waiting == 0  # still running
        [stopped] = host.send(b"%")
        done = re.fullmatch(rf"e-\[Inference stopped by the host after ([0-9]+) of {COUNT_MAX} {phase}]", stopped)
        assert done and 0 < int(done.group(1)) < COUNT_MAX, stopped
        assert host.send("results") == ["e-[No results: run 'infer' first]"]
    assert host.send("name") == [NAME]  # the '%' that stopped it started no command
    check_probabilities(host.infer(2, 1)[1], echo_reference(x), ECHO_SCALE)


@needs_toolchain
def test_generated_static_model_reports_its_output_quantization(tmp_path):
    """A real runtime: one int8 CONV_2D through the static runtime's generator, whose
    ob_model carries the graph's output scale and zero point; the results line equals
    TFLite's reference output dequantized with them."""
    import tflite_builder as tb
    from mcu_onebit.converters.static_runtime import generate

    rng = np.random.default_rng(7)
    output_q = (0.1372549, -5)
    model = tb.conv2d_model([1, 4, 4, 4], (0.05, 3), rng.integers(-127, 128, (4, 3, 3, 4), dtype=np.int8),
                            [0.01, 0.02, 0.015, 0.03], rng.integers(-500, 500, 4).astype(np.int32), output_q)
    home = tmp_path / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCU_ONEBIT_HOME", str(home))
        project = generate_project(BOARD, {"model.c": generate(model, "0" * 16, "test").source}, home / "project")
        elf = build_project(project, BOARD)
    inputs = [rng.integers(-128, 128, 64, dtype=np.int8).tobytes() for _ in range(3)]
    with start_emulator(elf, BOARD) as emulator:
        port = serial.serial_for_url(emulator.url, timeout=0.05)
        try:
            host = TextHost(port)
            for x in inputs:
                host.load(x)
                expected = tb.run_reference(model, np.frombuffer(x, np.int8).reshape(1, 4, 4, 4)).tobytes()
                check_probabilities(host.infer(1, 0)[1], expected, output_q[0])
        finally:
            port.close()


# --- the same C on the PC: the results line for many output scales ---------------------

# A stand-in board: output collected in memory, a counter that advances 1000 per reading,
# no byte ever waiting.
HOST_HAL = r"""
#include <string.h>
#include "hal.h"
static uint8_t sent[1 << 16];
static size_t sent_length;
static uint64_t ticks;
void ob_hal_write(const uint8_t *data, size_t length) {
  if (sent_length + length <= sizeof sent) { memcpy(sent + sent_length, data, length); sent_length += length; }
}
uint8_t ob_hal_read_byte(void) { return 0; }
int ob_hal_byte_waiting(void) { return 0; }
int ob_hal_host_attached(void) { return 1; }
uint64_t ob_hal_counter(void) { return ticks += 1000; }
const char *ob_hal_counter_unit(void) { return "instructions"; }
size_t test_take(uint8_t *out) { size_t n = sent_length; memcpy(out, sent, n); sent_length = 0; return n; }
"""


class HostDut:
    """energyrunner.c with the echo model, built for the PC and fed byte by byte."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.test_take.restype = ctypes.c_size_t
        self.buffer = ctypes.create_string_buffer(16384)
        lib.ob_er_begin(self.buffer, ctypes.c_size_t(len(self.buffer)))

    def take(self) -> list[str]:
        out = ctypes.create_string_buffer(1 << 16)
        length = self.lib.test_take(out)
        text = out.raw[:length].decode("ascii")
        assert text.endswith("\r\n")
        return text[:-2].split("\r\n")

    def send(self, command: str) -> list[str]:
        for byte in f"{command}%".encode("ascii"):
            self.lib.ob_er_byte(ctypes.c_uint8(byte))
        lines = self.take()
        assert lines[-1] == "m-ready"
        return lines[:-1]

    def results(self, x: bytes) -> str:
        """`db load`, the bytes in the runner's chunks, `infer 1 0`: the results line."""
        assert self.send(f"db load {len(x)}") == [f"m-[Expecting {len(x)} bytes]"]
        for i in range(0, len(x), RUNNER_CHUNK):
            assert self.send("db " + x[i : i + RUNNER_CHUNK].hex()) == (["m-load-done"] if i + RUNNER_CHUNK >= len(x) else [])
        lines = self.send("infer 1 0")
        # Two counter readings 1000 instructions apart at 25 MHz: 40 us.
        assert lines[3:5] == [f"m-lap-us-{int(lines[3][9:])}", f"m-lap-us-{int(lines[3][9:]) + 40}"]
        return lines[-1]


def host_dut(tmp_path: Path, *flags: str) -> HostDut:
    (tmp_path / "hal_host.c").write_text(HOST_HAL)
    fw = firmware_dir()
    lib = ctypes.CDLL(str(build_shared_library(
        [fw / "app" / "energyrunner.c", ECHO_MODEL, fw / "kernels" / "ob_common.c", tmp_path / "hal_host.c"],
        [fw / "app", fw / "kernels"], tmp_path / "libenergyrunner.so", [*flags, "-DF_CPU=25000000", "-lm"])))
    dut = HostDut(lib)
    assert dut.take() == ["m-timestamp-mode-performance", "m-lap-us-40", sl.RESET_BANNER.decode()]  # no m-ready
    return dut


def _outputs_to_inputs(outputs: list[list[int]]) -> list[bytes]:
    """Echo-model inputs whose outputs are these int8 vectors (the rest of the input zero)."""
    return [bytes(((v & 0xFF) ^ 0x55) for v in out) + bytes(INPUT_BYTES - OUTPUT_BYTES) for out in outputs]


def _crafted_outputs(zero_point: int) -> list[list[int]]:
    """Ties, one-step gaps at the top, logits that sum to zero or below, the int8 extremes."""
    rng = np.random.default_rng(3)
    near = [[5] * 3 + [6] + [4] * 12, [6] + [5] * 15, [-128] * 15 + [-127], [127] * 16, [-128] * 16]
    ties = [[9, 2, 9, 9] + [0] * 12, [0] * 10 + [3, 3] + [1] * 4]
    zero_sum = [[zero_point] * 16, [zero_point + d for d in (3, -3) * 8]]  # dequantized logits summing to 0
    negative = [[zero_point - 20 + i for i in range(16)]]
    random = [rng.integers(-128, 128, 16).tolist() for _ in range(20)]
    return near + ties + zero_sum + negative + random


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("scale,zero_point", [("0.0625f", -3), ("0.3f", 7), ("0.00390625f", -128),
                                              ("1e-7f", 0), ("1e-9f", 5), ("123.456f", 100), ("3e12f", -1)])
def test_probabilities_keep_the_int8_order_on_the_pc(tmp_path, scale, zero_point):
    """Over all 256 output values and crafted outputs: the runner's normalise-and-argmax
    gives numpy's argmax of the int8 output (lowest index among equals), never divides by
    zero, and close outputs get more decimals (scales from 1e-9, where expf(-scale) rounds
    to 1, to 3e12, where every class but the top gets 0)."""
    dut = host_dut(tmp_path, f"-DECHO_OUTPUT_SCALE={scale}", f"-DECHO_OUTPUT_ZERO_POINT={zero_point}")
    decimals_seen = set()
    for x in _crafted_inputs() + _outputs_to_inputs(_crafted_outputs(zero_point)):
        output = echo_reference(x)
        values, decimals = check_probabilities(dut.results(x), output, float(np.float32(scale[:-1])))
        decimals_seen.add(decimals)
        normalised = [v / sum(values) for v in values]  # MLPerf Tiny's normalize_probabilities
        assert np.argmax(normalised) == np.argmax(np.frombuffer(output, np.int8))
    if scale in ("0.00390625f", "1e-7f", "1e-9f"):  # one step apart at the top: 3 decimals tie
        assert max(decimals_seen) > MIN_DECIMALS


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("scale,zero_point", [("0.0625f", -3), ("0.3f", 7), ("1e-7f", 0), ("123.456f", 100),
                                              ("3e12f", -1)])
def test_one_output_is_a_score_printed_like_printf_on_the_pc(tmp_path, scale, zero_point):
    """A single output (anomaly detection) is a score, which the runner does not normalise:
    dequantized, "%0.3f" as the reference DUT prints it (correctly rounded, halves to even)."""
    dut = host_dut(tmp_path, "-DECHO_OUTPUT_BYTES=1", f"-DECHO_OUTPUT_SCALE={scale}",
                   f"-DECHO_OUTPUT_ZERO_POINT={zero_point}")
    for value in range(256):
        x = bytes([0, value ^ 0x55]) + bytes(INPUT_BYTES - 2)  # input[0] = -128 would fail the invoke
        assert dut.results(x) == score_line(bytes([value]), float(np.float32(scale[:-1])), zero_point)
