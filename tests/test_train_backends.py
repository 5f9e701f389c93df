"""Backend-agnostic training: the same recipe learns `digits` on the TensorFlow and the JAX
backends, JAX trains data-parallel over two devices (XLA's forced host devices stand in for
GPUs), and an `.h5` saved under JAX reloads under TensorFlow, where conversion runs, with
the same predictions.

Each backend runs in its own process (Keras picks its backend once, at import)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_run import cli_env

pytest.importorskip("jax", reason="the jax backend is a test dependency (pyproject [test])")

# Short but real: 1-bit cnn-small, one 12-epoch cosine decay, BN statistics recomputed.
RECIPE = dict(dataset="digits", arch="cnn-small", epochs=12, batch_size=64, schedule="cosine", recompute_bn=True)

SCRIPT = """
import json, sys
from pathlib import Path
import keras, numpy as np
from mcu_onebit.train import TrainConfig, train
from mcu_onebit.modelfile import load_model

out = Path(sys.argv[1])
result = train(TrainConfig(**json.loads(sys.argv[2])), out, log=lambda *a: None)
model, _ = load_model(out)
x = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1)).astype("float32")
np.save(out.with_suffix(".pred.npy"), np.asarray(model.predict(x, verbose=0)))
print(json.dumps({"backend": keras.backend.backend(), "devices": result["devices"],
                  "test_accuracy": result["test_accuracy"], "train_seconds": result["train_seconds"]}))
"""


def _train_in(backend: str, out: Path, devices: int = 1) -> dict:
    env = cli_env(KERAS_BACKEND=backend)
    if devices > 1:
        # The forced host devices share this machine's few cores; XLA aborts an all-reduce
        # whose other participant has not arrived within 40 s (it happened once in CI on 2 cores).
        env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                            "--xla_cpu_collective_call_terminate_timeout_seconds=300")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(out), json.dumps(RECIPE)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax") / "model.h5"
    return out, _train_in("jax", out, devices=2)


def test_jax_learns_digits_data_parallel(jax_run):
    _, figures = jax_run
    assert figures["backend"] == "jax"
    assert figures["devices"] == "keras.distribution.DataParallel over 2 devices"
    assert figures["test_accuracy"] >= 0.95, figures


def test_tensorflow_learns_digits(tmp_path):
    figures = _train_in("tensorflow", tmp_path / "model.h5")
    assert figures["backend"] == "tensorflow" and figures["devices"] == "one device"
    assert figures["test_accuracy"] >= 0.95, figures


def test_jax_model_reloads_under_tensorflow_with_equal_predictions(jax_run):
    import keras

    from mcu_onebit.modelfile import load_model

    assert keras.backend.backend() == "tensorflow"
    out, _ = jax_run
    model, meta = load_model(out)
    assert meta.binary_layers and meta.arch == "cnn-small"
    x = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1)).astype("float32")
    expected = np.load(out.with_suffix(".pred.npy"))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=0, atol=1e-6)
    assert expected.argmax(1).std() > 0  # a trained model, not a constant one
