"""Host side of the serial protocol (docs/serial_protocol.md; constants: firmware/app/protocol.h).

    with DeviceLink("socket://127.0.0.1:4444") as link:   # or /dev/ttyACM0, a pty path
        identity = link.identify()
        result = link.infer(input_bytes)                   # result.output, result.count

Each request gets a fresh sequence number; a reply counts only if it echoes it, so late
replies to an abandoned request are ignored. On a timeout, unreadable bytes, or a
device report that the request's CRC failed, the link resynchronises (drops what it
has received) and sends the request again, a few times, before giving up.
"""

from __future__ import annotations

import binascii
import json
import struct
import time
from dataclasses import dataclass, field

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
INFER = _P["OB_PROTO_INFER"]
RESPONSE = _P["OB_PROTO_RESPONSE"]
ERROR = _P["OB_PROTO_ERROR"]
ERR_CRC = _P["OB_PROTO_ERR_CRC"]
ERROR_NAMES = {
    _P["OB_PROTO_ERR_CRC"]: "CRC mismatch",
    _P["OB_PROTO_ERR_LENGTH"]: "bad length",
    _P["OB_PROTO_ERR_UNKNOWN_TYPE"]: "unknown request type",
    _P["OB_PROTO_ERR_INVOKE"]: "inference failed",
}
_REQUEST_NAMES = {IDENTIFY: "IDENTIFY", INFER: "INFER"}
_MAX_PAYLOAD = 0xFFFF
_POLL_S = 0.05  # serial read timeout; the request deadline is checked between reads


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, CRC_INIT)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes

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
    """Turns a byte stream into frames, skipping bytes until a sync pair and dropping
    frames whose CRC fails (their sync pair may have been noise, so the search resumes
    one byte after it)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.dropped = 0  # frames dropped for a bad CRC

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while True:
            start = self._buffer.find(SYNC)
            if start < 0:
                # Keep a trailing SYNC0: it may start a frame.
                del self._buffer[: max(0, len(self._buffer) - 1)]
                return frames
            del self._buffer[:start]
            if len(self._buffer) < HEADER_BYTES:
                return frames
            frame_type, seq, length = struct.unpack_from("<BBH", self._buffer, 2)
            end = HEADER_BYTES + length + CRC_BYTES
            if len(self._buffer) < end:
                return frames
            body = bytes(self._buffer[2 : HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<H", self._buffer, HEADER_BYTES + length)
            if crc == crc16(body):
                frames.append(Frame(frame_type, seq, body[4:]))
                del self._buffer[:end]
            else:
                self.dropped += 1
                del self._buffer[:1]

    def bytes_wanted(self) -> int:
        """How many more bytes complete the frame in progress (at least 1)."""
        if len(self._buffer) >= HEADER_BYTES and self._buffer.startswith(SYNC):
            (length,) = struct.unpack_from("<H", self._buffer, 4)
            return max(1, HEADER_BYTES + length + CRC_BYTES - len(self._buffer))
        return 1


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


@dataclass(frozen=True)
class InferResult:
    output: bytes
    count: int  # instructions or cycles spent in the model (DeviceIdentity.counter)


class DeviceLink:
    """A request/response link to the firmware over any pyserial URL."""

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 2, baud: int = 115200) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        try:
            self.serial = serial.serial_for_url(url, baudrate=baud, timeout=_POLL_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise OnebitError(f"cannot open serial port {url} ({exc}); check the port (`mcu-onebit flash` prints it)") from exc
        self._seq = 0
        self._decoder = FrameDecoder()

    def close(self) -> None:
        self.serial.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def exchange(self, frame_type: int, payload: bytes = b"") -> Frame:
        """Send one request and return the device's reply to it: its response, or an
        error frame other than a CRC error (those are retried)."""
        request = _REQUEST_NAMES.get(frame_type, f"request 0x{frame_type:02x}")
        failure = f"did not answer {request} within {self.timeout:g} s"
        for _attempt in range(1 + self.retries):
            self._seq = (self._seq + 1) & 0xFF
            self._resync()
            self._write(encode_frame(frame_type, self._seq, payload))
            reply = self._await(self._seq, frame_type | RESPONSE)
            if reply is None:
                continue
            if reply.is_error and reply.error_code == ERR_CRC:
                failure = f"reported CRC errors for {request}"
                continue
            return reply
        attempts = 1 + self.retries
        raise OnebitError(f"device at {self.url} {failure} ({attempts} attempts); is it flashed and running?")

    def identify(self) -> DeviceIdentity:
        reply = self._checked(IDENTIFY, b"")
        try:
            data = json.loads(reply.payload.decode("utf-8"))
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

    def infer(self, input: bytes) -> InferResult:
        reply = self._checked(INFER, bytes(input))
        if len(reply.payload) < 8:
            raise OnebitError(f"device at {self.url} sent a {len(reply.payload)}-byte INFER reply; reflash it with this mcu-onebit")
        (count,) = struct.unpack_from("<Q", reply.payload)
        return InferResult(output=reply.payload[8:], count=count)

    def _checked(self, frame_type: int, payload: bytes) -> Frame:
        reply = self.exchange(frame_type, payload)
        if reply.is_error:
            name = ERROR_NAMES.get(reply.error_code, f"error {reply.error_code}")
            raise OnebitError(
                f"device at {self.url} refused {_REQUEST_NAMES[frame_type]}: {name} ({reply.error_message})"
            )
        return reply

    def _resync(self) -> None:
        self.serial.reset_input_buffer()
        self._decoder = FrameDecoder()

    def _write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
            self.serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise OnebitError(f"lost the serial port {self.url} ({exc}); is the device still running?") from exc

    def _await(self, seq: int, response_type: int) -> Frame | None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                # Never ask for more than is on its way: a read that waits for bytes
                # the device will not send raises only late if the device goes away.
                wanted = max(self.serial.in_waiting, self._decoder.bytes_wanted())
                data = self.serial.read(wanted)
            except (serial.SerialException, OSError) as exc:
                raise OnebitError(f"lost the serial port {self.url} ({exc}); is the device still running?") from exc
            for frame in self._decoder.feed(data):
                if frame.seq == seq and frame.type in (response_type, ERROR):
                    return frame
        return None
