"""FlexBuffers' verifier (flexbuffers::Verifier of flatbuffers/flexbuffers.h, 2.0.8 as
Debian ships it), step for step, so that Python refuses exactly the bytes the C options
parser (firmware/runtime/tflm/onebit_conv2d_options.cc) refuses before it reads them:
Python's flexbuffers reader checks nothing (a negative offset wraps to the buffer's end).
It keeps the C verifier's one leniency, a key passes if any byte after it is non-zero,
since the C parser then bounds the keys it reads itself, as decode_options does."""

from __future__ import annotations

from flatbuffers.flexbuffers import Type

_MAX_DEPTH = 64  # the Verifier's default max_depth
_SIZE_MAX = 2**64 - 1
_FIXED = {Type.VECTOR_INT2, Type.VECTOR_UINT2, Type.VECTOR_FLOAT2, Type.VECTOR_INT3, Type.VECTOR_UINT3,
          Type.VECTOR_FLOAT3, Type.VECTOR_INT4, Type.VECTOR_UINT4, Type.VECTOR_FLOAT4}
_TYPED = {Type.VECTOR_INT: Type.INT, Type.VECTOR_BOOL: Type.UINT, Type.VECTOR_UINT: Type.UINT,
          Type.VECTOR_FLOAT: Type.FLOAT, Type.VECTOR_KEY: Type.KEY, Type.VECTOR_STRING_DEPRECATED: Type.KEY,
          Type.BLOB: Type.UINT}


class _Verifier:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)
        self.depth = 0
        self.vectors = 0

    def uint(self, at: int, width: int) -> int:
        raw = self.buf[at:at + width]
        if at < 0 or len(raw) != width:
            raise IndexError  # never for verified references: the C verifier reads in bounds
        return int.from_bytes(raw, "little")

    def within(self, at: int, length: int) -> bool:  # VerifyFrom
        return length < self.size and at <= self.size - length

    def ref(self, data: int, parent_width: int, byte_width: int, type_: int) -> bool:  # VerifyRef
        try:
            type_ = Type(type_)  # FBT_MAX_TYPE bounds it in C; the gaps in 27..35 fail there too
        except ValueError:
            return False
        if type_ in (Type.NULL, Type.INT, Type.UINT, Type.FLOAT, Type.BOOL):
            return True
        offset = self.uint(data, parent_width)
        if not (offset <= self.size and offset <= data):
            return False
        p = data - offset
        if p % byte_width:
            return False
        if type_ in (Type.INDIRECT_INT, Type.INDIRECT_UINT, Type.INDIRECT_FLOAT):
            return self.within(p, byte_width)
        if type_ is Type.KEY:
            return any(self.buf[p:])  # flexbuffers 2.0.8's VerifyKey, as written
        if type_ is Type.MAP:
            return self.vector(p, byte_width, type_, Type.NULL) and self.keys(p, byte_width)
        if type_ is Type.VECTOR:
            return self.vector(p, byte_width, type_, Type.NULL)
        if type_ in _TYPED:
            return self.vector(p, byte_width, type_, _TYPED[type_])
        if type_ is Type.STRING:
            return (self.vector(p, byte_width, type_, Type.UINT)
                    and self.within(p, self.uint(p - byte_width, byte_width) + 1))
        if type_ in _FIXED:
            length = (type_ - Type.VECTOR_INT2) // 3 + 2
            return self.within(p, byte_width * length)
        return False

    def vector(self, p: int, byte_width: int, type_: Type, element: Type) -> bool:  # VerifyVector
        self.depth += 1
        self.vectors += 1
        if self.depth > _MAX_DEPTH or self.vectors > self.size or byte_width > p:
            return False
        count = self.uint(p - byte_width, byte_width)
        element_width = 1 if type_ in (Type.STRING, Type.BLOB) else byte_width
        if not count < _SIZE_MAX // element_width:
            return False
        byte_size = count * element_width
        if not self.within(p, byte_size):
            return False
        if element is Type.NULL:
            if not self.within(p + byte_size, count):
                return False
            for i in range(count):
                packed = self.buf[p + byte_size + i]
                if not self.ref(p + i * byte_width, byte_width, 1 << (packed & 3), packed >> 2):
                    return False
        elif element is Type.KEY:
            for i in range(count):
                if not self.ref(p + i * element_width, element_width, 1, Type.KEY):
                    return False
        self.depth -= 1
        return True

    def keys(self, p: int, byte_width: int) -> bool:  # VerifyKeys
        if byte_width * 3 > p:
            return False
        p -= byte_width * 3
        offset = self.uint(p, byte_width)
        if not (offset <= self.size and offset <= p):
            return False
        key_width = self.uint(p + byte_width, byte_width) & 0xFF
        if key_width not in (1, 2, 4, 8):
            return False
        return self.vector(p - offset, key_width, Type.VECTOR_KEY, Type.KEY)


def verify(buf: bytes) -> bool:
    """flexbuffers::VerifyBuffer(buf, len(buf)): whether every offset, size and type the
    bytes hold lies within them."""
    if len(buf) < 3:
        return False
    byte_width, packed = buf[-1], buf[-2]
    end = len(buf) - 2
    if byte_width not in (1, 2, 4, 8) or end < byte_width:
        return False
    return _Verifier(buf).ref(end - byte_width, byte_width, 1 << (packed & 3), packed >> 2)
