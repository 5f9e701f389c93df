"""Keras model -> the int8 twin: a standard full-integer `.tflite` made by TF's converter.

The model is first cloned for inference with plain `Conv2D` layers holding the
materialized binary weights `sign(w) * scale` and without the final softmax. Only then
does TF's converter fold each batch norm that follows a conv, fuse activations and give
every binary filter the int8 values +-127 with one scale per output channel (see
../shared/docs/environment.md). The softmax is dropped: the device returns int8 logits
and argmax is unchanged.
"""

from __future__ import annotations

import numpy as np

from mcu_onebit.errors import OnebitError
from mcu_onebit.layers import BinaryConv2D
from mcu_onebit.models import LOGITS
from mcu_onebit.native import held_output, tensorflow

CALIBRATION_SAMPLES = 256  # training images, first N in the dataset's fixed order


# Keras layers the converter and both runtimes handle (by class name).
SUPPORTED_LAYERS = {
    "InputLayer", "BinaryConv2D", "BatchNormalization", "ReLU", "Add", "AveragePooling2D",
    "GlobalAveragePooling2D", "ZeroChannels", "Activation", "ShiftedReLU", "Temperature",
}


def check_layers(model, allow_float: bool = False) -> None:
    """Refuse, naming them, layers the runtimes cannot run and float convs unless allowed."""
    unsupported = [f"{l.name} ({type(l).__name__})" for l in model.layers
                   if type(l).__name__ not in SUPPORTED_LAYERS | ({"Conv2D"} if allow_float else set())]
    floats = [l.name for l in model.layers if type(l).__name__ == "Conv2D"]
    if floats and not allow_float:
        raise OnebitError(
            f"the model has full-precision conv layers ({', '.join(floats)}), which would stay int8 in the graph; "
            "pass --allow-float to accept that, or train with 1-bit convs"
        )
    if unsupported:
        raise OnebitError(
            f"mcu-onebit cannot convert layers {', '.join(unsupported)}; "
            f"supported: {', '.join(sorted(SUPPORTED_LAYERS))}"
        )


def inference_clone(model):
    """The model with binary convs as plain Conv2D holding deployed weights, ending at LOGITS."""
    import keras

    def clone_layer(layer):
        if isinstance(layer, BinaryConv2D):
            config = layer.get_config()
            config.pop("kernel_regularizer", None)
            return keras.layers.Conv2D.from_config({**config, "use_bias": False})
        return layer.__class__.from_config(layer.get_config())

    try:
        logits = model.get_layer(LOGITS)
    except ValueError:
        raise OnebitError(f"the model has no layer named {LOGITS!r}; train it with `mcu-onebit train`") from None
    trunk = keras.Model(model.inputs, logits.output)
    clone = keras.models.clone_model(trunk, clone_function=clone_layer)
    for original, copy in zip(trunk.layers, clone.layers):
        if isinstance(original, BinaryConv2D):
            copy.set_weights([original.deployed_kernel()])
        else:
            copy.set_weights(original.get_weights())
    return clone


def convert_twin(model, calibration: np.ndarray) -> bytes:
    """Full-integer int8 `.tflite` (int8 input and output) of `inference_clone(model)`.

    calibration: uint8 images (N, H, W, C) used as the representative dataset; with raw
    0..255 pixels the input quantization comes out as scale 1, zero point -128.
    """
    tf = tensorflow()
    clone = inference_clone(model)
    images = calibration.astype(np.float32)

    def representative():
        for image in images:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(clone)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with held_output((1, 2)) as caught:  # TF's converter prints from Python and C++; shown only if it fails
        try:
            return converter.convert()
        except Exception as exc:
            raise OnebitError(f"TF's converter failed on this model ({type(exc).__name__}); its log:\n{caught()[-4000:]}") from exc
