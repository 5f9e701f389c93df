"""Keras layers for 1-bit-per-weight networks (McDonnell, ICLR 2018).

Use `BinaryConv2D` wherever a `Conv2D` would go: it keeps full-precision latent
weights for training and deploys `sign(w) * sqrt(2 / (kh * kw * cin))`.
"""

from __future__ import annotations

import math

from .native import keras as _load_keras

keras = _load_keras()  # quietly, before the names below are bound
from keras import ops  # noqa: E402


def binarize(w, scale: float):
    """Forward: `scale * sign(w)` with `sign(0) = +1`. Gradient: identity (straight-through,
    no clipping) to the latent weights `w`, as in McDonnell 2018, section 2.1.

    Written `deployed + (w - stop_gradient(w))` rather than `w + stop_gradient(deployed - w)`:
    `w - w` is exactly 0 in floating point, so the forward values are exactly +-scale (the
    other form is off by an ulp for most w). Only `keras.ops`: any Keras 3 backend."""
    deployed = ops.where(w >= 0, scale, -scale)
    return ops.stop_gradient(deployed) + (w - ops.stop_gradient(w))


def he_scale(kernel_h: int, kernel_w: int, in_channels: int) -> float:
    """The fixed, unlearned per-layer magnitude: the He-init std sqrt(2 / fan_in)."""
    return math.sqrt(2.0 / (kernel_h * kernel_w * in_channels))


@keras.saving.register_keras_serializable(package="mcu_onebit")
class BinaryConv2D(keras.layers.Conv2D):
    """Conv2D whose deployed kernel is `binarize(kernel, he_scale(...))`; no bias."""

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs["use_bias"] = False
        kwargs.setdefault("kernel_initializer", "he_normal")
        super().__init__(filters, kernel_size, **kwargs)

    @property
    def scale(self) -> float:
        kh, kw, cin, _ = self.kernel.shape
        return he_scale(kh, kw, cin)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, binarize(kernel, self.scale))

    def deployed_kernel(self):
        """The weights the network computes with (the forward value of `binarize`), as numpy."""
        return ops.convert_to_numpy(binarize(self.kernel, self.scale)).astype("float32")


@keras.saving.register_keras_serializable(package="mcu_onebit")
class ZeroChannels(keras.layers.Layer):
    """Appends `extra` all-zero channels: the WRN shortcut's channel doubling."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, inputs):
        return ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


def shifted_relu(x, floor: float = -1.0):
    """Forward: `max(x, floor)`, floor -1 by default (McDonnell, Mostafa, Wang, van Schaik 2019,
    "Single-bit-per-weight deep convolutional neural networks without batch-normalization
    layers"): the shift keeps a zero-mean-ish signal without batch norm. Gradient: 1 where
    `x > floor`, 0 where `x < floor` (the ReLU's, shifted).

    TF's converter emits one MAXIMUM against a constant for it (no fused activation exists
    for a floor of -1 alone)."""
    return ops.maximum(x, floor)


@keras.saving.register_keras_serializable(package="mcu_onebit")
class ShiftedReLU(keras.layers.Layer):
    """`shifted_relu(x, floor)`: the activation before every conv but the first (2019 recipe)."""

    def __init__(self, floor: float = -1.0, **kwargs):
        super().__init__(**kwargs)
        self.floor = float(floor)

    def call(self, inputs):
        return shifted_relu(inputs, self.floor)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "floor": self.floor}


def temperature(x, t: float):
    """Forward: `x / t`; gradient `1 / t`. The 2019 recipe divides the classifier's output by
    t = 40 before global average pooling, in place of the final batch norm's scaling: the
    logits stay small enough for the softmax to train. TF's converter folds the constant
    into the preceding conv's (per-channel) weight scale."""
    return ops.multiply(x, 1.0 / t)


@keras.saving.register_keras_serializable(package="mcu_onebit")
class Temperature(keras.layers.Layer):
    """`temperature(x, t)`: divides by a fixed, unlearned temperature."""

    def __init__(self, t: float = 40.0, **kwargs):
        super().__init__(**kwargs)
        self.t = float(t)

    def call(self, inputs):
        return temperature(inputs, self.t)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "t": self.t}
