"""Board records: one JSON file per board in boards/, checked on load.

A record is the single source of a board's numbers (CPU, clock, budgets, serial,
counter, PlatformIO environment); project generation and the emulator read it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import OnebitError
from .paths import boards_dir, firmware_dir


RUNTIMES = ("static", "tflm")
# "reference" is the portable kernels; every other variant is a folder of same-named files
# under firmware/kernels/ (the build copies them over the reference ones).
KERNEL_VARIANTS = ("reference", *sorted(d.name for d in (firmware_dir() / "kernels").iterdir()
                                        if d.is_dir() and not d.name.startswith("_")))
DSP_CPUS = ("cortex-m4", "cortex-m7", "cortex-m33")  # cores with the DSP extension
DWT_CPUS = ("cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33")  # cores with DWT->CYCCNT
SERIAL_KINDS = ("usb_cdc", "uart")
# counter source -> the unit it counts in; "dwt" and "ccount" are cycle counters.
COUNTER_SOURCES = {"icount": "instructions", "dwt": "cycles", "ccount": "cycles", "micros": "microseconds"}
_PINNED_PLATFORM = re.compile(r"^[a-z0-9_-]+/[a-z0-9_-]+@\d+\.\d+\.\d+$")
_PINNED_LIB = re.compile(r"^(https://\S+\.git#[0-9a-f]{40}|[\w.-]+/[\w.-]+@\d+\.\d+\.\d+)$")
_USB_ID = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{4})$")
_KEYS = {"id", "name", "emulated", "cpu", "fpu", "float_abi", "clock_hz", "flash_bytes", "ram_bytes", "runtime",
         "kernel_variant", "serial", "counter", "qemu", "platformio", "notes"}


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    emulated: bool
    cpu: str  # GCC -mcpu value ("xtensa-lx6"/"xtensa-lx7" for ESP32 chips)
    fpu: str | None  # GCC -mfpu value, None for soft float
    float_abi: str  # GCC -mfloat-abi value
    clock_hz: int
    flash_bytes: int  # what the board leaves for the model, runtime and app
    ram_bytes: int
    runtime: str  # default runtime: "static" or "tflm"
    kernel_variant: str  # "reference" or a folder under firmware/kernels/
    baud: int
    counter_unit: str  # "instructions" (QEMU -icount), "cycles" (DWT, CCOUNT) or "microseconds"
    icount_shift: int | None  # QEMU -icount shift, emulated boards only
    qemu_machine: str | None
    pio_platform: str  # "qemu" means the local platform in boards/platform-qemu; else "owner/name@x.y.z"
    pio_board: str
    # Real boards only (defaults describe an emulated board):
    counter_source: str = "icount"  # "dwt", "ccount" or "micros" on real boards
    serial_kind: str = "emulated"  # "usb_cdc" or "uart" on real boards
    usb_ids: tuple[tuple[int, int], ...] = ()  # (VID, PID) of the serial port, for port autodetection
    reset_1200bps: bool = False  # whether opening the port at 1200 baud resets it into its bootloader
    pio_framework: str | None = None
    pio_lib_deps: tuple[str, ...] = ()  # pinned: owner/name@x.y.z or a git URL with #<commit>
    pio_lib_ignore: tuple[str, ...] = ()
    pio_build_flags: tuple[str, ...] = ()
    upload_protocol: str | None = None
    notes: str = ""  # where the budget numbers come from

    @property
    def env_name(self) -> str:
        """The PlatformIO environment of the generated project."""
        return self.pio_board if self.emulated else self.id

    @property
    def pio_platform_name(self) -> str:
        """The platform's name as `pio platform list` shows it ("nordicnrf52")."""
        return self.pio_platform.split("@")[0].split("/")[-1]


def _usb_id(text: str) -> tuple[int, int]:
    match = _USB_ID.match(str(text).lower())
    if not match:
        raise ValueError(f"serial.usb_ids entry {text!r} is not VVVV:PPPP in hex")
    return int(match.group(1), 16), int(match.group(2), 16)


def _check(board: Board) -> None:
    """Cross-field rules; ValueError names the field."""
    if board.runtime not in RUNTIMES:
        raise ValueError(f"runtime {board.runtime!r} is not one of {RUNTIMES}")
    if board.kernel_variant not in KERNEL_VARIANTS:
        raise ValueError(f"kernel_variant {board.kernel_variant!r} is not one of {KERNEL_VARIANTS}")
    if board.kernel_variant == "cortex_m_dsp" and board.cpu not in DSP_CPUS:
        raise ValueError(f"kernel_variant cortex_m_dsp needs one of {DSP_CPUS}, not {board.cpu}")
    if min(board.clock_hz, board.flash_bytes, board.ram_bytes, board.baud) <= 0:
        raise ValueError("clock_hz, flash_bytes, ram_bytes and serial.baud must be positive")
    if COUNTER_SOURCES.get(board.counter_source) != board.counter_unit:
        raise ValueError(f"counter source {board.counter_source!r} does not count {board.counter_unit!r} "
                         f"(sources: {COUNTER_SOURCES})")
    if board.emulated:
        if board.counter_source != "icount" or board.icount_shift is None or not board.qemu_machine:
            raise ValueError("an emulated board needs counter.icount_shift and qemu.machine")
        if board.pio_platform != "qemu":
            raise ValueError("an emulated board's platformio.platform must be \"qemu\"")
        return
    if board.counter_source == "icount":
        raise ValueError("a real board needs counter.source (dwt, ccount or micros)")
    if board.counter_source == "dwt" and board.cpu not in DWT_CPUS:
        raise ValueError(f"counter source dwt needs one of {DWT_CPUS}, not {board.cpu}")
    if board.counter_source == "ccount" and not board.cpu.startswith("xtensa"):
        raise ValueError(f"counter source ccount is for Xtensa (ESP32) cores, not {board.cpu}")
    if not _PINNED_PLATFORM.match(board.pio_platform):
        raise ValueError(f"platformio.platform {board.pio_platform!r} must be pinned as owner/name@x.y.z")
    if board.pio_framework != "arduino":
        raise ValueError("platformio.framework must be \"arduino\" (the only HAL for real boards)")
    for dep in board.pio_lib_deps:
        if not _PINNED_LIB.match(dep):
            raise ValueError(f"platformio.lib_deps entry {dep!r} must be pinned (owner/name@x.y.z or a git URL#commit)")
    if not board.pio_lib_deps and board.runtime == "tflm":
        raise ValueError("a tflm board needs its TFLM library in platformio.lib_deps")
    if board.serial_kind not in SERIAL_KINDS:
        raise ValueError(f"serial.kind {board.serial_kind!r} is not one of {SERIAL_KINDS}")
    if not board.usb_ids:
        raise ValueError("serial.usb_ids must list the port's VID:PID for autodetection")
    if not board.upload_protocol:
        raise ValueError("platformio.upload_protocol is required")
    if not board.notes:
        raise ValueError("notes must say where the flash and RAM budgets come from")


def _parse(data: dict) -> Board:
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    serial, counter, pio = data["serial"], data["counter"], data["platformio"]
    emulated = data["emulated"]
    if not isinstance(emulated, bool):
        raise ValueError("emulated must be true or false")
    board = Board(
        id=data["id"],
        name=data["name"],
        emulated=emulated,
        cpu=data["cpu"],
        fpu=data.get("fpu"),
        float_abi=data["float_abi"],
        clock_hz=int(data["clock_hz"]),
        flash_bytes=int(data["flash_bytes"]),
        ram_bytes=int(data["ram_bytes"]),
        runtime=data["runtime"],
        kernel_variant=data["kernel_variant"],
        baud=int(serial["baud"]),
        counter_unit=counter["unit"],
        icount_shift=counter.get("icount_shift"),
        qemu_machine=(data.get("qemu") or {}).get("machine"),
        pio_platform=pio["platform"],
        pio_board=pio["board"],
        counter_source=counter.get("source", "icount" if emulated else ""),
        serial_kind=serial.get("kind", "emulated" if emulated else ""),
        usb_ids=tuple(_usb_id(i) for i in serial.get("usb_ids", [])),
        reset_1200bps=bool(serial.get("reset_1200bps", False)),
        pio_framework=pio.get("framework"),
        pio_lib_deps=tuple(pio.get("lib_deps", [])),
        pio_lib_ignore=tuple(pio.get("lib_ignore", [])),
        pio_build_flags=tuple(pio.get("build_flags", [])),
        upload_protocol=pio.get("upload_protocol"),
        notes=data.get("notes", ""),
    )
    _check(board)
    return board


@lru_cache(maxsize=None)
def all_boards() -> dict[str, Board]:
    boards = {}
    for path in sorted(boards_dir().glob("*.json")):
        try:
            board = _parse(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as exc:
            raise OnebitError(f"board record {path} is invalid ({exc!r}); fix the file") from exc
        if board.id != path.stem:
            raise OnebitError(f"board record {path} has id {board.id!r}; it must match the file name")
        boards[board.id] = board
    return boards


def get_board(board_id: str) -> Board:
    boards = all_boards()
    if board_id not in boards:
        raise OnebitError(
            f"unknown board {board_id!r}; known boards: {', '.join(boards)} (see `mcu-onebit boards`)"
        )
    return boards[board_id]
