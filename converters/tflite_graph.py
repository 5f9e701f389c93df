"""Reading and writing `.tflite` flatbuffers with TF's own schema bindings (object API).

`load` is where a file's bytes become structures: it checks once that the graph holds
together (every index in range, dtypes, shapes and buffer sizes consistent, names UTF-8,
each operator the toolkit reads with the inputs and options it reads), so that the rest of
the converter can trust the tree, and a user sees one OnebitError line for a bad file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema  # the same schema as TF's, without loading TensorFlow

from mcu_onebit.errors import OnebitError

from .onebit_conv2d import DIM_MAX, OP_NAME, decode_options

BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TENSOR_DTYPES = {
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.FLOAT32: np.float32,
}
PADDING_NAMES = {schema.Padding.SAME: "SAME", schema.Padding.VALID: "VALID"}
ACTIVATION_NAMES = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}


def load(data: bytes, source: str | None = None) -> schema.ModelT:
    """The object tree of a `.tflite`, checked (see the module docstring); `source` names
    the file in the error."""
    where = source or "the graph"
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # the generated reader raises assorted errors on garbage
        raise OnebitError(f"{where} is not a readable .tflite flatbuffer ({type(exc).__name__}); "
                          "re-run `mcu-onebit convert`") from None
    try:
        _check_model(model)
    except _Inconsistent as exc:
        raise OnebitError(f"{where} is not a consistent .tflite graph: {exc}; re-run `mcu-onebit convert`") from None
    return model


class _Inconsistent(Exception):
    """What _check_model found wrong, in words."""


# The operators whose inputs or options the toolkit reads: (fewest inputs, most inputs,
# the options type it reads, or None), and whether input 1 is a constant 4-D filter.
_OPERATORS = {
    "CONV_2D": (2, 3, schema.Conv2DOptionsT, True),
    "DEPTHWISE_CONV_2D": (2, 3, schema.DepthwiseConv2DOptionsT, True),
    "FULLY_CONNECTED": (2, 3, None, False),
    "ADD": (2, 2, schema.AddOptionsT, False),
    "MUL": (2, 2, schema.MulOptionsT, False),
    "MAXIMUM": (2, 2, None, False),
    "MEAN": (2, 2, None, False),
    "SUM": (2, 2, None, False),
    "REDUCE_MAX": (2, 2, None, False),
    "REDUCE_MIN": (2, 2, None, False),
    "PAD": (2, 2, None, False),
    "AVERAGE_POOL_2D": (1, 1, schema.Pool2DOptionsT, False),
}
_MAX_BYTES = 2**31 - 1  # no tensor of a microcontroller graph is larger


def _listed(values) -> list:
    """A vector of the object API (a numpy array, a list, or None when absent) as a list."""
    return [] if values is None else list(values)


def _text(raw, what: str) -> str:
    try:
        return raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw or "")
    except UnicodeDecodeError:
        raise _Inconsistent(f"{what} is not UTF-8") from None


def _index(value, count: int, what: str, optional: bool = False) -> int:
    value = int(value)
    if not (0 <= value < count or (optional and value == -1)):
        raise _Inconsistent(f"{what} is {value}, outside 0..{count - 1}")
    return value


def _check_tensor(model: schema.ModelT, tensor: schema.TensorT, what: str) -> None:
    name = _text(tensor.name, f"the name of {what}")
    what = f"{what} ({name})"
    if tensor.type not in TENSOR_DTYPES:
        raise _Inconsistent(f"{what} has type {tensor.type}, not one of the int8 graph's types")
    tensor.shape = [int(d) for d in _listed(tensor.shape)]
    if any(d < 0 for d in tensor.shape):
        raise _Inconsistent(f"{what} has shape {tensor.shape}")
    size = np.dtype(TENSOR_DTYPES[tensor.type]).itemsize
    for d in tensor.shape:
        size *= d
    if size > _MAX_BYTES:
        raise _Inconsistent(f"{what} has shape {tensor.shape}, larger than any microcontroller's memory")
    buffer = model.buffers[_index(tensor.buffer, len(model.buffers), f"the buffer of {what}")]
    stored = 0 if buffer.data is None else len(buffer.data)
    if stored not in (0, size):
        raise _Inconsistent(f"{what} holds {stored} bytes, its shape {tensor.shape} needs {size}")
    q = tensor.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        zero_points = _listed(q.zeroPoint)
        if len(zero_points) != len(q.scale):
            raise _Inconsistent(f"{what} has {len(q.scale)} scales and {len(zero_points)} zero points")
        with np.errstate(invalid="ignore"):  # a signalling NaN among the bytes is refused quietly
            scales = np.asarray(q.scale, np.float64)
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise _Inconsistent(f"{what} has a scale that is not a positive number")
        if len(q.scale) > 1:
            axis = int(q.quantizedDimension)
            if not 0 <= axis < len(tensor.shape) or tensor.shape[axis] != len(q.scale):
                raise _Inconsistent(f"{what} has {len(q.scale)} scales along axis {axis} of shape {tensor.shape}")
        kind = TENSOR_DTYPES[tensor.type]
        if kind in (np.int8, np.uint8):
            low, high = np.iinfo(kind).min, np.iinfo(kind).max
            if any(not low <= int(z) <= high for z in zero_points):
                raise _Inconsistent(f"{what} has a zero point outside {np.dtype(kind).name}")


def _check_operator(model: schema.ModelT, graph: schema.SubGraphT, op: schema.OperatorT, what: str) -> None:
    from .channel_table import ENTRIES as TABLE_ENTRIES, OP_NAME as TABLE_OP_NAME  # it reads graphs through here

    _index(op.opcodeIndex, len(model.operatorCodes), f"the opcode of {what}")
    inputs = [int(t) for t in _listed(op.inputs)]
    outputs = [int(t) for t in _listed(op.outputs)]
    op.inputs, op.outputs = inputs, outputs
    for t in inputs:
        _index(t, len(graph.tensors), f"an input of {what}", optional=True)
    for t in outputs:
        _index(t, len(graph.tensors), f"an output of {what}")
    name = op_name(model, op)
    what = f"{what} ({name})"
    if not outputs:
        raise _Inconsistent(f"{what} has no output")
    if name == TABLE_OP_NAME:
        fewest, most, options_type, filtered = 2, 2, None, False
        if len(inputs) == 2 and min(inputs) >= 0:
            x, table, out = graph.tensors[inputs[0]], graph.tensors[inputs[1]], graph.tensors[outputs[0]]
            if (x.type != schema.TensorType.INT8 or out.type != schema.TensorType.INT8 or list(x.shape) != list(out.shape)
                    or not out.shape or table.type != schema.TensorType.INT8 or tensor_data(model, table) is None
                    or list(table.shape) != [out.shape[-1], TABLE_ENTRIES]):
                raise _Inconsistent(f"{what} needs an int8 input and output of one shape [..., C] and a constant "
                                    f"int8 table [C, {TABLE_ENTRIES}]")
    elif name == OP_NAME:
        fewest, most, options_type, filtered = 2, 3, None, True
        try:
            decode_options(bytes(np.asarray(op.customOptions if op.customOptions is not None else [], np.uint8)))
        except ValueError as exc:
            raise _Inconsistent(f"{what}: {exc}") from None
    else:
        fewest, most, options_type, filtered = _OPERATORS.get(name, (0, len(inputs), None, False))
    if not fewest <= len(inputs) <= most or any(t < 0 for t in inputs[:fewest]):
        raise _Inconsistent(f"{what} has inputs {inputs}; it takes {fewest} to {most}")
    if options_type is not None:
        o = op.builtinOptions
        if not isinstance(o, options_type):
            raise _Inconsistent(f"{what} lacks its {options_type.__name__[:-1]}")
        if getattr(o, "fusedActivationFunction", schema.ActivationFunctionType.NONE) not in ACTIVATION_NAMES:
            raise _Inconsistent(f"{what} has an unknown fused activation")
        if getattr(o, "padding", schema.Padding.SAME) not in PADDING_NAMES:
            raise _Inconsistent(f"{what} has an unknown padding")
        for field in ("strideH", "strideW", "dilationHFactor", "dilationWFactor", "filterHeight", "filterWidth"):
            if hasattr(o, field) and not 1 <= getattr(o, field) <= DIM_MAX:  # the kernels' limit
                raise _Inconsistent(f"{what} has {field} {getattr(o, field)}")
    if filtered:
        filt = graph.tensors[inputs[1]]
        if len(graph.tensors[inputs[0]].shape) != 4 or len(filt.shape) != 4 or \
                len(graph.tensors[outputs[0]].shape) != 4 or tensor_data(model, filt) is None:
            raise _Inconsistent(f"{what} needs a 4-D input and output and a constant 4-D filter")


def _check_model(model: schema.ModelT) -> None:
    from .tflm_planner import OFFLINE_METADATA

    model.buffers = _listed(model.buffers)
    model.operatorCodes = _listed(model.operatorCodes)
    if not model.subgraphs:
        raise _Inconsistent("it has no subgraph")
    for i, code in enumerate(model.operatorCodes):
        if code.customCode is not None:
            _text(code.customCode, f"the name of custom operator {i}")
        elif max(code.builtinCode, code.deprecatedBuiltinCode) not in BUILTIN_NAMES:
            raise _Inconsistent(f"operator code {i} names no TFLite builtin")
    for s, graph in enumerate(model.subgraphs):
        graph.tensors = _listed(graph.tensors)
        graph.operators = _listed(graph.operators)
        for t, tensor in enumerate(graph.tensors):
            _check_tensor(model, tensor, f"tensor {t}")
        graph.inputs = [_index(t, len(graph.tensors), f"an input of subgraph {s}") for t in _listed(graph.inputs)]
        graph.outputs = [_index(t, len(graph.tensors), f"an output of subgraph {s}") for t in _listed(graph.outputs)]
        if not graph.inputs or not graph.outputs:
            raise _Inconsistent(f"subgraph {s} has no input or no output")
        for i, op in enumerate(graph.operators):
            _check_operator(model, graph, op, f"operator {i}")
    for meta in model.metadata or []:
        name = _text(meta.name, "a metadata name")
        buffer = model.buffers[_index(meta.buffer, len(model.buffers), f"the buffer of metadata {name}")]
        if name == OFFLINE_METADATA:
            words = len(buffer.data) // 4 if buffer.data is not None else 0
            count = int(np.frombuffer(np.asarray(buffer.data[8:12], np.uint8).tobytes(), "<i4")[0]) if words >= 3 else -1
            if count != len(model.subgraphs[0].tensors) or words < 3 + count:
                raise _Inconsistent(f"its {OFFLINE_METADATA} does not give one offset per tensor")


def save(model: schema.ModelT) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def custom_opcode(model: schema.ModelT, name: str) -> int:
    """The index of custom operator `name` among the model's operator codes, added if absent."""
    encoded = name.encode()
    for index, code in enumerate(model.operatorCodes):
        if code.customCode == encoded:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = encoded
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def drop_unused(model: schema.ModelT) -> None:
    """Removes the tensors no operator or graph input or output uses, then the buffers no
    tensor or metadata uses (buffer 0, the empty one, stays), renumbering the references:
    after a rewrite replaced ops, their constants would cost flash for nothing."""
    graph = model.subgraphs[0]
    used = sorted({int(t) for op in graph.operators for t in (*op.inputs, *op.outputs) if t >= 0}
                  | {int(t) for t in (*graph.inputs, *graph.outputs)})
    tensor_index = {old: new for new, old in enumerate(used)}
    graph.tensors = [graph.tensors[t] for t in used]
    for op in graph.operators:
        op.inputs = [tensor_index[int(t)] if t >= 0 else -1 for t in op.inputs]
        op.outputs = [tensor_index[int(t)] for t in op.outputs]
    graph.inputs = [tensor_index[int(t)] for t in graph.inputs]
    graph.outputs = [tensor_index[int(t)] for t in graph.outputs]
    for signature in model.signatureDefs or []:
        for entry in (*(signature.inputs or []), *(signature.outputs or [])):
            entry.tensorIndex = tensor_index[int(entry.tensorIndex)]
    metadata_buffers = [int(b) for b in _listed(model.metadataBuffer)]
    kept = sorted({0} | {int(t.buffer) for sub in model.subgraphs for t in sub.tensors}
                  | {int(m.buffer) for m in model.metadata or []} | set(metadata_buffers))
    buffer_index = {old: new for new, old in enumerate(kept)}
    model.buffers = [model.buffers[b] for b in kept]
    for sub in model.subgraphs:
        for t in sub.tensors:
            t.buffer = buffer_index[int(t.buffer)]
    for m in model.metadata or []:
        m.buffer = buffer_index[int(m.buffer)]
    if metadata_buffers:
        model.metadataBuffer = [buffer_index[b] for b in metadata_buffers]


def op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode()
    return BUILTIN_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)]


def tensor_data(model: schema.ModelT, tensor: schema.TensorT) -> np.ndarray | None:
    """The constant contents of a tensor, shaped, or None for an activation tensor."""
    buffer = model.buffers[tensor.buffer]
    if buffer.data is None or len(buffer.data) == 0:
        return None
    raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype=TENSOR_DTYPES[tensor.type]).reshape(list(tensor.shape))


@dataclass(frozen=True)
class Quant:
    scale: np.ndarray  # float32, one per tensor or per channel
    zero_point: np.ndarray  # int64
    axis: int

    @property
    def per_tensor(self) -> tuple[float, int]:
        return float(self.scale[0]), int(self.zero_point[0])


def quant(tensor: schema.TensorT) -> Quant:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        raise OnebitError(f"tensor {tensor.name.decode()} is not quantized; the graph must be full-integer int8")
    return Quant(np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64), int(q.quantizedDimension))
