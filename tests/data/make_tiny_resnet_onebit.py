"""Writes tests/data/tiny_resnet_onebit.tflite, the seed the `.tflite` reader is fuzzed from
(tests/test_fuzz.py, benchmarks/fuzz.py): the 1-bit graph `convert` makes (int8 twin, then
every binary CONV_2D rewritten to ONEBIT_CONV2D) of an untrained tiny-resnet on 8x8x1
images, batch-norm statistics from random images. Generated: re-run this script
(`.venv/bin/python tests/data/make_tiny_resnet_onebit.py`, TensorFlow, about 15 s) rather
than editing the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("tiny_resnet_onebit.tflite")


def main() -> None:
    from mcu_onebit.converters.rewrite import rewrite_binary_convs
    from mcu_onebit.converters.twin import convert_twin
    from mcu_onebit.layers import BinaryConv2D
    from mcu_onebit.models import Recipe, build_model

    images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1)).astype("uint8")
    model = build_model("tiny-resnet", (8, 8, 1), 10, Recipe("mcdonnell2018", "1bit"))
    model(images.astype("float32"), training=True)
    twin = convert_twin(model, images)
    onebit, _ = rewrite_binary_convs(twin, [l.name for l in model.layers if isinstance(l, BinaryConv2D)])
    OUT.write_bytes(onebit)


if __name__ == "__main__":
    main()
