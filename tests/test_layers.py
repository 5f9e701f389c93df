"""The 1-bit layer and the model file: forward maths, gradient, serialization."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mcu_onebit.errors import OnebitError
from mcu_onebit.layers import (
    BinaryConv2D, ShiftedReLU, Temperature, ZeroChannels, binarize, he_scale, shifted_relu, temperature,
)
from mcu_onebit.modelfile import ModelMeta, load_model, save_model


def test_binarize_forward_is_scaled_sign_with_sign_of_zero_positive():
    w = tf.constant([-2.0, -1e-9, 0.0, 3.0])
    np.testing.assert_array_equal(binarize(w, 0.5).numpy(), [-0.5, -0.5, 0.5, 0.5])


def test_binarize_forward_is_exactly_plus_minus_scale_for_any_latent_weight():
    # w + stop_gradient(scale*sign(w) - w) rounds to a neighbour of +-scale for most w;
    # the layer must compute with exactly the two values the converter deploys.
    w = np.random.default_rng(0).normal(size=4096).astype("float32")
    scale = he_scale(3, 3, 7)
    values = np.unique(keras.ops.convert_to_numpy(binarize(w, scale)))
    np.testing.assert_array_equal(values, np.float32([-scale, scale]))


def test_binarize_gradient_is_identity_straight_through():
    w = tf.Variable([-2.0, 0.0, 0.3, 5.0])
    upstream = tf.constant([1.0, -2.0, 3.0, 4.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(binarize(w, 0.1) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), upstream.numpy())  # no clipping, even at |w| > 1


@pytest.mark.parametrize("k, cin", [(3, 1), (3, 16), (1, 10)])
def test_binary_conv_deploys_he_std_magnitude(k, cin):
    layer = BinaryConv2D(4, k, padding="same")
    x = np.random.default_rng(0).normal(size=(1, 5, 5, cin)).astype("float32")
    y = layer(x)
    w = layer.deployed_kernel()
    assert set(np.unique(np.abs(w))) == {np.float32(math.sqrt(2.0 / (k * k * cin)))}
    assert layer.scale == pytest.approx(he_scale(k, k, cin))
    assert not layer.use_bias
    # The layer computes with exactly the deployed weights.
    expected = tf.nn.conv2d(x, w, strides=1, padding="SAME").numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_zero_channels_appends_zeros():
    x = np.arange(8, dtype="float32").reshape(1, 2, 2, 2)
    y = ZeroChannels(3)(x).numpy()
    assert y.shape == (1, 2, 2, 5)
    np.testing.assert_array_equal(y[..., :2], x)
    assert not y[..., 2:].any()


def _small_model():
    inputs = keras.Input((6, 6, 1))
    x = BinaryConv2D(4, 3, padding="same", name="bconv")(inputs)
    x = ZeroChannels(2)(x)
    return keras.Model(inputs, x)


def test_model_file_round_trips_weights_and_metadata(tmp_path):
    model = _small_model()
    meta = ModelMeta("digits", "test", (6, 6, 1), [str(i) for i in range(10)], ["bconv"])
    path = tmp_path / "m.h5"
    save_model(model, meta, path)
    loaded, loaded_meta = load_model(path)
    assert loaded_meta == meta
    np.testing.assert_array_equal(loaded.get_layer("bconv").deployed_kernel(), model.get_layer("bconv").deployed_kernel())
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]  # no temporary left behind


def test_model_file_errors_are_one_line(tmp_path):
    with pytest.raises(OnebitError, match="not found"):
        load_model(tmp_path / "missing.h5")
    foreign = tmp_path / "foreign.h5"
    _small_model().save(foreign)
    with pytest.raises(OnebitError, match="not written by `mcu-onebit train`"):
        load_model(foreign)
    truncated = tmp_path / "truncated.h5"
    meta = ModelMeta("digits", "test", (6, 6, 1), ["0"], ["bconv"])
    save_model(_small_model(), meta, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(OnebitError) as excinfo:
        load_model(truncated)
    assert "\n" not in str(excinfo.value)


# Every layer registered under package "mcu_onebit", with a small instance; a new layer
# must be added here (the registry test below fails until it is).
LAYER_EXAMPLES = {
    "BinaryConv2D": lambda: BinaryConv2D(4, 3, padding="same"),
    "ZeroChannels": lambda: ZeroChannels(2),
    "ShiftedReLU": lambda: ShiftedReLU(),
    "Temperature": lambda: Temperature(40.0),
}
REGISTERED = sorted(k.split(">", 1)[1] for k in keras.saving.get_custom_objects() if k.startswith("mcu_onebit>"))


def test_every_registered_layer_has_an_example():
    assert REGISTERED == sorted(LAYER_EXAMPLES)


@pytest.mark.parametrize("name", REGISTERED)
def test_registered_layer_round_trips_through_its_config(name):
    layer = LAYER_EXAMPLES[name]()
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    y = layer(x)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    if not clone.built:  # the serialized build config may have built it already
        clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), y.numpy(), rtol=1e-6)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(x.shape))


def test_shifted_relu_floors_at_minus_one_and_temperature_divides():
    x = tf.constant([-5.0, -1.0, -0.25, 0.0, 3.0])
    np.testing.assert_array_equal(shifted_relu(x).numpy(), [-1.0, -1.0, -0.25, 0.0, 3.0])
    np.testing.assert_allclose(temperature(x, 40.0).numpy(), x.numpy() / 40.0)
