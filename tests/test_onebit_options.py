"""ONEBIT_CONV2D's custom options: the C parser of the TFLM runtime
(firmware/runtime/tflm/onebit_conv2d_options.cc, built for the PC with the host compiler
against Debian's flexbuffers.h) and Python's decode_options accept and refuse the same
option maps and the same damaged bytes, and read the same values from those they accept.
Both follow the options table of firmware/kernels/onebit_conv2d.h."""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from flatbuffers import flexbuffers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcu_onebit.converters import onebit_conv2d as oc
from mcu_onebit.hostbuild import build_shared_library
from mcu_onebit.paths import firmware_dir

import fuzzing

FLEXBUFFERS_H = Path("/usr/include/flatbuffers/flexbuffers.h")
KEYS = (*oc.INT_OPTIONS, *oc.STRING_OPTIONS)
# ob_onebit_conv2d_options: one int32_t per key of the table, in table order.
OptionsStruct = type("OptionsStruct", (ctypes.Structure,), {"_fields_": [(k, ctypes.c_int32) for k in KEYS]})


@pytest.fixture(scope="module")
def parser(tmp_path_factory):
    if not FLEXBUFFERS_H.is_file():
        pytest.skip(f"{FLEXBUFFERS_H} missing: `make setup` installs libflatbuffers-dev")
    build = tmp_path_factory.mktemp("options")
    path = build_shared_library([firmware_dir() / "runtime/tflm/onebit_conv2d_options.cc"],
                                [firmware_dir() / "kernels", firmware_dir() / "runtime/tflm"],
                                build / "libobopts.so", cxx=True)
    library = ctypes.CDLL(str(path))
    library.ob_onebit_conv2d_parse_options.restype = ctypes.c_char_p
    return library


def c_parse(parser, data: bytes) -> tuple[str | None, dict]:
    """(the C parser's problem, or None when it accepts; the fields it read)."""
    options = OptionsStruct()
    key = ctypes.c_char_p()
    buffer = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
    problem = parser.ob_onebit_conv2d_parse_options(buffer, len(data), ctypes.byref(options), ctypes.byref(key))
    return (problem.decode() if problem else None), {k: getattr(options, k) for k in KEYS}


def py_parse(data: bytes) -> tuple[str | None, dict]:
    try:
        options = oc.decode_options(data)
    except ValueError as exc:
        return str(exc), {}
    fields = dataclasses.asdict(options)
    for key, names in oc.STRING_OPTIONS.items():
        fields[key] = names.index(fields[key])  # the C parser's position among the names
    return None, fields


def assert_same_verdict(parser, data: bytes) -> bool:
    c_problem, c_fields = c_parse(parser, data)
    py_problem, py_fields = py_parse(data)
    assert (c_problem is None) == (py_problem is None), (data, c_problem, py_problem)
    if c_problem is None:
        assert c_fields == py_fields
    return c_problem is None


def test_table_names_the_dataclass_fields_and_known_activations():
    from mcu_onebit.converters.quant import ACTIVATIONS

    assert set(KEYS) == {f.name for f in dataclasses.fields(oc.OnebitConvOptions)}
    assert oc.STRING_OPTIONS["activation"] == ACTIVATIONS  # what CalculateActivationRangeQuantized knows


@pytest.mark.parametrize("padding", oc.STRING_OPTIONS["padding"])
@pytest.mark.parametrize("activation", oc.STRING_OPTIONS["activation"])
def test_both_read_what_the_converter_writes(parser, padding, activation):
    data = oc.encode_options(2, 1, 3, oc.DIM_MAX, padding, activation)
    assert c_parse(parser, data)[0] is None
    assert assert_same_verdict(parser, data)


def _with(**changes) -> bytes:
    fields = dataclasses.asdict(oc.OnebitConvOptions())
    fields.update(changes)
    return bytes(flexbuffers.Dumps({k: v for k, v in fields.items() if v is not None}))


# The inputs the fuzzing found read as something else (or out of bounds) by the parser
# before it verified and type-checked: each is refused by both sides now.
REFUSED = {
    "one byte": b"\x00",
    "two bytes": b"\x01\x01",
    "float version": _with(version=1.0),
    "stride 2^32 + 2": _with(stride_h=2**32 + 2),
    "stride as the string '3'": _with(stride_w="3"),
    "stride true": _with(dilation_h=True),
    "stride as a vector": _with(dilation_w=[1, 2]),
    "stride beyond the limit": _with(stride_h=oc.DIM_MAX + 1),
    "stride 0": _with(stride_h=0),
    "padding with a NUL inside": _with(padding="SAME\0x"),
    "padding unknown": _with(padding="FULL"),
    "activation as an int": _with(activation=1),
    "version 2": _with(version=2),
    "version missing": _with(version=None),
    "unknown key": _with(groups=1),
    "not a map": bytes(flexbuffers.Dumps([1, 2, 3])),
}


@pytest.mark.parametrize("name", REFUSED)
def test_crafted_options_are_refused_by_both(parser, name):
    assert not assert_same_verdict(parser, REFUSED[name])


def test_a_key_given_twice_is_refused_by_both(parser):
    builder = flexbuffers.Builder()
    with builder.Map():
        for key, value in dataclasses.asdict(oc.OnebitConvOptions()).items():
            (builder.String if isinstance(value, str) else builder.Int)(key, value)
        builder.Int("stride_h", 1)
    data = bytes(builder.Finish())
    assert not assert_same_verdict(parser, data)


_INT_VALUES = st.one_of(st.integers(-3, 4), st.sampled_from([oc.DIM_MAX, oc.DIM_MAX + 1, 2**31 - 1, 2**31,
                                                             2**32 + 2, 2**63 - 1, -2**63]))


@st.composite
def _values(draw):
    """One FlexBuffer value of any type, written through the Builder's typed methods."""
    kind = draw(st.sampled_from(["int", "uint", "indirect_int", "indirect_uint", "float", "bool", "null",
                                 "string", "blob", "vector", "typed_vector", "map"]))
    if kind in ("int", "indirect_int"):
        value = draw(_INT_VALUES.filter(lambda v: -2**63 <= v < 2**63))
    elif kind in ("uint", "indirect_uint"):
        value = draw(st.one_of(st.integers(0, 4), st.sampled_from([oc.DIM_MAX, 2**32 + 2, 2**64 - 1])))
    elif kind == "float":
        value = draw(st.sampled_from([1.0, 2.0, 0.5, -1.0]))
    elif kind == "bool":
        value = draw(st.booleans())
    elif kind == "string":
        value = draw(st.one_of(st.sampled_from([*oc.PADDINGS, *oc.STRING_OPTIONS["activation"], "3", "", "SAME\0"]),
                               st.text(max_size=6)))
    elif kind == "blob":
        value = draw(st.sampled_from([b"SAME", b"\x01"]))
    else:
        value = draw(st.lists(st.integers(0, 3), max_size=3))
    return kind, value


def _write(builder, key: str, kind: str, value) -> None:
    simple = {"int": builder.Int, "uint": builder.UInt, "indirect_int": builder.IndirectInt,
              "indirect_uint": builder.IndirectUInt, "float": builder.Float, "bool": builder.Bool,
              "string": builder.String, "blob": builder.Blob}
    if kind in simple:
        simple[kind](key, value)
    elif kind == "null":
        builder.Null(key)
    elif kind == "vector":
        with builder.Vector(key):
            for v in value:
                builder.Int(v)
    elif kind == "typed_vector":
        with builder.TypedVector(key):
            for v in value:
                builder.Int(v)
    else:
        with builder.Map(key):
            for i, v in enumerate(value):
                builder.Int(f"k{i}", v)


@st.composite
def option_maps(draw):
    """Maps near the valid ones: each key of the table kept with its right value, dropped,
    or given a value of any type; sometimes an extra key."""
    builder = flexbuffers.Builder()
    valid = dataclasses.asdict(oc.OnebitConvOptions(stride_h=2, dilation_w=3, padding="VALID", activation="RELU6"))
    with builder.Map():
        for key in KEYS:
            choice = draw(st.sampled_from(["keep", "keep", "drop", "change"]))
            if choice == "keep":
                _write(builder, key, "string" if isinstance(valid[key], str) else "int", valid[key])
            elif choice == "change":
                _write(builder, key, *draw(_values()))
        if draw(st.booleans()):
            _write(builder, draw(st.sampled_from(["groups", "Stride_h", "stride_h\x7f"])), *draw(_values()))
    return bytes(builder.Finish())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option_maps())
def test_c_and_python_accept_and_refuse_the_same_option_maps(parser, data):
    assert_same_verdict(parser, data)


OPTIONS_CORPUS = firmware_dir() / "fuzz" / "corpus" / "options"


@pytest.mark.parametrize("name", sorted(p.name for p in OPTIONS_CORPUS.iterdir()))
def test_both_agree_on_the_fuzz_corpus(parser, name):
    """The seeds, and inputs that crashed or were misread before (firmware/fuzz/make_corpus.py)."""
    accepted = assert_same_verdict(parser, (OPTIONS_CORPUS / name).read_bytes())
    assert accepted == name.startswith("seed-")


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_c_and_python_agree_on_damaged_options(parser, seed):
    """Options of the converter with 1 or 2 bytes changed: malformed FlexBuffers among them,
    which Python's verifier (converters/flexverify.py) refuses as the C parser does."""
    rng = np.random.default_rng(seed)
    data = oc.encode_options(*rng.integers(1, 4, 4).tolist(), "VALID", "RELU6")
    assert_same_verdict(parser, fuzzing.mutate(data, rng, most=2))
