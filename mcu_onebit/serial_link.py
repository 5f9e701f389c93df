"""Host side of the serial protocol (docs/serial_protocol.md; constants: firmware/app/protocol.h).

    with DeviceLink("socket://127.0.0.1:4444") as link:   # or /dev/ttyACM0, a pty path
        identity = link.identify()
        result = link.infer(input_bytes)                   # result.output, result.count
        for key, result in link.infer_stream(items):       # pipelined: (key, input bytes) in
            ...                                            # (key, InferResult) out, in any order

Every request carries a fresh sequence number and a reply counts only if it echoes the
sequence number of a request still waiting for one; anything else (late replies to an
abandoned attempt, bytes that are not frames) is ignored. INFER is a pure function of
its input, so sending a request again is always safe. Failures are classified:

- noise: a damaged reply (CRC, or a frame cut short: the line went idle mid-frame) or
  the device's report that our request was damaged: the request is sent again at once;
- silence: nothing frame-like within the attempt's timeout: the request is sent again
  after zero filler bytes (they complete whatever partial frame the device may be
  stuck in), with a longer timeout each time (backoff); once the device has been silent
  for `timeout` seconds in all, the link gives up;
- a device reset (two silent attempts in a row, the port closing and reopening, or the
  boot banner `m-init-done` among the bytes): the link identifies the device again before
  sending anything else and stops if it now runs another model.
"""

from __future__ import annotations

import binascii
import json
import struct
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Hashable

import serial

from .cheader import read_defines
from .errors import OnebitError

_P = read_defines("app/protocol.h")
PROTOCOL_VERSION = _P["OB_PROTO_VERSION"]
SYNC = bytes([_P["OB_PROTO_SYNC0"], _P["OB_PROTO_SYNC1"]])
HEADER_BYTES = _P["OB_PROTO_HEADER_BYTES"]
CRC_BYTES = _P["OB_PROTO_CRC_BYTES"]
CRC_INIT = _P["OB_PROTO_CRC_INIT"]
IDENTIFY = _P["OB_PROTO_IDENTIFY"]
IDENTIFY_SLICE = _P["OB_PROTO_IDENTIFY_SLICE"]
IDENTIFY_QUERY_BYTES = _P["OB_PROTO_IDENTIFY_QUERY_BYTES"]
INFER = _P["OB_PROTO_INFER"]
RESPONSE = _P["OB_PROTO_RESPONSE"]
ERROR = _P["OB_PROTO_ERROR"]
ERR_CRC = _P["OB_PROTO_ERR_CRC"]
ERR_LENGTH = _P["OB_PROTO_ERR_LENGTH"]
ERROR_NAMES = {
    _P["OB_PROTO_ERR_CRC"]: "CRC mismatch",
    _P["OB_PROTO_ERR_LENGTH"]: "bad length",
    _P["OB_PROTO_ERR_UNKNOWN_TYPE"]: "unknown request type",
    _P["OB_PROTO_ERR_INVOKE"]: "inference failed",
}
RESPONSE_TYPES = frozenset({IDENTIFY | RESPONSE, INFER | RESPONSE, ERROR})
# The last line of the firmware's boot banner (EnergyRunner text). Not m-ready, which ends
# every EnergyRunner reply: a stray '%' in link noise makes the firmware answer with one.
RESET_BANNER = read_defines("app/energyrunner.h")["OB_ER_BOOT_DONE"].encode("ascii")
_REQUEST_NAMES = {IDENTIFY: "IDENTIFY", INFER: "INFER"}
_MAX_PAYLOAD = 0xFFFF
_POLL_S = 0.02  # serial read timeout; deadlines are checked between reads
PORT_APPEAR_S = 5.0  # how long a missing device path (/dev/ttyACM0) may take to appear
_SLOWEST_LINK_BPS = 5000  # bytes/s: host->device of QEMU (10-30 KiB/s) and 115200 baud, with margin
_RESETS_PER_REQUEST = 5  # a board that restarts on one input every time would loop forever
PAD = b"\x00" * 4  # sent after every request: completes a request that lost up to 4 bytes
_MAX_IDLE_GAP_S = 0.5  # idle_gap grows to this on a line that pauses inside good frames
_ABANDONED_KEPT = 64  # earlier attempts whose late replies still count (of 256 sequence numbers)
_DEFAULT_MAX_PAYLOAD = 16384  # the firmware's OB_APP_MAX_PAYLOAD default, until identify tells


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, CRC_INIT)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes
    at: int = field(default=-1, compare=False)  # stream position of its sync pair (FrameDecoder)

    @property
    def is_error(self) -> bool:
        return self.type == ERROR

    @property
    def error_code(self) -> int:
        return self.payload[0] if self.is_error and self.payload else 0

    @property
    def error_message(self) -> str:
        return self.payload[1:].decode("utf-8", "replace") if self.is_error else ""


def encode_frame(frame_type: int, seq: int, payload: bytes = b"") -> bytes:
    if len(payload) > _MAX_PAYLOAD:
        raise OnebitError(f"payload of {len(payload)} bytes exceeds the protocol's {_MAX_PAYLOAD}; use a smaller input")
    body = struct.pack("<BBH", frame_type, seq & 0xFF, len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


class FrameDecoder:
    """Turns a byte stream into frames.

    Every sync pair starts a candidate frame. A complete candidate with a good CRC is a
    frame; one with a bad CRC is dropped (counted in `dropped`) and the search resumes
    one byte after its sync pair. A candidate still waiting for bytes does not block a
    later complete frame: when one follows, the incomplete candidate was noise. With
    `types`, candidates of other types are not frames (a cheap filter for garbage).
    Bytes that end up in no frame are counted in `garbage` and their start is kept in
    `garbage_sample`; `banner_seen` tells whether RESET_BANNER was among them.
    """

    def __init__(self, types: Iterable[int] | None = None, max_length: int = _MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._types = frozenset(types) if types is not None else None
        self._max_length = max_length
        self.dropped = 0  # complete candidates with a bad CRC
        self.garbage = 0  # bytes that were in no frame
        self.garbage_sample = b""  # the first garbage bytes (for error messages)
        self.banner_seen = False
        self._tail = b""  # last garbage bytes, to find a banner split across reads
        self._removed = 0  # bytes fed and no longer in _buffer

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            found = self._scan()
            if found is None:
                break
            start, end, frame = found
            self._discard(start)
            frames.append(frame)
            del self._buffer[: end - start]
            self._removed += end - start
        self._discard(self._keep_from())
        return frames

    def pending(self) -> bool:
        """Whether a plausible frame has started and waits for more bytes."""
        return self._first_incomplete() is not None

    def incomplete_at(self) -> int | None:
        """Stream position (bytes fed before it) of the first frame in progress, if any."""
        start = self._first_incomplete()
        return None if start is None else self._removed + start

    def abandon_incomplete(self) -> None:
        """Give up the frames in progress (the line stayed silent inside them). Their bytes
        after each sync pair stay, to be scanned for a later one."""
        while (start := self._first_incomplete()) is not None:
            self._buffer[start] ^= 0xFF  # as for a bad CRC: never try that sync pair again
        self._discard(self._keep_from())

    def bytes_wanted(self) -> int:
        """How many more bytes complete the frame in progress (at least 1)."""
        start = self._first_incomplete()
        if start is None:
            return 1
        (length,) = struct.unpack_from("<H", self._buffer, start + 4)
        return max(1, start + HEADER_BYTES + length + CRC_BYTES - len(self._buffer))

    def _candidates(self) -> Iterator[tuple[int, int | None]]:
        """(start, end) of each plausible candidate; end is None while incomplete."""
        pos = 0
        while True:
            start = self._buffer.find(SYNC, pos)
            if start < 0:
                return
            pos = start + 1
            if len(self._buffer) < start + HEADER_BYTES:
                yield start, None
                continue
            frame_type, _seq, length = struct.unpack_from("<BBH", self._buffer, start + 2)
            if (self._types is not None and frame_type not in self._types) or length > self._max_length:
                continue
            end = start + HEADER_BYTES + length + CRC_BYTES
            yield start, (end if end <= len(self._buffer) else None)

    def _scan(self) -> tuple[int, int, Frame] | None:
        for start, end in self._candidates():
            if end is None:
                continue
            body = bytes(self._buffer[start + 2 : end - CRC_BYTES])
            (crc,) = struct.unpack_from("<H", self._buffer, end - CRC_BYTES)
            if crc == crc16(body):
                frame_type, seq, _length = struct.unpack_from("<BBH", body)
                return start, end, Frame(frame_type, seq, body[4:], self._removed + start)
            self.dropped += 1
            self._buffer[start] ^= 0xFF  # the sync pair was noise: never try it again
        return None

    def _first_incomplete(self) -> int | None:
        for start, end in self._candidates():
            if end is None:
                return start
        return None

    def _keep_from(self) -> int:
        first = self._first_incomplete()
        if first is not None:
            return first
        # A trailing SYNC0 may start a frame.
        return len(self._buffer) - 1 if self._buffer.endswith(SYNC[:1]) else len(self._buffer)

    def _discard(self, count: int) -> None:
        if count <= 0:
            return
        junk = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._removed += count
        self.garbage += count
        if len(self.garbage_sample) < 48:
            self.garbage_sample += junk[: 48 - len(self.garbage_sample)]
        window = self._tail + junk
        if RESET_BANNER in window:
            self.banner_seen = True
        self._tail = window[-(len(RESET_BANNER) - 1) :]

    def take_banner(self) -> bool:
        seen, self.banner_seen = self.banner_seen, False
        return seen


@dataclass(frozen=True)
class DeviceIdentity:
    protocol: int
    board: str
    counter: str  # unit of InferResult.count: "instructions" or "cycles"
    clock_hz: int
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    max_payload: int
    model: dict  # the model's identity object (hash, tensors, quantization)
    raw: dict = field(repr=False)  # the whole JSON object, with any newer fields

    @property
    def model_hash(self) -> str | None:
        value = self.model.get("hash") if isinstance(self.model, dict) else None
        return None if value is None else str(value)


@dataclass(frozen=True)
class InferResult:
    output: bytes
    count: int  # instructions or cycles spent in the model (DeviceIdentity.counter)


@dataclass
class LinkStats:
    """What the link did; bytes count everything written and read, retries included."""

    requests: int = 0  # requests completed
    attempts: int = 0  # frames sent (first sends and resends)
    bytes_out: int = 0
    bytes_in: int = 0
    noise: int = 0  # attempts that ended in a damaged reply or a CRC report
    silences: int = 0  # attempts that timed out with nothing frame-like received
    resets: int = 0  # device resets detected (then identified again)
    reconnects: int = 0  # the port was closed and opened again
    busy_s: float = 0.0  # time with at least one request outstanding


@dataclass
class _Request:
    key: Hashable
    type: int
    payload: bytes
    seq: int = -1
    errors: int = 0  # retryable error replies so far
    resets: int = 0  # device resets (seen or suspected) while it was awaited


class _ResetSuspected(Exception):
    pass


class DeviceLink:
    """A request/response link to the firmware over any pyserial URL.

    timeout: seconds the device may stay silent (no frame at all) before the link gives
    up; retries: how often a request answered with a retryable error (CRC, length) is
    sent again before the error is reported; idle_gap: seconds without a byte that cut a
    started frame short (doubled, up to _MAX_IDLE_GAP_S, whenever a frame so reported
    completes intact after all); max_attempts: cap on the attempts in a row that get no
    good reply.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 2, baud: int = 115200,
                 idle_gap: float = 0.03, max_attempts: int = 1000, expected_model: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.baud = baud
        self.idle_gap = idle_gap
        self.max_attempts = max_attempts
        self.expected_model = expected_model  # checked after every identify once set
        self.identity: DeviceIdentity | None = None
        self.stats = LinkStats()
        self.serial = self._open()
        self._seq = 0
        self._decoder = self._new_decoder()
        self._frames: deque[Frame] = deque()  # decoded, not yet looked at
        self._rtt: dict[int, list[float]] = {}  # recent round trips of completed requests, per type
        self._silent_in_row = 0  # attempts in a row that met silence
        self._silent_s = 0.0  # seconds of silence since the last reply
        self._identifying = False  # within an identify: banners and silences there need no reset handling
        self._noisy = 0  # > 0: recent noise, pad every request
        self._protocol_seen = False  # any frame (even a damaged one) came from the device
        self._last_activity = time.monotonic()  # last byte read or written
        self._last_poll = time.monotonic()  # last read of the port, with or without bytes
        self._cut_short: int | None = None  # stream position of the frame last reported cut short
        self._reconnect_times: list[float] = []
        self._sent_unread = 0  # bytes written since the last wait began: their transfer time is added to it

    # --- public requests -----------------------------------------------------------

    def close(self) -> None:
        self.serial.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def exchange(self, frame_type: int, payload: bytes = b"") -> Frame:
        """Send one request and return the device's reply to it: its response, or an
        error frame (CRC and length errors only after `retries` more attempts)."""
        while True:
            try:
                for _key, frame in self._stream([_Request(None, frame_type, bytes(payload))], depth=1):
                    return frame
            except _ResetSuspected:
                if not self._identifying:  # identifying, a reconnected port just retries the slice
                    self._after_reset()

    def identify(self) -> DeviceIdentity:
        """IDENTIFY; records the identity. With expected_model set, a device that runs
        another model ends the run with an OnebitError."""
        identity = self._identify_once()
        self.identity = identity
        self._check_model(identity)
        return identity

    def infer(self, input: bytes) -> InferResult:
        for _key, result in self.infer_stream([(None, bytes(input))], depth=1):
            return result
        raise AssertionError("unreachable")

    def infer_stream(self, items: Iterable[tuple[Hashable, bytes]], depth: int = 2) -> Iterator[tuple[Hashable, InferResult]]:
        """INFER every (key, input) of `items`, keeping up to `depth` requests at the
        device so that it never waits for the host. Yields (key, result) as replies
        arrive; each key exactly once."""
        source = iter(items)
        carried: list[_Request] = []
        while True:
            try:
                for key, frame in self._stream(_infer_requests(source), depth, carried):
                    if frame.is_error:
                        raise self._refusal(frame)
                    if len(frame.payload) < 8:
                        raise OnebitError(f"device at {self.url} sent a {len(frame.payload)}-byte INFER reply; "
                                          "reflash it with this mcu-onebit")
                    (count,) = struct.unpack_from("<Q", frame.payload)
                    yield key, InferResult(output=frame.payload[8:], count=count)
                return
            except _ResetSuspected as reset:
                carried = list(reset.args[0]) if reset.args else []
                for request in carried:
                    request.resets += 1
                    if request.resets >= _RESETS_PER_REQUEST:
                        raise OnebitError(
                            f"device at {self.url} restarted or went silent {request.resets} times while computing one "
                            "INFER; the firmware may crash on that input (a hard fault, a watchdog reset)") from None
                self._after_reset()

    # --- the request engine ----------------------------------------------------------

    def _stream(self, requests: Iterable[_Request], depth: int, carried: list[_Request] | None = None
                ) -> Iterator[tuple[Hashable, Frame]]:
        """Keep up to `depth` requests outstanding; yield (key, reply frame) per request.
        Raises _ResetSuspected(unfinished requests) when the device seems reset."""
        source = iter(requests)
        outstanding: dict[int, _Request] = {}
        # Earlier attempts of requests still awaited, by sequence number: a reply to one
        # that arrives late (the line was only slow) still completes its request.
        abandoned: dict[int, _Request] = {}
        backlog = list(carried or [])
        exhausted = False
        attempts = 0  # sends since the last good reply: a noisy link still makes progress
        busy_since: float | None = None
        filler = 0

        def send(request: _Request, pad: int = 0) -> None:
            """Frame `request` after `pad` zero filler bytes. A PAD follows it unless the
            next pipelined request will: bytes after a frame complete it at the device
            when the link dropped some of its bytes (a CRC report then comes at once).
            Each extra byte costs time on the emulator's slow host->device path."""
            nonlocal attempts
            self._seq = (self._seq + 1) & 0xFF
            while self._seq in outstanding or self._seq in abandoned:  # never reuse one still awaited
                self._seq = (self._seq + 1) & 0xFF
            request.seq = self._seq
            outstanding[request.seq] = request
            self.stats.attempts += 1
            attempts += 1
            followed = depth > 1 and request.type == INFER and request.errors == 0 and not self._noisy
            data = b"\x00" * pad + encode_frame(request.type, request.seq, request.payload) + (b"" if followed else PAD)
            self._sent_unread += len(data)
            self._write(data)

        try:
            while True:
                while len(outstanding) < depth and (backlog or not exhausted):
                    if backlog:
                        request = backlog.pop(0)
                    else:
                        request = next(source, None)
                        if request is None:
                            exhausted = True
                            break
                    if busy_since is None:
                        busy_since = time.monotonic()
                    send(request, filler)
                    filler = 0
                if not outstanding:
                    return
                sent_at = time.monotonic()
                kind = next(iter(outstanding.values())).type
                transfer_s = self._sent_unread / _SLOWEST_LINK_BPS
                wait = self._attempt_timeout(kind) + transfer_s
                self._sent_unread = 0
                outcome, frame = self._await(outstanding, abandoned, wait)
                if outcome == "reply":
                    request = outstanding.pop(frame.seq, None) or abandoned[frame.seq]
                    outstanding.pop(request.seq, None)  # a late reply: its resend is answered already
                    for seq in [seq for seq, other in abandoned.items() if other is request]:
                        del abandoned[seq]
                    if self._retryable(request, frame):
                        request.errors += 1
                        self.stats.noise += 1
                        self._noisy = 8
                        self._give_up_if_endless(attempts, request)
                        send(request)
                        continue
                    attempts = 0
                    self._silent_in_row = 0
                    self._silent_s = 0.0
                    self._noisy = max(0, self._noisy - 1)
                    # Less the time allowed for the bytes sent: a round trip after 16 KB of
                    # filler would otherwise stretch every later attempt's wait by seconds.
                    history = self._rtt.setdefault(request.type, [])
                    history.append(max(0.0, time.monotonic() - sent_at - transfer_s))
                    del history[:-16]
                    self.stats.requests += 1
                    if not outstanding and busy_since is not None:
                        self.stats.busy_s += time.monotonic() - busy_since
                        busy_since = None
                    yield request.key, frame
                    continue
                # Noise or silence: every outstanding request goes again.
                again = sorted(outstanding.values(), key=lambda r: r.seq)
                abandoned.update(outstanding)
                while len(abandoned) > _ABANDONED_KEPT:
                    del abandoned[next(iter(abandoned))]
                outstanding.clear()
                backlog = again + backlog
                self._noisy = 8  # pad every request until 8 clean replies in a row
                if outcome == "noise":  # the device is there: its silence so far is forgiven
                    self.stats.noise += 1
                    self._silent_in_row = 0
                    self._silent_s = 0.0
                    self._give_up_if_endless(attempts, again[0])
                else:
                    self.stats.silences += 1
                    self._silent_in_row += 1
                    self._silent_s += wait
                    if self._silent_s >= self.timeout and self._silent_in_row > self.retries:
                        raise self._silent_error(again[0])
                    if self._silent_in_row == 2 and not self._identifying:
                        raise _ResetSuspected()
                    # The device may be stuck in a partial frame whose length the link
                    # damaged: zero filler completes it (twice our frame, then the most
                    # the device can wait for).
                    most = (self.identity.max_payload if self.identity else _DEFAULT_MAX_PAYLOAD) + HEADER_BYTES + CRC_BYTES
                    ours = HEADER_BYTES + CRC_BYTES + max(len(r.payload) for r in again)
                    filler = min(most, 2 * ours) if self._silent_in_row == 1 else most
                    self._decoder.abandon_incomplete()  # a frame still open after silence was noise
        except _ResetSuspected:
            raise _ResetSuspected(sorted(outstanding.values(), key=lambda r: r.seq) + backlog) from None
        finally:
            if busy_since is not None:
                self.stats.busy_s += time.monotonic() - busy_since

    def _await(self, outstanding: dict[int, _Request], abandoned: dict[int, _Request], wait: float
               ) -> tuple[str, Frame | None]:
        """Read until a reply to an outstanding request or a useful one to an abandoned
        attempt ("reply"), a damaged frame or a cut-short one ("noise"), or `wait` seconds
        of nothing useful ("silence"). Bytes are never thrown away: a frame cut short is
        abandoned and its bytes scanned again."""
        deadline = time.monotonic() + wait
        dropped = self._decoder.dropped
        garbage = self._decoder.garbage
        while True:
            while self._frames:  # decoded earlier, after the frame an earlier wait returned
                frame = self._frames.popleft()
                if frame.seq in outstanding or (
                        frame.seq in abandoned and not self._retryable(abandoned[frame.seq], frame)):
                    return "reply", frame
            if self._decoder.take_banner() and not self._identifying:
                raise _ResetSuspected()
            now = time.monotonic()
            if now - self._last_poll > self.idle_gap:
                # This thread did not read for a while (the caller's work, a loaded host):
                # the line's silence cannot be judged over that time.
                self._last_activity = now
            if self._decoder.dropped > dropped:
                return "noise", None
            incomplete = self._decoder.incomplete_at()
            if now - self._last_activity > self.idle_gap and (
                    (incomplete is not None and incomplete != self._cut_short) or (
                    self._protocol_seen and self._decoder.garbage > garbage)) and not self._bytes_waiting():
                # A frame cut short, or bytes that were no frame (a damaged sync). Bytes
                # still waiting mean this host, not the link, was slow: read them first.
                # The frame stays in the decoder: a slow line (a TCP bridge's 40 ms delayed
                # ACK) may still complete it, and a reply to the attempt it answers counts.
                self._cut_short = incomplete
                return "noise", None
            if now > deadline:
                return "silence", None
            frames = self._decoder.feed(self._read())
            if frames or self._decoder.dropped:
                self._protocol_seen = True
            if self._cut_short is not None and any(frame.at == self._cut_short for frame in frames):
                # The frame was only slow: wait longer inside frames from now on.
                self.idle_gap = min(_MAX_IDLE_GAP_S, 2 * self.idle_gap)
                self._cut_short = None
            self._frames.extend(frames)

    def _retryable(self, request: _Request, reply: Frame) -> bool:
        """Whether `reply` reports damage to `request` on the way in. A length error for
        a request whose length is right means the link damaged its header."""
        return reply.is_error and (
            reply.error_code == ERR_CRC or (reply.error_code == ERR_LENGTH and self._well_formed(request)))

    def _attempt_timeout(self, kind: int) -> float:
        """How long one attempt waits: four times the 75th percentile of the recent round
        trips of this request type once known (before: 1 s for IDENTIFY, the whole
        timeout for INFER), doubled per silent attempt in a row (backoff), never above
        `timeout`. Not the slowest: one slow reply (a booting board) would stretch every
        later attempt and leave the link waiting seconds on a request the noise lost."""
        history = self._rtt.get(kind)
        if history:
            base = max(0.25, 4 * sorted(history)[len(history) * 3 // 4])
        else:
            base = 1.0 if kind == IDENTIFY else self.timeout
        return min(self.timeout, base * (2**self._silent_in_row))

    def _well_formed(self, request: _Request) -> bool:
        """Whether the device can have refused `request` for its length only because the
        link damaged it (then a length error is worth another attempt)."""
        if request.type == IDENTIFY:
            return len(request.payload) in (0, IDENTIFY_QUERY_BYTES)
        if self.identity is None:
            return False
        if request.type == INFER:
            return len(request.payload) == self.identity.input_bytes
        return len(request.payload) <= self.identity.max_payload

    def _give_up_if_endless(self, attempts: int, request: _Request) -> None:
        if attempts >= self.max_attempts:
            name = _REQUEST_NAMES.get(request.type, f"request 0x{request.type:02x}")
            raise OnebitError(f"the link to {self.url} is too noisy: {attempts} attempts in a row at {name} got only damaged "
                              "replies; check the cable, the baud rate and the ground")

    def _silent_error(self, request: _Request) -> OnebitError:
        name = _REQUEST_NAMES.get(request.type, f"request 0x{request.type:02x}")
        if self._decoder.garbage and not self._protocol_seen:
            sample = self._decoder.garbage_sample
            echo = b"" if not sample.startswith(SYNC + bytes([request.type])) else b" (it echoes what it is sent)"
            return OnebitError(
                f"device at {self.url} does not speak the mcu-onebit serial protocol: it sent {self._decoder.garbage} "
                f"bytes but no frame{echo.decode()} (first bytes {sample[:24]!r}); is this the board's port, and is it "
                "flashed with `mcu-onebit flash`?")
        return OnebitError(f"device at {self.url} did not answer {name} within {self.timeout:g} s "
                           f"({self.stats.silences} silent attempts); is it flashed and running?")

    # --- identity and resets ------------------------------------------------------

    def _identify_once(self) -> DeviceIdentity:
        # While identifying, a boot banner or silence is the board (re)starting: identity is
        # pure, so the slices go on with no reset handling.
        self._identifying = True
        try:
            text = self._identity_text()
        finally:
            self._identifying = False
        try:
            data = json.loads(text.decode("utf-8"))
            identity = DeviceIdentity(
                protocol=int(data["protocol"]),
                board=str(data["board"]),
                counter=str(data["counter"]),
                clock_hz=int(data["clock_hz"]),
                input_bytes=int(data["input_bytes"]),
                output_bytes=int(data["output_bytes"]),
                arena_bytes=int(data["arena_bytes"]),
                max_payload=int(data["max_payload"]),
                model=data["model"],
                raw=data,
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise OnebitError(f"device at {self.url} sent an unreadable identity ({exc!r}); reflash it with this mcu-onebit") from exc
        if identity.protocol != PROTOCOL_VERSION:
            raise OnebitError(
                f"device at {self.url} speaks protocol {identity.protocol}, this mcu-onebit speaks {PROTOCOL_VERSION}; reflash it"
            )
        return identity

    def _identity_text(self) -> bytes:
        # In slices: on a link that damages 1 % of its bytes a whole ~400-byte identity
        # arrives intact 2 % of the time, a slice half the time.
        text = b""
        while True:
            reply = self.exchange(IDENTIFY, struct.pack("<HH", len(text), IDENTIFY_SLICE))
            if reply.is_error:
                raise self._refusal(reply, IDENTIFY)
            text += reply.payload
            if len(reply.payload) != IDENTIFY_SLICE:  # the end (or firmware that sends all at once)
                return text

    def _check_model(self, identity: DeviceIdentity) -> None:
        if self.expected_model is not None and identity.model_hash != self.expected_model:
            raise OnebitError(
                f"the device at {self.url} runs model {identity.model_hash}, the project has {self.expected_model}; "
                "run `mcu-onebit flash` first"
            )

    def _after_reset(self) -> None:
        """The device seems to have restarted: identify it again before anything else."""
        self.stats.resets += 1
        # A board that restarts gets the whole timeout to come back, from a fresh backoff.
        self._silent_s = 0.0
        self._silent_in_row = 0
        self._resync()
        before = self.identity
        identity = self._identify_once()
        if before is not None and identity.model_hash != before.model_hash:
            raise OnebitError(f"the device at {self.url} was reset and now runs model {identity.model_hash}, "
                              f"not {before.model_hash}; flash the project's firmware and resume with `eval --resume`")
        self.identity = identity
        self._check_model(identity)

    def _refusal(self, reply: Frame, frame_type: int = INFER) -> OnebitError:
        name = ERROR_NAMES.get(reply.error_code, f"error {reply.error_code}")
        return OnebitError(f"device at {self.url} refused {_REQUEST_NAMES[frame_type]}: {name} ({reply.error_message})")

    # --- bytes ---------------------------------------------------------------------

    def _new_decoder(self) -> FrameDecoder:
        return FrameDecoder(types=RESPONSE_TYPES)

    def _open(self) -> serial.SerialBase:
        if "://" not in self.url:
            # A USB CDC port vanishes while a board resets after an upload and comes back
            # within a few seconds: give it that long to appear.
            deadline = time.monotonic() + PORT_APPEAR_S
            while not os.path.exists(self.url) and time.monotonic() < deadline:
                time.sleep(0.1)
        try:
            return serial.serial_for_url(self.url, baudrate=self.baud, timeout=_POLL_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise OnebitError(f"cannot open serial port {self.url} ({exc}); check the port (`mcu-onebit flash` prints it)") from exc

    def _reconnect(self, exc: Exception) -> None:
        """The port went away (a board that resets over USB, an emulator restarted on its
        port): open it again for up to `timeout` seconds, then identify the device again."""
        try:
            self.serial.close()
        except (serial.SerialException, OSError):
            pass
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.serial = serial.serial_for_url(self.url, baudrate=self.baud, timeout=_POLL_S)
                break
            except (serial.SerialException, OSError, ValueError):
                if time.monotonic() > deadline:
                    raise OnebitError(f"lost the serial port {self.url} ({exc}); is the device still running?") from exc
                time.sleep(0.1)
        self.stats.reconnects += 1
        now = time.monotonic()
        self._reconnect_times = [t for t in self._reconnect_times if now - t < max(self.timeout, 1.0)] + [now]
        if len(self._reconnect_times) > 5:
            raise OnebitError(f"the serial port {self.url} keeps closing ({exc}); is the device resetting in a loop?")

    def _resync(self) -> None:
        try:
            self.stats.bytes_in += self.serial.in_waiting
            self.serial.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass  # the next read or write notices
        old = self._decoder
        self._decoder = self._new_decoder()
        self._frames.clear()
        self._decoder.garbage, self._decoder.garbage_sample = old.garbage, old.garbage_sample

    def _write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
            self.serial.flush()
        except (serial.SerialException, OSError) as exc:
            self._reconnect(exc)
            raise _ResetSuspected() from None
        self.stats.bytes_out += len(data)
        self._last_activity = time.monotonic()

    def _bytes_waiting(self) -> bool:
        try:
            return self.serial.in_waiting > 0
        except (serial.SerialException, OSError, TypeError):
            return False  # the next read notices

    def _read(self) -> bytes:
        try:
            data = self.serial.read(max(1, self.serial.in_waiting))
        except (serial.SerialException, OSError, TypeError) as exc:
            self._reconnect(exc)
            raise _ResetSuspected() from None
        self._last_poll = time.monotonic()
        if data:
            self.stats.bytes_in += len(data)
            self._last_activity = time.monotonic()
        return data


def _infer_requests(items: Iterator[tuple[Hashable, bytes]]) -> Iterator[_Request]:
    for key, data in items:
        yield _Request(key, INFER, bytes(data))
