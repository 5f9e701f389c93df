"""Activation memory plan for the static runtime: one arena, offsets fixed at convert time.

Greedy by size (largest first, each placed at the lowest offset that does not overlap a
buffer alive at the same time), the strategy of TFLM's GreedyMemoryPlanner. A buffer is
an activation tensor or the scratch memory of one op (alive during that op only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcu_onebit.cheader import read_defines

ALIGN = 16


@dataclass(frozen=True)
class Buffer:
    tensor: int  # tensor index; for scratch, the index of the op that uses it
    size: int
    first_op: int  # index of the op that writes it
    last_op: int  # index of the last op that reads it
    scratch: bool = False


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[int, int]  # tensor index -> byte offset in the arena
    arena_bytes: int
    scratch_offsets: dict[int, int] = field(default_factory=dict)  # op index -> byte offset
    scratch_bytes: int = 0  # the largest scratch buffer (0: no op uses scratch)


def onebit_scratch_bytes(k_h: int, k_w: int, in_c: int) -> int:
    """ONEBIT_CONV2D_SCRATCH_MAX: the scratch any kernel variant may use for the shape."""
    per_byte = read_defines("kernels/onebit_conv2d.h")["ONEBIT_CONV2D_SCRATCH_PER_BYTE"]
    return per_byte * k_h * k_w * (in_c // 8)


def aligned(n: int) -> int:
    """n rounded up to the arena's alignment."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(buffers: list[Buffer]) -> MemoryPlan:
    placed: list[tuple[Buffer, int]] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first_op)):
        live = sorted(
            (off, off + aligned(other.size))
            for other, off in placed
            if not (other.last_op < buf.first_op or buf.last_op < other.first_op)
        )
        offset = 0
        for start, end in live:
            if offset + buf.size <= start:
                break
            offset = max(offset, end)
        placed.append((buf, offset))
    offsets = {buf.tensor: off for buf, off in placed if not buf.scratch}
    scratch_offsets = {buf.tensor: off for buf, off in placed if buf.scratch}
    arena = max((off + aligned(buf.size) for buf, off in placed), default=0)
    scratch_bytes = max((buf.size for buf in buffers if buf.scratch), default=0)
    return MemoryPlan(offsets, arena, scratch_offsets, scratch_bytes)
