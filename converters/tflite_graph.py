"""Reading and writing `.tflite` flatbuffers with TF's own schema bindings (object API)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema  # the same schema as TF's, without loading TensorFlow

from mcu_onebit.errors import OnebitError

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
    """The object tree of a `.tflite`; `source` names the file in the error."""
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:
        raise OnebitError(f"{source or 'the graph'} is not a readable .tflite flatbuffer ({type(exc).__name__}); "
                          "re-run `mcu-onebit convert`") from None


def save(model: schema.ModelT) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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
