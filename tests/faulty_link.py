"""A TCP proxy between the host and an emulated board's UART that damages the line the way
real serial links do: independent drops and bit flips, bursts, duplicated and reordered
chunks, the port closing under the host, and the board restarting. Every chunk each
way is recorded (`streams`, `dump`) so that a failing run can be read byte by byte."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mcu_onebit.serial_link import RESET_BANNER


@dataclass(frozen=True)
class Damage:
    """What the line does to the bytes, each way. Rates are per byte unless said."""

    drop: float = 0.0  # the byte is lost
    flip: float = 0.0  # one bit of the byte is inverted
    burst: float = 0.0  # a burst starts here: 1-64 bytes lost, or replaced by noise (half each)
    duplicate: float = 0.0  # per chunk: the chunk arrives twice
    reorder: float = 0.0  # per chunk: two of its bytes swap places

    def __str__(self) -> str:
        return ", ".join(f"{name} {value:g}" for name, value in vars(self).items() if value) or "none"


class _Line:
    """One direction of the line: the damage model with its own random stream and the
    state of a burst that spans chunks."""

    def __init__(self, damage: Damage, rng: random.Random) -> None:
        self.damage = damage
        self.rng = rng
        self.faults = 0
        self._burst_left = 0
        self._burst_drops = False

    def apply(self, data: bytes) -> bytes:
        d, rng = self.damage, self.rng
        out = bytearray()
        for byte in data:
            if self._burst_left == 0 and d.burst and rng.random() < d.burst:
                self._burst_left, self._burst_drops = rng.randint(1, 64), rng.random() < 0.5
                self.faults += 1
            if self._burst_left:
                self._burst_left -= 1
                if not self._burst_drops:
                    out.append(rng.randrange(256))
                continue
            r = rng.random()
            if r < d.drop:
                self.faults += 1
                continue
            if r < d.drop + d.flip:
                self.faults += 1
                byte ^= 1 << rng.randrange(8)
            out.append(byte)
        if len(out) >= 2 and d.reorder and rng.random() < d.reorder:
            i = rng.randrange(len(out) - 1)
            j = rng.randrange(i + 1, min(len(out), i + 9))  # within 8 bytes, as a FIFO mix-up would
            out[i], out[j] = out[j], out[i]
            self.faults += 1
        if out and d.duplicate and rng.random() < d.duplicate:
            out = out + out
            self.faults += 1
        return bytes(out)


class FaultyProxy:
    """Forwards the host's connections to a board's TCP port through a damaged line.

    When the board's side closes (the board restarted), the proxy connects to the same
    port again and keeps the host's connection, as a board reset looks through a USB
    serial adapter. When the host's side closes, the proxy accepts the host's next
    connection and keeps the board's.

    With `restart`, the proxy restarts the board itself once `restart_when()` holds,
    before forwarding the board's next bytes: the run cannot finish without them, so
    the restart lands mid-run. The new board's boot banner passes undamaged, so that the
    link must see the reset (with a damaged banner it may see only silence, which is
    right too). With `close_when`, the proxy closes the host's connection once that
    holds (the port vanishing under the host). An error while restarting is kept in
    `error`."""

    def __init__(self, upstream_port: int, damage: Damage = Damage(), seed: int = 1,
                 restart: Callable[[], None] | None = None, restart_when: Callable[[], bool] | None = None,
                 close_when: Callable[[], bool] | None = None) -> None:
        self.upstream_port = upstream_port
        self.damage = damage
        self.restarts = 0
        self.closes = 0
        self.reconnects = 0  # connections to the board after the first
        self.error: BaseException | None = None
        self.streams: list[tuple[float, str, bytes, bytes]] = []  # (time, "host>board"|"board>host", sent, delivered)
        self._to_board = _Line(damage, random.Random(f"{seed}>"))
        self._to_host = _Line(damage, random.Random(f"{seed}<"))
        self._restart = restart
        self._restart_when = restart_when
        self._close_when = close_when
        self._banner_pending = False
        self._start = time.monotonic()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self._up: socket.socket | None = None
        self._down: socket.socket | None = None
        self._connected = threading.Event()
        self._closed = False
        threading.Thread(target=self._host_to_board, daemon=True).start()
        threading.Thread(target=self._board_to_host, daemon=True).start()

    @property
    def faults(self) -> int:
        return self._to_board.faults + self._to_host.faults

    def dump(self, path: Path) -> None:
        """The recorded chunks, one JSON line each (bytes in hex)."""
        with open(path, "w") as out:
            for at, direction, sent, delivered in list(self.streams):
                out.write(json.dumps({"t": round(at, 4), "dir": direction, "sent": sent.hex(),
                                      "delivered": delivered.hex()}) + "\n")

    def close(self) -> None:
        self._closed = True
        self._connected.set()
        for sock in (self._down, self._up, self.server):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    # --- the two directions ----------------------------------------------------------

    def _record(self, direction: str, sent: bytes, delivered: bytes) -> None:
        self.streams.append((time.monotonic() - self._start, direction, sent, delivered))

    def _host_to_board(self) -> None:
        """Accepts the host (again after it left), and forwards its bytes."""
        while not self._closed:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            self._down = down
            if self._up is None:
                self._up = self._connect_up()
            self._connected.set()
            while not self._closed:
                try:
                    data = down.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    break  # the host left: wait for its next connection
                delivered = self._to_board.apply(data)
                self._record("host>board", data, delivered)
                up = self._up
                if up is None:
                    continue  # the board is down: bytes are lost, as on a real line
                try:
                    up.sendall(delivered)
                except OSError:
                    pass
            down.close()

    def _board_to_host(self) -> None:
        self._connected.wait()
        while not self._closed:
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
            if self._close_when and not self.closes and self._close_when():
                self.closes += 1
                self._close_host()
                continue  # bytes for a host that is gone are lost
            if self._banner_pending:  # the new board's boot banner passes undamaged
                self._banner_pending = RESET_BANNER not in data
                delivered = data
            else:
                delivered = self._to_host.apply(data)
            self._record("board>host", data, delivered)
            try:
                self._down.sendall(delivered)
            except OSError:
                pass  # the host is reconnecting: the bytes are lost

    def _close_host(self) -> None:
        down = self._down
        try:
            down.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _connect_up(self) -> socket.socket | None:
        while not self._closed:
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
                up.settimeout(None)
                return up
            except OSError:
                time.sleep(0.02)
        return None

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
