"""`mcu-onebit flash` and `emulate`: build the project, then upload it or boot it in QEMU."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from .boards import Board, get_board
from .convert import resolve_project
from .emulator import find_running, run_foreground, start_emulator, stop_running
from .errors import OnebitError
from .platformio_setup import pio_env, pio_executable, platform_installed
from .converters.tflm_runtime import library_kernels
from .project import build_project, firmware_size
from .tflm_tree import locate, write_build_record

REGISTRY = ("api.registry.platformio.org", 443)
REGISTRY_TIMEOUT_S = 3.0
UPLOAD_TIMEOUT_S = 1800


def _point_at_tflm(project: Path, board: Board, report: dict, tflm: Path | None) -> None:
    """An emulated board's TFLM project builds the user's TFLM tree (PlatformIO has no TFLM
    for bare metal): checked first, then recorded in the project for its builder."""
    tree = locate(tflm, f"{project} (the TFLM runtime on the emulated {board.id})")
    kernels = report.get("tflm_kernels")
    if not isinstance(kernels, dict):
        raise OnebitError(f"{project.parent / 'report.json'} says nothing of its TFLM kernels; convert the model again")
    write_build_record(project, tree, library_kernels(kernels))


def _build(project: Path | None, log, tflm: Path | None = None) -> tuple[Path, Board, Path]:
    project, report = resolve_project(project)
    board = get_board(report["board"])
    if board.emulated and report.get("runtime") == "tflm":
        _point_at_tflm(project, board, report, tflm)
    log(f"building {project} for {board.id} with PlatformIO")
    elf = build_project(project, board)
    size = firmware_size(elf)
    log(f"built {elf}: flash {size.flash_bytes:,} B, static RAM {size.ram_bytes:,} B")
    return project, board, elf


def registry_reachable(timeout: float = REGISTRY_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the PlatformIO registry opens within `timeout` seconds."""
    try:
        with socket.create_connection(REGISTRY, timeout=timeout):
            return True
    except OSError:
        return False


def check_platform_available(board: Board) -> None:
    """Fail within seconds, not after PlatformIO's minute of retries, when the board's
    platform is neither installed nor installable."""
    if platform_installed(board.pio_platform_name) or registry_reachable():
        return
    raise OnebitError(
        f"PlatformIO platform {board.pio_platform} (for {board.id}) is not installed and the PlatformIO "
        f"registry ({REGISTRY[0]}) cannot be reached; the first build of a real board needs internet once "
        "to install the platform, the Arduino framework, its toolchain and the TFLM library"
    )


def find_port(board: Board) -> str:
    """The one serial port whose USB VID:PID is the board's; OnebitError when none or several."""
    from serial.tools import list_ports

    ids = set(board.usb_ids)
    matches = sorted(p.device for p in list_ports.comports() if (p.vid, p.pid) in ids)
    wanted = ", ".join(f"{vid:04x}:{pid:04x}" for vid, pid in board.usb_ids)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise OnebitError(f"no serial port has the USB id of the {board.name} ({wanted}); connect the board or pass --port")
    raise OnebitError(f"several ports look like a {board.name} ({', '.join(matches)}); pass --port")


def upload(project: Path, board: Board, port: str | None, log=print) -> str:
    """`pio run -t upload` for a real board; returns the serial port the board is on."""
    check_platform_available(board)
    port = port or find_port(board)
    command = [pio_executable(), "run", "--project-dir", str(project), "--environment", board.env_name,
               "--target", "upload", "--upload-port", port]
    log(f"building and uploading {project} to {board.id} on {port} with PlatformIO")
    try:
        result = subprocess.run(command, env=pio_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=UPLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise OnebitError(f"`pio run -t upload` in {project} did not finish within {exc.timeout:.0f} s") from exc
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-30:])
        raise OnebitError(f"uploading {project} failed (`pio run -t upload` exit {result.returncode}); its log ends:\n{tail}")
    return port


def flash(project: Path | None, port: str | None = None, log=print, tflm: Path | None = None) -> str:
    """Real board: build and upload through PlatformIO. Emulated board: build, then boot it
    in the background (replacing a running one); a TFLM project builds the TFLM tree at
    `tflm` (mcu_onebit/tflm_tree.py). Real boards get TFLM from their lib_deps."""
    resolved, report = resolve_project(project)
    board = get_board(report["board"])
    if not board.emulated:
        port = upload(resolved, board, port, log)
        return f"{board.id} flashed; its serial port is {port} (next: `mcu-onebit eval --port {port}`)"
    if port:
        raise OnebitError(f"--port is for real boards; {board.id} is emulated and gets a TCP port of its own")
    project, board, elf = _build(resolved, log, tflm)
    stop_running(project)
    emulator = start_emulator(elf, board, record_in=project)
    return f"{board.id} running in QEMU (pid {emulator.pid}), serial {emulator.url}; stop it with `mcu-onebit emulate --stop`"


def emulate(project: Path | None, tcp_port: int | None = None, pty: bool = False, stop: bool = False, log=print,
            tflm: Path | None = None) -> None:
    """Run the emulated board in the foreground (or stop the background one)."""
    if stop:
        project, _ = resolve_project(project)
        log("stopped the emulator" if stop_running(project) else "no emulator was running for this project")
        return
    resolved, report = resolve_project(project)
    board = get_board(report["board"])
    if not board.emulated:
        raise OnebitError(f"{board.id} is a real board; `emulate` runs emulated boards only (flash it with "
                          "`mcu-onebit flash`, or convert for qemu-m3/m4/m7; see `mcu-onebit boards`)")
    if find_running(resolved):
        raise OnebitError("an emulator already runs this project in the background; stop it with `mcu-onebit emulate --stop`")
    if tcp_port is not None and not 0 < tcp_port < 65536:
        raise OnebitError(f"--tcp {tcp_port} is not a TCP port; give 1..65535")
    project, board, elf = _build(resolved, log, tflm)
    run_foreground(elf, board, tcp_port=tcp_port, pty=pty)
