"""The EEMBC EnergyRunner / MLPerf Tiny DUT text protocol (docs/energyrunner.md) on the
firmware: the echo test model built for qemu-m4, booted in QEMU, driven by a host written
only from the public protocol (plain text over pyserial, as MLPerf Tiny's runner does:
`command%` out, "\\r\\n"-ended lines back until one says m-ready). Its results are checked
against the same firmware's binary INFER (DeviceLink) and against the echo reference.
Also: a model from the static runtime's generator (its output quantization), and the
same C built for the PC, where the results line is checked over many output scales."""

from __future__ import annotations

import ctypes
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from mcu_onebit import serial_link as sl
from mcu_onebit.boards import get_board
from mcu_onebit.emulator import start_emulator
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir
from mcu_onebit.project import build_project, generate_project
from test_emulated_board import ECHO_MODEL, INPUT_BYTES, OUTPUT_BYTES, echo_reference, needs_toolchain

BOARD = get_board("qemu-m4")
ECHO_SCALE = float(re.search(r"#define ECHO_OUTPUT_SCALE (\S+)f", ECHO_MODEL.read_text()).group(1))
ECHO_ZERO_POINT = int(re.search(r"#define ECHO_OUTPUT_ZERO_POINT (\S+)", ECHO_MODEL.read_text()).group(1))
RUNNER_CHUNK = 31  # bytes per `db` command in MLPerf Tiny's runner (device_under_test.py)


def results_line(output: bytes, scale: float, zero_point: int) -> str:
    """The reference DUT's results line: (q - zero_point) * scale in float32, "%0.3f"."""
    q = np.frombuffer(output, np.int8).astype(np.int32)
    values = (q - zero_point).astype(np.float32) * np.float32(scale)
    return "m-results-[" + ",".join("%0.3f" % float(v) for v in values) + "]"


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
def test_boot_banner_and_identification(host):
    assert host.read_line() == "m-timestamp-mode-performance"
    assert re.fullmatch(r"m-lap-us-[0-9]+", host.read_line())
    assert host.read_reply() == ["m-init-done"]

    name = host.send("name")
    assert len(name) == 1 and re.match(r"^m-(name)-dut-\[([^]]+)]$", name[0])  # the runner's pattern
    assert name == [f"m-name-dut-[mcu-onebit-{BOARD.id}]"]
    assert host.send("profile") == ["m-profile-[ULPMark for tinyML Firmware V0.0.1]", "m-model-[ic01]"]
    assert re.fullmatch(r"m-lap-us-[0-9]+", *host.send("timestamp"))
    help_text = host.send("help")
    assert help_text[0] == "ULPMark for tinyML Firmware V0.0.1"
    assert any(line.startswith("infer N") for line in help_text)
    assert host.send("") == []  # a lone '%' flushes a half-sent command


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
            expected = results_line(b.output, ECHO_SCALE, ECHO_ZERO_POINT)
            assert results == expected == results_line(echo_reference(x), ECHO_SCALE, ECHO_ZERO_POINT)
            assert host.send("results") == [expected]

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
        assert host.send("name") == [f"m-name-dut-[mcu-onebit-{BOARD.id}]"]
        host.load(x2)
        assert host.infer(1, 0)[1] == results_line(echo_reference(x2), ECHO_SCALE, ECHO_ZERO_POINT)

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
        assert host.infer(1, 0)[1] == results_line(echo_reference(x1), ECHO_SCALE, ECHO_ZERO_POINT)


@needs_toolchain
def test_bad_commands_answer_an_error_and_m_ready(emulator, host):
    host.read_reply()  # boot banner
    errors = {
        "foo": "e-[Unknown command: foo]",
        "db": "e-[Command 'db' requires a subcommand]",
        "db 00ff": "e-[Command 'db' needs 'db load N' first]",
        "db load": "e-[Command 'db load' requires the # of bytes]",
        "db load 0": "e-[Command 'db load' must be >0 bytes: 0]",
        "db load x1": "e-[Command 'db load' must be >0 bytes: x1]",
        "db load 999999": "e-[Supplied buffer size 999999 exceeds maximum of 16384]",
        "infer": f"e-[Input db has 0 bytes, expected {INPUT_BYTES}]",
        "infer 0": "e-[Inference iterations must be >0: 0]",
        "infer 1 -1": "e-[Inference warmup must be >=0: -1]",
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
    assert host.infer(3, 1)[1] == results_line(echo_reference(x), ECHO_SCALE, ECHO_ZERO_POINT)
    host.port.close()
    with sl.DeviceLink(emulator.url) as link:  # and the binary protocol still answers
        assert link.infer(x).output == echo_reference(x)


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
            host.read_reply()  # boot banner
            for x in inputs:
                host.load(x)
                expected = tb.run_reference(model, np.frombuffer(x, np.int8).reshape(1, 4, 4, 4)).tobytes()
                assert host.infer(1, 0)[1] == results_line(expected, output_q[0], output_q[1])
        finally:
            port.close()


# --- the same C on the PC: the results line for many output scales ---------------------

# A stand-in board: output collected in memory, a counter that advances 1000 per reading.
HOST_HAL = r"""
#include <string.h>
#include "hal.h"
static uint8_t sent[1 << 16];
static size_t sent_length;
static uint64_t ticks;
void ob_hal_write(const uint8_t *data, size_t length) {
  if (sent_length + length <= sizeof sent) { memcpy(sent + sent_length, data, length); sent_length += length; }
}
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


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("scale,zero_point", [("0.0625f", -3), ("0.3f", 7), ("0.00390625f", -128),
                                              ("1e-7f", 0), ("123.456f", 100), ("3e12f", -1)])
def test_results_line_rounds_like_printf_on_the_pc(tmp_path, scale, zero_point):
    (tmp_path / "hal_host.c").write_text(HOST_HAL)
    fw = firmware_dir()
    lib = ctypes.CDLL(str(build_shared_library(
        [fw / "app" / "energyrunner.c", ECHO_MODEL, fw / "kernels" / "ob_common.c", tmp_path / "hal_host.c"],
        [fw / "app", fw / "kernels"], tmp_path / "libenergyrunner.so",
        [f"-DECHO_OUTPUT_SCALE={scale}", f"-DECHO_OUTPUT_ZERO_POINT={zero_point}", "-DF_CPU=25000000"])))
    dut = HostDut(lib)
    assert dut.take() == ["m-timestamp-mode-performance", "m-lap-us-40", "m-init-done", "m-ready"]
    for x in _crafted_inputs():  # all 256 output values
        assert dut.send(f"db load {len(x)}") == [f"m-[Expecting {len(x)} bytes]"]
        assert [dut.send("db " + x[i : i + RUNNER_CHUNK].hex()) for i in range(0, len(x), RUNNER_CHUNK)] == [
            [], [], ["m-load-done"]]
        lines = dut.send("infer 1 0")
        # Two counter readings 1000 instructions apart at 25 MHz: 40 us.
        assert lines[3:5] == [f"m-lap-us-{int(lines[3][9:])}", f"m-lap-us-{int(lines[3][9:]) + 40}"]
        assert lines[-1] == results_line(echo_reference(x), float(np.float32(scale[:-1])), zero_point)
