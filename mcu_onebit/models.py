"""Network builders. Every conv is a `BinaryConv2D` (the stem and the classifier too,
as in McDonnell 2018); there is no dense layer.

Batch norm: the input BN on the raw 0-255 image learns scale and offset; every other BN
has neither (center=False, scale=False), epsilon 1e-5.
"""

from __future__ import annotations

import re

import keras
from keras import layers

from .errors import OnebitError
from .layers import BinaryConv2D, ZeroChannels

LOGITS = "logits"  # the layer whose output the deployed graph ends with (softmax dropped)
BN_MOMENTUM = 0.9  # moving statistics settle within the few hundred steps a small dataset gives


def _bn(name: str | None = None) -> layers.BatchNormalization:
    return layers.BatchNormalization(center=False, scale=False, epsilon=1e-5, momentum=BN_MOMENTUM, name=name)


def _conv(filters: int, kernel: int, stride: int = 1, name: str | None = None) -> BinaryConv2D:
    return BinaryConv2D(
        filters, kernel, strides=stride, padding="same", name=name,
        kernel_regularizer=keras.regularizers.l2(2.5e-4),  # = weight decay 5e-4 in SGD convention
    )


def _stem(inputs, filters: int):
    x = layers.BatchNormalization(epsilon=1e-5, momentum=BN_MOMENTUM, name="input_bn")(inputs)
    return _conv(filters, 3, name="stem_conv")(x)


def _head(x, num_classes: int):
    x = layers.ReLU()(_bn()(x))
    x = _conv(num_classes, 1, name="classifier_conv")(x)
    x = _bn(name="classifier_bn")(x)
    x = layers.GlobalAveragePooling2D(name=LOGITS)(x)
    return layers.Activation("softmax", name="softmax")(x)


def _block(x, filters: int, stride: int, name: str):
    """Pre-activation block: BN-ReLU-conv, BN-ReLU-conv, plus the shortcut."""
    y = layers.ReLU()(_bn()(x))
    y = _conv(filters, 3, stride, name=f"{name}_conv1")(y)
    y = layers.ReLU()(_bn()(y))
    y = _conv(filters, 3, name=f"{name}_conv2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        # McDonnell: 3x3 stride-2 average pool, channels doubled with zeros (no 1x1 projection).
        shortcut = layers.AveragePooling2D(3, strides=stride, padding="same")(x)
        shortcut = ZeroChannels(filters - x.shape[-1])(shortcut)
    return layers.Add()([y, shortcut])


def tiny_resnet(input_shape, num_classes: int, width: int = 16, blocks: int = 2) -> keras.Model:
    """A small residual net for tiny inputs (8x8 digits): stem, `blocks` blocks, head."""
    inputs = keras.Input(input_shape)
    x = _stem(inputs, width)
    for i in range(blocks):
        x = _block(x, width, 1, name=f"block{i + 1}")
    return keras.Model(inputs, _head(x, num_classes), name="tiny_resnet")


def wrn(input_shape, num_classes: int, depth: int, k: int) -> keras.Model:
    """WRN-depth-k, pre-activation, as in McDonnell 2018."""
    n = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _stem(inputs, 16 * k)
    for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            x = _block(x, width, stride, name=f"stage{stage + 1}_block{b + 1}")
    return keras.Model(inputs, _head(x, num_classes), name=f"wrn_{depth}_{k}")


_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
ARCHS = ("tiny-resnet", "wrn-D-K (D = 6n+2, e.g. wrn-8-1, wrn-14-2, wrn-20-4)")


def build_model(arch: str, input_shape, num_classes: int) -> keras.Model:
    if arch == "tiny-resnet":
        return tiny_resnet(input_shape, num_classes)
    match = _WRN.match(arch)
    if match:
        depth, k = int(match.group(1)), int(match.group(2))
        if depth < 8 or (depth - 2) % 6 or k < 1:
            raise OnebitError(f"--arch {arch}: WRN depth must be 6n+2 >= 8 and width >= 1 (e.g. wrn-20-4)")
        return wrn(input_shape, num_classes, depth, k)
    raise OnebitError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHS)}")
