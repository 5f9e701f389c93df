"""The tensor arena TensorFlow Lite Micro will need for a graph, computed the way TFLM
computes it, so that the converter sizes the TFLM project's arena before any build.

TFLM's arena has two ends (tensorflow/lite/micro/micro_allocator.cc):

- the non-persistent head: every activation tensor and every kernel scratch buffer,
  overlapped in time by GreedyMemoryPlanner. This module reproduces that plan exactly:
  the lifetimes of AllocationInfoBuilder::MarkAllocationLifetimes
  (micro_allocation_info.cc: graph inputs live from scope 0, op i is scope i + 1, graph
  outputs live to the last scope, a scratch buffer lives in its op's scope), the sizes of
  CreatePlan (byte length rounded up to MicroArenaBufferAlignment() = 16), the order
  (offline-planned buffers first, then a stable descending bubble sort by size) and the
  gap search of GreedyMemoryPlanner::CalculateOffsetsIfNeeded
  (memory_planner/greedy_memory_planner.cc), and its result GetMaximumMemorySize().
  Scratch buffers are what each kernel asks for in Prepare with
  RequestScratchBufferInArena (_scratch_requests, per TFLM library in LIBRARIES; in a
  generated project MEAN runs the project's kernel and asks for none, see own_mean).
  tests/test_tflm_planner.py checks the figure byte for byte against the `tflite-micro`
  host interpreter's RecordingMicroAllocator.
- the persistent tail: interpreter and allocator objects, TfLiteEvalTensor and node
  arrays, each op's builtin data and OpData, per-channel requantization, the graph's
  input and output TfLiteTensors. Its size depends on the library version, the kernels
  and the pointer width, so it is an estimate (PERSISTENT_*), fitted to Cortex-M4
  firmware built with both TFLM libraries and run under QEMU (docs/deploy_nano33ble.md,
  "How the TFLM adapter is checked").

The arena a project allocates is TflmPlan.arena_bytes: the larger of the head and the
temporary room TFLM needs while it plans (its AllocationInfo records, 24 B per tensor
and scratch buffer on 32 bits, and the planner's own records, 40 B per planned buffer),
plus ARENA_MARGIN x the tail, rounded up to 1 KiB. The device reports what the interpreter really used (`arena_used_bytes` in
its identity) so the margin can be checked on a board.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import memory_plan
from . import tflite_graph as g
from .onebit_conv2d import OP_NAME

ALIGN = 16  # MicroArenaBufferAlignment()
ONLINE = None  # kOnlinePlannedBuffer
OFFLINE_METADATA = "OfflineMemoryAllocation"

# TFLM libraries whose kernels' scratch requests SCRATCH knows.
LIBRARIES = ("tflm", "arduino")  # current tensorflow/tflite-micro; Arduino_TensorFlowLite (2023-02, CMSIS-NN)

# Persistent tail on a 32-bit target (bytes): fixed objects, then per tensor
# (TfLiteEvalTensor), per op (NodeAndRegistration, builtin data, OpData) and per output
# channel of a conv (multiplier and shift). Fitted, rounded up, to what TFLM really used
# on qemu-m4 (arena_used_bytes minus the exact head), docs/deploy_nano33ble.md: the demo
# tiny-resnet (39 tensors, 17 ops, 90 conv channels) used 3,220 B with current TFLM and
# 3,492 B with the Arduino library; WRN-8-1 (56, 26, 250) 5,684 B with current TFLM.
# This formula gives 3,616 B and 6,032 B.
PERSISTENT_FIXED = 640
PERSISTENT_PER_TENSOR = 16
PERSISTENT_PER_OP = 96
PERSISTENT_PER_CHANNEL = 8
ARENA_MARGIN = 1.25  # on the persistent estimate only; the head is exact


@dataclass(frozen=True)
class Buffer:
    """One entry of TFLM's plan: a tensor or a scratch buffer."""

    kind: str  # "tensor" or "scratch"
    index: int  # tensor index, or the op index of a scratch buffer
    size: int  # bytes, rounded up to ALIGN
    first: int  # allocation scope of the first use (0: before the first op)
    last: int  # allocation scope of the last use
    offline_offset: int | None = ONLINE


@dataclass(frozen=True)
class TflmPlan:
    buffers: list[Buffer]
    offsets: list[int]
    head_bytes: int  # GetMaximumMemorySize(): activations and scratch, overlapped
    persistent_bytes: int  # estimate of the tail (see the module docstring)
    library: str
    planning_bytes: int = 0  # temporary room while TFLM plans (see the module docstring)

    @property
    def arena_bytes(self) -> int:
        """The arena the generated project allocates."""
        total = max(self.head_bytes, self.planning_bytes) + int(ARENA_MARGIN * self.persistent_bytes)
        return (total + 1023) // 1024 * 1024

    def to_dict(self) -> dict:
        return {"library": self.library, "head_bytes": self.head_bytes, "persistent_bytes_estimate": self.persistent_bytes,
                "margin": ARENA_MARGIN,
                "arena_bytes": self.arena_bytes, "scratch_buffers": sum(b.kind == "scratch" for b in self.buffers),
                "scratch_bytes": sum(b.size for b in self.buffers if b.kind == "scratch")}


def _aligned4(n: int) -> int:
    return (n + 3) // 4 * 4


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _nbytes(tensor) -> int:
    return int(np.prod(tensor.shape if tensor.shape is not None else [], dtype=np.int64)) * \
        np.dtype(g.TENSOR_DTYPES[tensor.type]).itemsize


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape if tensor.shape is not None else [], dtype=np.int64))


def onebit_scratch_bytes(k_h: int, k_w: int, in_c: int, kernel_variant: str) -> int:
    """ob_onebit_conv2d_scratch_bytes() of the kernel variant: what the ONEBIT_CONV2D
    adapter requests. The reference needs none; the Cortex-M DSP variant uses
    ONEBIT_CONV2D_SCRATCH_MAX exactly (firmware/kernels/cortex_m_dsp/onebit_conv2d.c)."""
    if kernel_variant == "reference":
        return 0
    return memory_plan.onebit_scratch_bytes(k_h, k_w, in_c)


def _scratch_requests(model, op, name: str, library: str, kernel_variant: str, own_mean: bool) -> list[int]:
    """Bytes of each RequestScratchBufferInArena call the op's Prepare makes, in order."""
    graph = model.subgraphs[0]
    tensors = graph.tensors
    if name == OP_NAME:  # firmware/runtime/tflm/onebit_conv2d_tflm.cc Prepare
        _, in_h, in_w, in_c = (int(d) for d in tensors[op.inputs[0]].shape)
        _, out_h, out_w, _ = (int(d) for d in tensors[op.outputs[0]].shape)
        _, k_h, k_w, packed_depth = (int(d) for d in tensors[op.inputs[1]].shape)
        if in_c % 8:  # the im2col stem: its gathered rows, then its 1x1 conv's scratch (ob_onebit_conv2d_im2col_scratch_bytes)
            depth = -(-k_h * k_w * in_c // 8) * 8
            rows = max(1, min(out_h, in_h * in_w * 8 // (out_w * depth)))
            n = _aligned4(rows * out_w * depth) + _aligned4(onebit_scratch_bytes(1, 1, depth, kernel_variant))
        else:
            n = onebit_scratch_bytes(k_h, k_w, 8 * packed_depth, kernel_variant)
        return [n] if n > 0 else []
    inp = tensors[op.inputs[0]]
    int_io = g.TENSOR_DTYPES[inp.type] in (np.int8, np.int16)
    if name == "MEAN" and own_mean:  # firmware/runtime/tflm/mean_tflm.cc asks for none
        return []
    if name in ("MEAN", "SUM"):
        out_elements = _elements(tensors[op.outputs[0]])
        if library == "arduino":  # reduce_common.cpp of the 2023-02 sync
            return [4 * out_elements] if int_io else []
        # reduce_common.cc PrepareMeanOrSumHelper: accumulator, input iterator, resolved axes
        axes = _elements(tensors[op.inputs[1]])
        return ([4 * out_elements] if int_io else []) + [4 * len(inp.shape), 4 * axes]
    if name in ("REDUCE_MAX", "REDUCE_MIN"):
        return [4 * len(inp.shape), 4 * _elements(tensors[op.inputs[1]])]
    if library == "arduino" and int_io:  # its CMSIS-NN kernels, as built for a core with DSP (M4, M7)
        if name == "CONV_2D":
            _, k_h, k_w, _ = (int(d) for d in tensors[op.inputs[1]].shape)
            opts = op.builtinOptions
            # arm_convolve_wrapper_s8_get_buffer_size: none for the 1x1 fast path (stride 1,
            # so no padding either), else arm_convolve_s8_get_buffer_size's im2col.
            one_by_one = (k_h == k_w == 1 and opts.strideH == opts.strideW == 1
                          and opts.dilationHFactor == opts.dilationWFactor == 1)
            return [] if one_by_one else [2 * 2 * k_h * k_w * int(inp.shape[-1])]
        if name == "AVERAGE_POOL_2D":
            return [4 * int(inp.shape[-1])]  # arm_avgpool_s8_get_buffer_size with DSP
    return []


def _offline_offsets(model) -> list[int] | None:
    """The OfflineMemoryAllocation metadata (one offset per tensor, -1 for online), if any."""
    for meta in model.metadata or []:
        name = meta.name.decode() if isinstance(meta.name, bytes) else meta.name
        if name == OFFLINE_METADATA:
            raw = np.asarray(model.buffers[meta.buffer].data, dtype=np.uint8).tobytes()
            words = np.frombuffer(raw, dtype="<i4")
            return [int(v) for v in words[3:3 + int(words[2])]]
    return None


def requirements(model, library: str = "tflm", kernel_variant: str = "reference", own_mean: bool = False) -> list[Buffer]:
    """Every buffer TFLM plans, in its order: tensors by index, then scratch buffers in
    request order (ops are prepared in graph order). own_mean: MEAN runs the project's
    kernel (as in generated projects), not the library's."""
    if library not in LIBRARIES:
        raise ValueError(f"unknown TFLM library {library!r}; one of {LIBRARIES}")
    if len(model.subgraphs) != 1:
        raise ValueError("the TFLM planner here handles graphs with one subgraph")
    graph = model.subgraphs[0]
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in graph.inputs:  # created and used at scope 0
        first.setdefault(int(t), 0)
        last[int(t)] = 0
    scratch: list[Buffer] = []
    for i, op in enumerate(graph.operators):
        scope = i + 1
        for t in op.outputs:
            first.setdefault(int(t), scope)
        for t in op.inputs:
            if t >= 0:
                last[int(t)] = scope
        for t in op.outputs:
            last[int(t)] = scope
        for n in _scratch_requests(model, op, g.op_name(model, op), library, kernel_variant, own_mean):
            scratch.append(Buffer("scratch", i, _aligned(n), scope, scope))
    end = len(graph.operators)
    for t in graph.outputs:
        first.setdefault(int(t), end)
        last[int(t)] = end
    offline = _offline_offsets(model)
    buffers = []
    for t, tensor in enumerate(graph.tensors):
        offset = offline[t] if offline is not None and offline[t] != -1 else ONLINE
        constant = g.tensor_data(model, tensor) is not None
        needs = (not constant and not tensor.isVariable and _nbytes(tensor) != 0) or \
            (tensor.isVariable and offset is not ONLINE)
        if needs:  # a tensor no op touches keeps TFLM's uninitialized lifetime, -1
            buffers.append(Buffer("tensor", t, _aligned(_nbytes(tensor)), first.get(t, -1), last.get(t, -1), offset))
    return buffers + scratch


def greedy_offsets(buffers: list[Buffer]) -> list[int]:
    """GreedyMemoryPlanner::CalculateOffsetsIfNeeded, step for step."""
    count = len(buffers)
    if count == 0:
        return []
    offsets = [-1] * count
    ids = [i for i, b in enumerate(buffers) if b.offline_offset is not ONLINE]
    for i in ids:
        offsets[i] = buffers[i].offline_offset
    online = [i for i in range(count) if buffers[i].offline_offset is ONLINE]
    online.reverse()  # filled from the tail of buffer_ids_sorted_
    sizes = [buffers[i].size for i in online]
    # ReverseSortInPlace: a stable bubble sort, largest first.
    swapped = True
    while swapped:
        swapped = False
        for k in range(1, len(sizes)):
            if sizes[k - 1] < sizes[k]:
                sizes[k - 1], sizes[k] = sizes[k], sizes[k - 1]
                online[k - 1], online[k] = online[k], online[k - 1]
                swapped = True
    order = ids + online

    # The offset-ordered list of placed buffers: entries [offset, buffer id, next entry].
    entries: list[list[int]] = []
    first_id = order[0]
    if buffers[first_id].offline_offset is ONLINE:
        offsets[first_id] = 0
    entries.append([offsets[first_id], first_id, -1])
    head = 0

    def overlaps(entry, b: Buffer) -> bool:
        other = buffers[entry[1]]
        return not (other.first > b.last or b.first > other.last)

    def next_active(start: int | None, b: Buffer) -> int | None:
        candidate = head if start is None else entries[start][2]
        while candidate != -1:
            if overlaps(entries[candidate], b):
                return candidate
            candidate = entries[candidate][2]
        return None

    for buffer_id in order[1:]:
        wanted = buffers[buffer_id]
        candidate_offset = 0
        if wanted.offline_offset is ONLINE:
            prior = None
            while True:
                nxt = next_active(prior, wanted)
                if prior is not None:
                    end = entries[prior][0] + buffers[entries[prior][1]].size
                    candidate_offset = max(candidate_offset, end)
                if nxt is None or entries[nxt][0] - candidate_offset >= wanted.size:
                    break
                prior = nxt
        else:
            candidate_offset = wanted.offline_offset
        offsets[buffer_id] = candidate_offset
        new = len(entries)
        entries.append([candidate_offset, buffer_id, -1])
        if entries[head][0] > candidate_offset:
            entries[new][2] = head
            head = new
        else:
            current = head
            while True:
                nxt = entries[current][2]
                if nxt == -1:
                    entries[current][2] = new
                    break
                if entries[nxt][0] > candidate_offset:
                    entries[new][2] = nxt
                    entries[current][2] = new
                    break
                current = nxt
    return offsets


def persistent_estimate(model) -> int:
    graph = model.subgraphs[0]
    channels = sum(int(graph.tensors[op.outputs[0]].shape[-1]) for op in graph.operators
                   if g.op_name(model, op) in ("CONV_2D", "DEPTHWISE_CONV_2D", OP_NAME))
    return (PERSISTENT_FIXED + PERSISTENT_PER_TENSOR * len(graph.tensors) + PERSISTENT_PER_OP * len(graph.operators)
            + PERSISTENT_PER_CHANNEL * channels)


def plan(model, library: str = "tflm", kernel_variant: str = "reference", own_mean: bool = False) -> TflmPlan:
    """TFLM's plan for `model` (a tflite_graph model) with `library`'s kernels; the
    ONEBIT_CONV2D adapter's scratch follows the board's `kernel_variant`; own_mean as in
    requirements()."""
    buffers = requirements(model, library, kernel_variant, own_mean)
    offsets = greedy_offsets(buffers)
    head = max((off + b.size for b, off in zip(buffers, offsets)), default=0)
    scratch = sum(b.kind == "scratch" for b in buffers)
    planning = 24 * (len(model.subgraphs[0].tensors) + scratch) + 40 * len(buffers)
    return TflmPlan(buffers, offsets, head, persistent_estimate(model), library, planning)


def library_of(board) -> str:
    """Which TFLM library a board's project links (its pinned lib_deps)."""
    deps = " ".join(getattr(board, "pio_lib_deps", ()) or ())
    return "arduino" if "tflite-micro-arduino-examples" in deps else "tflm"
