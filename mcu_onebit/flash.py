"""`mcu-onebit flash` and `emulate`: build the project, then upload it or boot it in QEMU."""

from __future__ import annotations

from pathlib import Path

from .boards import Board, get_board
from .convert import resolve_project
from .emulator import find_running, run_foreground, start_emulator, stop_running
from .errors import OnebitError
from .project import build_project, firmware_size


def _build(project: Path | None, log) -> tuple[Path, Board, Path]:
    project, report = resolve_project(project)
    board = get_board(report["board"])
    log(f"building {project} for {board.id} with PlatformIO")
    elf = build_project(project, board)
    size = firmware_size(elf)
    log(f"built {elf}: flash {size.flash_bytes:,} B, static RAM {size.ram_bytes:,} B")
    return project, board, elf


def flash(project: Path | None, port: str | None = None, log=print) -> str:
    """Build; on an emulated board boot it in the background (replacing a running one)."""
    project, board, elf = _build(project, log)
    if not board.emulated:
        raise OnebitError(f"uploading to {board.id} is not supported by this version yet; only emulated boards")
    if port:
        raise OnebitError(f"--port is for real boards; {board.id} is emulated and gets a TCP port of its own")
    stop_running(project)
    emulator = start_emulator(elf, board, record_in=project)
    return f"{board.id} running in QEMU (pid {emulator.pid}), serial {emulator.url}; stop it with `mcu-onebit emulate --stop`"


def emulate(project: Path | None, tcp_port: int | None = None, pty: bool = False, stop: bool = False, log=print) -> None:
    """Run the emulated board in the foreground (or stop the background one)."""
    if stop:
        project, _ = resolve_project(project)
        log("stopped the emulator" if stop_running(project) else "no emulator was running for this project")
        return
    project, board, elf = _build(project, log)
    if not board.emulated:
        raise OnebitError(f"{board.id} is a real board; `emulate` runs emulated boards only (see `mcu-onebit boards`)")
    if find_running(project):
        raise OnebitError(f"an emulator already runs this project in the background; stop it with `mcu-onebit emulate --stop`")
    run_foreground(elf, board, tcp_port=tcp_port, pty=pty)
