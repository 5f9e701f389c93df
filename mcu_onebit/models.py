"""Network builders for McDonnell's two recipes, in 1-bit or full precision.

`mcdonnell2018` (ICLR 2018): every conv is binary (the stem and the 1x1 classifier too);
there is no dense layer and no conv bias. The input BN on the raw 0-255 image learns
scale and offset; every other BN has neither (center=False, scale=False), epsilon 1e-5.
Blocks are pre-activation BN-ReLU-conv; the head is BN-ReLU, 1x1 conv, BN, GAP, softmax.

`shifted-relu2019` (McDonnell, Mostafa, Wang, van Schaik 2019): no BN but the learned
input one; `max(x, -1)` before every conv except the stem; the classifier's output is
divided by a temperature (40) before GAP.

`precision="float"` builds the same graph with plain Conv2D (the accuracy-gap baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

from .archs import parse_arch
from .errors import OnebitError
from .layers import BinaryConv2D, ShiftedReLU, Temperature, ZeroChannels, keras  # keras: loaded quietly there

layers = keras.layers

LOGITS = "logits"  # the layer whose output the deployed graph ends with (softmax dropped)
BN_MOMENTUM = 0.9  # moving statistics settle within the few hundred steps a small dataset gives
WEIGHT_DECAY = 5e-4  # SGD convention (McDonnell 2018); keras l2(decay / 2)
WEIGHT_DECAY_L2 = WEIGHT_DECAY / 2
TEMPERATURE = 40.0  # 2019 recipe: logits / 40 before global average pooling

METHODS = ("mcdonnell2018", "shifted-relu2019")
PRECISIONS = ("1bit", "float")


@dataclass(frozen=True)
class Recipe:
    """Which recipe's layers a builder uses; the builders only say where convs go.

    The last four fields default to McDonnell's choices for wide networks; they exist for
    networks of microcontroller size, which underfit rather than overfit:
    weight_decay / binary_weight_decay: SGD-convention decay (keras l2 = decay / 2) of the
    full-precision convs and of the binary convs' latent weights; bn_affine: the inner BNs
    learn scale and offset (the input BN always does); float_stem / float_classifier: the
    first 3x3 conv and the 1x1 classifier stay full precision (int8 when deployed)."""

    method: str = "mcdonnell2018"
    precision: str = "1bit"
    weight_decay: float = WEIGHT_DECAY
    binary_weight_decay: float = WEIGHT_DECAY
    bn_affine: bool = False
    float_stem: bool = False
    float_classifier: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise OnebitError(f"unknown --method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise OnebitError(f"unknown --precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.weight_decay < 0 or self.binary_weight_decay < 0:
            raise OnebitError("--weight-decay and --binary-weight-decay must be 0 (off) or positive")

    def conv(self, filters: int, kernel: int, stride: int = 1, name: str | None = None, binary: bool = True):
        """A conv without bias: binary when the recipe is 1-bit and `binary`, else Conv2D."""
        binary = binary and self.precision == "1bit"
        cls = BinaryConv2D if binary else layers.Conv2D
        decay = self.binary_weight_decay if binary else self.weight_decay
        return cls(
            filters, kernel, strides=stride, padding="same", name=name, use_bias=False, kernel_initializer="he_normal",
            kernel_regularizer=keras.regularizers.l2(decay / 2) if decay else None,
        )

    def bn(self, name: str | None = None) -> layers.BatchNormalization:
        return _bn(name, affine=self.bn_affine)

    def activate(self, x):
        """What precedes every conv but the stem: BN-ReLU (2018) or max(x, -1) (2019)."""
        if self.method == "shifted-relu2019":
            return ShiftedReLU()(x)
        return layers.ReLU()(self.bn()(x))

    def stem(self, inputs, filters: int):
        x = layers.BatchNormalization(epsilon=1e-5, momentum=BN_MOMENTUM, name="input_bn")(inputs)
        return self.conv(filters, 3, name="stem_conv", binary=not self.float_stem)(x)

    def head(self, x, num_classes: int):
        x = self.activate(x)
        x = self.conv(num_classes, 1, name="classifier_conv", binary=not self.float_classifier)(x)
        if self.method == "shifted-relu2019":
            x = Temperature(TEMPERATURE, name="temperature")(x)
        else:
            x = self.bn(name="classifier_bn")(x)
        x = layers.GlobalAveragePooling2D(name=LOGITS)(x)
        return layers.Activation("softmax", name="softmax")(x)

    def block(self, x, filters: int, stride: int, name: str):
        """Pre-activation block: act-conv, act-conv, plus the shortcut."""
        y = self.activate(x)
        y = self.conv(filters, 3, stride, name=f"{name}_conv1")(y)
        y = self.activate(y)
        y = self.conv(filters, 3, name=f"{name}_conv2")(y)
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            # McDonnell: 3x3 stride-2 average pool, channels doubled with zeros (no 1x1 projection).
            shortcut = layers.AveragePooling2D(3, strides=stride, padding="same")(x)
            shortcut = ZeroChannels(filters - x.shape[-1])(shortcut)
        return layers.Add()([y, shortcut])


def _bn(name: str | None = None, affine: bool = False) -> layers.BatchNormalization:
    return layers.BatchNormalization(center=affine, scale=affine, epsilon=1e-5, momentum=BN_MOMENTUM, name=name)


def tiny_resnet(input_shape, num_classes: int, width: int = 16, blocks: int = 2, recipe: Recipe = Recipe()) -> keras.Model:
    """A small residual net for tiny inputs (8x8 digits): stem, `blocks` blocks, head."""
    inputs = keras.Input(input_shape)
    x = recipe.stem(inputs, width)
    for i in range(blocks):
        x = recipe.block(x, width, 1, name=f"block{i + 1}")
    return keras.Model(inputs, recipe.head(x, num_classes), name="tiny_resnet")


def cnn_small(input_shape, num_classes: int, width: int = 16, recipe: Recipe = Recipe()) -> keras.Model:
    """A plain (no shortcut) CNN for tiny inputs: stem, act-conv 2w, act-conv 4w stride 2, head."""
    inputs = keras.Input(input_shape)
    x = recipe.stem(inputs, width)
    x = recipe.activate(x)
    x = recipe.conv(2 * width, 3, name="conv1")(x)
    x = recipe.activate(x)
    x = recipe.conv(4 * width, 3, 2, name="conv2")(x)
    return keras.Model(inputs, recipe.head(x, num_classes), name="cnn_small")


def wrn(input_shape, num_classes: int, depth: int, k: int, recipe: Recipe = Recipe()) -> keras.Model:
    """WRN-depth-k, pre-activation, as in McDonnell 2018: 1 + 6n + 1 convs, n = (depth - 2) / 6."""
    n = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = recipe.stem(inputs, 16 * k)
    for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            x = recipe.block(x, width, stride, name=f"stage{stage + 1}_block{b + 1}")
    return keras.Model(inputs, recipe.head(x, num_classes), name=f"wrn_{depth}_{k}")


def build_model(arch: str, input_shape, num_classes: int, recipe: Recipe = Recipe()) -> keras.Model:
    parsed = parse_arch(arch)
    if parsed.family == "tiny-resnet":
        return tiny_resnet(input_shape, num_classes, recipe=recipe)
    if parsed.family == "cnn-small":
        return cnn_small(input_shape, num_classes, recipe=recipe)
    return wrn(input_shape, num_classes, parsed.depth, parsed.k, recipe=recipe)
