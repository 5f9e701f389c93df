"""Writes the fuzz harnesses' corpus (firmware/fuzz/corpus/<harness>/): seed-* files, inputs
a well-behaved host or model gives; crash-* files, inputs that crashed the code before
issue 14 (ASan or UBSan), and misread-* files, options it read as other values; all kept as
regression inputs. These files are generated: change this script and run it
(`.venv/bin/python firmware/fuzz/make_corpus.py`) rather than editing them. Inputs that
libFuzzer found (crash-found-*) are stored as found, beside them: in options/, those that
crashed the parser before issue 14, and e7bf76ea8a97, a key without its NUL that Debian's
flatbuffers 2.0.8 verifier passes (onebit_conv2d_options.cc bounds the key itself)."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

from flatbuffers import flexbuffers

from mcu_onebit import serial_link as sl
from mcu_onebit.cheader import read_defines
from mcu_onebit.converters import onebit_conv2d as oc
from mcu_onebit.converters import quant

CORPUS = Path(__file__).parent / "corpus"
PROTOCOL = read_defines("app/protocol.h")


def _options(**changes) -> bytes:
    fields = dataclasses.asdict(oc.OnebitConvOptions())
    fields.update(changes)
    builder = flexbuffers.Builder()
    with builder.Map():
        for key, value in fields.items():
            if isinstance(value, float):
                builder.Float(key, value, byte_width=8)  # Add would pick 4 bytes and fail for 1e300
            else:
                builder.Key(key)
                builder.Add(value)
    return bytes(builder.Finish())


def options() -> dict[str, bytes]:
    files = {f"seed-{p}-{a}": oc.encode_options(2, 1, 1, 2, p, a)
             for p in oc.STRING_OPTIONS["padding"] for a in oc.STRING_OPTIONS["activation"]}
    files.update({
        "crash-one-byte": b"\x00",  # GetRoot read buffer[-1]
        "crash-huge-float-stride": _options(stride_h=1e300),  # static_cast<int64_t>(double)
        "misread-float-version": _options(version=1.0),  # read as 1
        "misread-stride-2-32-plus-2": _options(stride_h=2**32 + 2),  # read as 2
        "misread-stride-string": _options(stride_w="3"),  # read as 3
        "misread-stride-true": _options(dilation_h=True),  # read as 1
        "misread-stride-vector": _options(dilation_w=[1, 2]),  # read as its length
    })
    return files


def _params_bytes(p: oc.OnebitConv2DParams, data: bytes = b"\x01\x7f\x80\x03") -> bytes:
    """params_fuzz.c's input: 18 int32 fields, 64 (multiplier, shift) pairs, then data."""
    fields = [getattr(p, f.name) for f in dataclasses.fields(p) if not isinstance(getattr(p, f.name), tuple)]
    pairs = [(p.out_multiplier[i], p.out_shift[i]) if i < p.out_c else (0, 0) for i in range(64)]
    return struct.pack("<18i", *fields) + b"".join(struct.pack("<ii", *pair) for pair in pairs) + data


def params() -> dict[str, bytes]:
    def conv(in_shape, filt_shape, options, zero_points=(3, -2)) -> oc.OnebitConv2DParams:
        q = quant.conv_quant(quant.TensorQuant(0.5, zero_points[0]), [0.01 * (i + 1) for i in range(filt_shape[0])],
                             quant.TensorQuant(0.25, zero_points[1]), options.activation)
        return oc.onebit_conv2d_params(in_shape, filt_shape, options, q)

    base = conv((1, 5, 5, 3), (2, 3, 3, 3), oc.OnebitConvOptions(1, 1, 1, 1, "SAME", "RELU"))
    files = {
        "seed-3x3-same": _params_bytes(base),
        "seed-1x1-stride2": _params_bytes(conv((1, 6, 6, 9), (4, 1, 1, 9), oc.OnebitConvOptions(2, 2, 1, 1, "VALID", "NONE"))),
        "seed-dilated": _params_bytes(conv((1, 7, 7, 2), (3, 3, 3, 2), oc.OnebitConvOptions(1, 1, 2, 2, "SAME", "RELU6"))),
        "seed-positive-shift": _params_bytes(dataclasses.replace(base, out_shift=(5, 5))),
    }
    # What the check let through and the kernels then overflowed on (UBSan).
    crashes = {
        "input-offset-int32-min": dict(input_offset=-2**31),
        "input-offset-large": dict(input_offset=2**24),  # 127 * T overflows
        "stride-2-30": dict(stride_h=2**30, out_h=3),  # oy * stride overflows
        "output-offset-int32-max": dict(output_offset=2**31 - 1, out_shift=(30, 30)),
        "dilation-2-30": dict(dilation_w=2**30, k_w=3),
    }
    files.update({f"crash-{name}": _params_bytes(dataclasses.replace(base, **change))
                  for name, change in crashes.items()})
    # A bias of INT32_MAX on a positive accumulator: the bias bytes come from the data tail.
    files["crash-bias-int32-max"] = _params_bytes(base, struct.pack("<i", 2**31 - 1))
    return files


def frames() -> dict[str, bytes]:
    identify, infer = PROTOCOL["OB_PROTO_IDENTIFY"], PROTOCOL["OB_PROTO_INFER"]
    bad_crc = bytearray(sl.encode_frame(infer, 3, b"\x01\x02\x03\x04"))
    bad_crc[-1] ^= 0xFF
    return {
        "seed-identify": sl.encode_frame(identify, 1),
        "seed-identify-slice": sl.encode_frame(identify, 2, struct.pack("<HH", 8, 48)),
        "seed-infer": sl.encode_frame(infer, 3, b"\x01\x02\x03\x04"),
        "seed-infer-failing": sl.encode_frame(infer, 4, b"\x80\x02\x03\x04"),
        "seed-bad-crc": bytes(bad_crc),
        "seed-bad-length": sl.encode_frame(infer, 5, b"\x01"),
        "seed-unknown-type": sl.encode_frame(0x33, 6, b"xyz"),
        "seed-text-between-frames": b"name%" + sl.encode_frame(identify, 7) + b"db load 4%db 01020304%infer 2 1%results%",
    }


def energyrunner() -> dict[str, bytes]:
    return {
        "seed-session": b"name%profile%db load 4%db 0102%db 0304%db print%infer 3 2%results%",
        "seed-help": b"help%timestamp%",
        "seed-errors": b"db load 99999%db zz%infer 0%infer 1 x%results%" + b"x" * 90 + b"%",
        "seed-frame-between": b"db load 4%db 01\xff02%infer 1%",
    }


def main() -> None:
    for harness, files in (("options", options()), ("params", params()), ("frames", frames()),
                           ("energyrunner", energyrunner())):
        folder = CORPUS / harness
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
