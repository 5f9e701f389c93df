"""Board records: one JSON file per board in boards/, checked on load.

A record is the single source of a board's numbers (CPU, clock, budgets, serial,
counter, PlatformIO environment); project generation and the emulator read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from .errors import OnebitError
from .paths import boards_dir


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    emulated: bool
    cpu: str  # GCC -mcpu value
    fpu: str | None  # GCC -mfpu value, None for soft float
    float_abi: str  # GCC -mfloat-abi value
    clock_hz: int
    flash_bytes: int  # what the board leaves for the model, runtime and app
    ram_bytes: int
    runtime: str  # default runtime: "static" or "tflm"
    kernel_variant: str
    baud: int
    counter_unit: str  # "instructions" (QEMU -icount) or "cycles" (DWT)
    icount_shift: int | None  # QEMU -icount shift, emulated boards only
    qemu_machine: str | None
    pio_platform: str  # "qemu" means the local platform in boards/platform-qemu
    pio_board: str


def _parse(data: dict) -> Board:
    return Board(
        id=data["id"],
        name=data["name"],
        emulated=bool(data["emulated"]),
        cpu=data["cpu"],
        fpu=data.get("fpu"),
        float_abi=data["float_abi"],
        clock_hz=int(data["clock_hz"]),
        flash_bytes=int(data["flash_bytes"]),
        ram_bytes=int(data["ram_bytes"]),
        runtime=data["runtime"],
        kernel_variant=data["kernel_variant"],
        baud=int(data["serial"]["baud"]),
        counter_unit=data["counter"]["unit"],
        icount_shift=data["counter"].get("icount_shift"),
        qemu_machine=(data.get("qemu") or {}).get("machine"),
        pio_platform=data["platformio"]["platform"],
        pio_board=data["platformio"]["board"],
    )


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
