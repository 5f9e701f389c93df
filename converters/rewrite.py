"""The int8 twin -> the 1-bit graph: every binary CONV_2D becomes ONEBIT_CONV2D.

A CONV_2D is rewritten when the Keras model marks its layer as binary and its int8
filter is exactly +-127 everywhere (docs/onebit_conv2d.md). The filter tensor keeps
its per-channel quantization and becomes uint8 [cout, kh, kw, ceil(cin/8)], one bit per
weight; input, bias and output tensors are untouched, so the arithmetic is unchanged.
"""

from __future__ import annotations

import re

import numpy as np

from mcu_onebit.cheader import read_defines
from mcu_onebit.errors import OnebitError

from . import tflite_graph as g
from .tflite_graph import schema
from .onebit_conv2d import encode_options, pack_filter

SPEC = read_defines("kernels/onebit_conv2d.h")


def _keras_layer(filter_name: str, binary_layers: list[str]) -> str | None:
    """The Keras layer a conv's filter tensor came from (TF names it .../<layer>[_N]/convolution)."""
    for layer in binary_layers:
        if re.search(rf"(^|/){re.escape(layer)}(_\d+)?/", filter_name):
            return layer
    return None


def rewrite_binary_convs(twin: bytes, binary_layers: list[str]) -> tuple[bytes, list[str]]:
    """Returns the 1-bit graph and the Keras layer names rewritten, in graph order."""
    model = g.load(twin)
    subgraph = model.subgraphs[0]
    rewritten = []
    for op in subgraph.operators:
        if g.op_name(model, op) != "CONV_2D":
            continue
        filt = subgraph.tensors[op.inputs[1]]
        layer = _keras_layer(filt.name.decode(), binary_layers)
        if layer is None:
            continue
        values = g.tensor_data(model, filt)
        if values is None or values.dtype != np.int8 or not np.all(np.abs(values.astype(np.int32)) == 127):
            raise OnebitError(
                f"conv {layer} is binary in Keras but its int8 filter is not all +-127; "
                "the twin was not quantized as expected (report this with the model)"
            )
        opts: schema.Conv2DOptionsT = op.builtinOptions
        packed = pack_filter(values)
        model.buffers[filt.buffer].data = np.frombuffer(packed.tobytes(), np.uint8)
        filt.type = schema.TensorType.UINT8
        filt.shape = np.asarray(packed.shape, np.int32)
        op.opcodeIndex = g.custom_opcode(model, SPEC["ONEBIT_CONV2D_OP_NAME"])
        op.builtinOptionsType = schema.BuiltinOptions.NONE
        op.builtinOptions = None
        op.customOptions = np.frombuffer(encode_options(
            stride_h=opts.strideH, stride_w=opts.strideW,
            dilation_h=opts.dilationHFactor, dilation_w=opts.dilationWFactor,
            padding=g.PADDING_NAMES[opts.padding],
            activation=g.ACTIVATION_NAMES[opts.fusedActivationFunction],
        ), np.uint8)
        op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        rewritten.append(layer)
    if not rewritten:
        raise OnebitError(
            "the model has no binary conv to rewrite (no BinaryConv2D layer reached the graph); "
            "train a 1-bit model with `mcu-onebit train`"
        )
    return g.save(model), rewritten
