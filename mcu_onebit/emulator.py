"""Run firmware on an emulated board: QEMU with its UART0 on a TCP port or a pty.

Instructions are counted deterministically (`-icount shift=S,align=off,sleep=off`, S
from the board record). With `-serial tcp:...,server=on,wait=on` QEMU starts the guest
only when the first client connects, so nothing the firmware sends is lost; after a
client disconnects the guest keeps running and QEMU accepts the next client on the
same port (identify, then eval, each with its own connection).

That first client gets everything the firmware printed at boot: its banner (with
`-serial pty`, whoever opens the pty while the guest boots does). A host of the
EnergyRunner text protocol (MLPerf Tiny's runner) reads lines up to `m-ready` as the
reply to its first command, so a banner waiting for it would shift every reply. So the
emulator is the first client itself: it sends an empty command (`%`, answered with
`m-ready` alone), reads through that `m-ready`, and leaves; the board a host then opens
has printed nothing unasked (QEMU drops what the guest prints while no client is
connected). `keep_boot_banner` leaves the banner to the first client instead, as a host
attached to a board that restarts sees it.

An emulator started for `flash` outlives the command: it runs in its own session and
is recorded in <project>/.emulator.json, where find_running/stop_running find it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .boards import Board
from .cheader import read_defines
from .errors import OnebitError
from .modelfile import write_text_atomic
from .project import EMULATOR_LOG_FILE, EMULATOR_STATE_FILE

_LISTENING = "waiting for connection"  # QEMU's stderr once the serial port listens
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_READY = read_defines("app/energyrunner.h")["OB_ER_READY"].encode("ascii") + b"\r\n"  # ends every text reply
_START_ATTEMPTS = 10  # QEMU launches before giving up on a port that is in use
_PTY = re.compile(r"char device redirected to (\S+)")
# Expected: the firmware stops its timer while it waits for the host (hal_qemu.c).
_EXPECTED_WARNING = "icount sleep disabled and no active timers"


@dataclass
class Emulator:
    pid: int
    url: str  # pyserial URL of the board's UART0
    elf: Path
    state_file: Path | None = None  # set when recorded for find_running
    _process: subprocess.Popen | None = field(default=None, repr=False)

    def running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return _is_qemu(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        """End QEMU (SIGTERM, then SIGKILL) and forget its record."""
        if self.running():
            if self._process is not None:
                self._process.terminate()
                try:
                    self._process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            else:
                _signal_until_gone(self.pid, timeout)
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def qemu_command(elf: Path, board: Board, serial_spec: str) -> list[str]:
    if not board.emulated or board.qemu_machine is None or board.icount_shift is None:
        raise OnebitError(f"board {board.id} is not an emulated board; flash it with PlatformIO instead")
    return [
        "qemu-system-arm",
        "-M", board.qemu_machine,
        "-display", "none",
        "-monitor", "none",
        "-semihosting-config", "enable=on,target=native",
        "-icount", f"shift={board.icount_shift},align=off,sleep=off",
        "-serial", serial_spec,
        "-kernel", str(elf),
    ]  # fmt: skip


def start_emulator(
    elf: Path,
    board: Board,
    tcp_port: int | None = None,
    *,
    record_in: Path | None = None,
    timeout: float = 10.0,
    keep_boot_banner: bool = False,
) -> Emulator:
    """Boot `elf` in QEMU with UART0 on socket://127.0.0.1:PORT (a free port when None).

    Returns once the firmware has booted and answered (its banner taken), or with
    keep_boot_banner once QEMU listens: the guest then boots for the first client, which
    gets the banner. With record_in (a project folder) QEMU is detached from this process
    and recorded there for find_running/stop_running.
    """
    elf = Path(elf).resolve()
    if not elf.is_file():
        raise OnebitError(f"firmware {elf} does not exist; build the project first")
    deadline = time.monotonic() + timeout
    for attempt in range(_START_ATTEMPTS):
        port = tcp_port or _free_port()
        emulator, log = _launch(elf, board, port, record_in, timeout)
        if emulator is not None:
            if not keep_boot_banner:
                try:
                    _take_boot_output(emulator.url, max(deadline - time.monotonic(), 1.0))
                except OnebitError:
                    emulator.stop()
                    raise
            return emulator
        if "in use" not in log or time.monotonic() > deadline:
            break
        # A free port can be taken by someone else before QEMU binds it: try another.
        # A given port may still be held by the QEMU just stopped (a restart): wait for it.
        if tcp_port is not None:
            time.sleep(0.05 * (attempt + 1))
    raise OnebitError(f"QEMU did not start for {elf}: {log.strip() or 'no output'}")


def _launch(elf: Path, board: Board, port: int, record_in: Path | None, timeout: float) -> tuple[Emulator | None, str]:
    command = qemu_command(elf, board, f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on")
    if record_in is not None:
        log_file = open(Path(record_in) / EMULATOR_LOG_FILE, "w+b")
    else:
        log_file = tempfile.TemporaryFile()
    with log_file:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=record_in is not None,
            )
        except FileNotFoundError as exc:
            raise OnebitError("qemu-system-arm is not installed; install it (Debian: apt-get install qemu-system-arm)") from exc
        emulator = Emulator(pid=process.pid, url=f"socket://127.0.0.1:{port}", elf=elf, _process=process)
        if record_in is not None:
            # Recorded before anything can fail: `emulate --stop` finds this QEMU even
            # when the command that started it is killed while it boots.
            emulator.state_file = Path(record_in) / EMULATOR_STATE_FILE
            write_text_atomic(emulator.state_file, json.dumps({"pid": emulator.pid, "url": emulator.url,
                                                               "elf": str(elf)}) + "\n")
        deadline = time.monotonic() + timeout
        while True:
            # pread: QEMU shares the file offset, reading at 0 leaves it alone.
            log = os.pread(log_file.fileno(), 65536, 0).decode("utf-8", "replace")
            if _LISTENING in log:
                return emulator, log
            if process.poll() is not None:
                emulator.stop()
                return None, log
            if time.monotonic() > deadline:
                emulator.stop()
                raise OnebitError(f"QEMU did not open its serial port within {timeout:g} s: {log.strip() or 'no output'}")
            time.sleep(0.01)


def find_running(project_dir: Path) -> Emulator | None:
    """The emulator recorded in project_dir, if it still runs (a stale record is removed)."""
    state_file = Path(project_dir) / EMULATOR_STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        emulator = Emulator(pid=int(state["pid"]), url=state["url"], elf=Path(state["elf"]), state_file=state_file)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        state_file.unlink(missing_ok=True)
        return None
    if not emulator.running():
        state_file.unlink(missing_ok=True)
        return None
    return emulator


def stop_running(project_dir: Path) -> bool:
    """Stop the emulator recorded in project_dir; False if none was running."""
    emulator = find_running(project_dir)
    if emulator is None:
        return False
    emulator.stop()
    return True


def run_foreground(elf: Path, board: Board, tcp_port: int | None = None, pty: bool = False) -> None:
    """Run QEMU in this terminal until Ctrl-C, SIGTERM or SIGHUP, which stop QEMU too (a
    supervisor's `kill`, a closed terminal must not leave it holding the port), as does
    this process dying of SIGKILL (QEMU gets SIGTERM then); print its serial URL. QEMU
    ending on its own with a failure (a port in use, say) is an OnebitError with QEMU's
    last line."""
    elf = Path(elf).resolve()
    port = None if pty else tcp_port or _free_port()
    serial_spec = "pty" if pty else f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"
    command = qemu_command(elf, board, serial_spec)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, preexec_fn=_die_with_parent(os.getpid()))
    except FileNotFoundError as exc:
        raise OnebitError("qemu-system-arm is not installed; install it (Debian: apt-get install qemu-system-arm)") from exc
    stopping = (signal.SIGTERM, signal.SIGHUP)
    previous = ({signum: signal.signal(signum, _interrupt) for signum in stopping}
                if threading.current_thread() is threading.main_thread() else {})
    last = ""
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = _PTY.search(line)
            if match:
                _take_boot_output(match.group(1), 10.0)
                print(f"serial: {match.group(1)} (Ctrl-C stops the emulator)", flush=True)
            elif _LISTENING in line:
                _take_boot_output(f"socket://127.0.0.1:{port}", 10.0)
                print(f"serial: socket://127.0.0.1:{port} (Ctrl-C stops the emulator)", flush=True)
            elif _EXPECTED_WARNING not in line:
                last = line.strip() or last
                print(line, end="", flush=True)
        status = process.wait()
    except KeyboardInterrupt:
        return
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:
            process.terminate()
            process.wait()
    if status != 0:
        raise OnebitError(f"QEMU stopped with exit status {status}: {last or 'no message'}"
                          + (f" (is TCP port {port} in use? pass another --tcp)" if port and "serial" in last else ""))


def _take_boot_output(url: str, timeout: float) -> None:
    """Be the board's first client (over TCP, the one QEMU starts the guest for) and take
    whatever the firmware printed since boot: send an empty command and read through the
    m-ready that answers it, then leave."""
    import serial

    deadline = time.monotonic() + timeout
    seen = b""
    try:
        with serial.serial_for_url(url, timeout=0.05) as port:
            port.write(b"%")
            while _READY not in seen:
                if time.monotonic() > deadline:
                    raise OnebitError(f"the firmware did not answer on {url} within {timeout:g} s "
                                      f"(got {seen[-48:]!r}); is it an mcu-onebit firmware?")
                seen = (seen + port.read(max(1, port.in_waiting)))[-64:]
    except serial.SerialException as exc:
        raise OnebitError(f"the emulator's serial port {url} failed while the firmware booted ({exc})") from None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _die_with_parent(parent: int):
    """preexec_fn: the child gets SIGTERM when `parent` dies, even of SIGKILL (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took hold
            os._exit(1)

    return arm


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _is_qemu(pid: int) -> bool:
    """Whether pid is a live QEMU (not a zombie, not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system-arm" in cmdline


def _signal_until_gone(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_qemu(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
    except ProcessLookupError:
        pass  # already gone
