"""Activation memory plan for the static runtime: one arena, offsets fixed at convert time.

Greedy by size (largest first, each placed at the lowest offset that does not overlap a
tensor alive at the same time), the strategy of TFLM's GreedyMemoryPlanner.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 16


@dataclass(frozen=True)
class Buffer:
    tensor: int
    size: int
    first_op: int  # index of the op that writes it
    last_op: int  # index of the last op that reads it


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[int, int]  # tensor index -> byte offset in the arena
    arena_bytes: int


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(buffers: list[Buffer]) -> MemoryPlan:
    placed: list[tuple[Buffer, int]] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first_op)):
        live = sorted(
            (off, off + _aligned(other.size))
            for other, off in placed
            if not (other.last_op < buf.first_op or buf.last_op < other.first_op)
        )
        offset = 0
        for start, end in live:
            if offset + buf.size <= start:
                break
            offset = max(offset, end)
        placed.append((buf, offset))
    offsets = {buf.tensor: off for buf, off in placed}
    arena = max((off + _aligned(buf.size) for buf, off in placed), default=0)
    return MemoryPlan(offsets, arena)
