"""`train` as several processes on JAX's distributed runtime (mcu_onebit/cluster.py), with
real processes on this machine standing in for machines: two processes train as one,
process 0 alone writes, mistakes are one line in every process, and a killed process
stops the other without losing the last checkpoint, from which both go on.

The reference runs are single processes of the same command: on one device (the ordinary
run, equal up to the order of floating-point sums) and on two forced host devices (the
same sums in the same order as two processes of one device each, so equal bit for bit)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_one_line_error, cli_env

from mcu_onebit.cluster import Cluster, Share, cluster_from_options
from mcu_onebit.errors import OnebitError
from mcu_onebit.modelfile import load_model
from mcu_onebit.train import checkpoint_path, weights_digest

pytest.importorskip("jax", reason="the jax backend is a test dependency (pyproject [test])")

# The command (digits, tiny-resnet, 2 epochs, seed 0) with an even global batch:
# the default 125 does not split over 2 processes (test_a_batch_that_does_not_split_is_refused).
ARGS = ("--dataset", "digits", "--arch", "tiny-resnet", "--epochs", "2", "--seed", "0", "--batch-size", "126")
CLI = str(Path(sys.executable).with_name("mcu-onebit"))
# The two forced host devices share this machine's cores with the rest of CI; XLA aborts an
# all-reduce whose other participant is late by 40 s (see test_train_backends).
TWO_DEVICES = "--xla_force_host_platform_device_count=2 --xla_cpu_collective_call_terminate_timeout_seconds=300"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(i: int, port: int, out: Path, *args: str, backend: str = "jax", n: int = 2, timeout: float = 120):
    command = [CLI, "train", *args, "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", str(n), "--process-id", str(i), "--coordinator-timeout", str(timeout)]
    return subprocess.Popen(command, env=cli_env(KERAS_BACKEND=backend), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(processes, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    done = []
    for p in processes:
        stdout, stderr = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def _two(tmp: Path, *args: str, **options) -> list[subprocess.CompletedProcess]:
    """Processes 0 and 1 of one run, each with its own --out folder (as on two machines)."""
    port = _free_port()
    return _finish([_process(i, port, tmp / f"process{i}" / "model.h5", *args, **options) for i in (0, 1)])


def _single(out: Path, *args: str, xla_flags: str | None = None) -> subprocess.Popen:
    env = cli_env(KERAS_BACKEND="jax", **({"XLA_FLAGS": xla_flags} if xla_flags else {}))
    return subprocess.Popen([CLI, "train", *args, "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _weights(path: Path) -> list[np.ndarray]:
    return load_model(path)[0].get_weights()


def _log(out: Path) -> dict:
    return json.loads(out.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process run and the single process on two devices, started at once."""
    tmp = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    processes = [_process(i, port, tmp / f"process{i}" / "model.h5", *ARGS) for i in (0, 1)]
    processes.append(_single(tmp / "two-devices" / "model.h5", *ARGS, xla_flags=TWO_DEVICES))
    results = _finish(processes)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    return tmp, results


def test_two_processes_train_as_one_and_only_process_0_writes(runs):
    tmp, (first, second, _) = runs
    out = tmp / "process0" / "model.h5"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.h5", "model.json", "model.png"]  # checkpoint gone
    assert not (tmp / "process1").exists()
    log = _log(out)
    assert log["processes"] == 2 and log["devices"] == "keras.distribution.DataParallel over 2 devices in 2 processes"
    saved = weights_digest(load_model(out)[0])
    assert log["weights_sha256"] == saved
    assert f"done with weights sha256 {saved}" in second.stdout  # process 1 holds the very same weights
    assert "Epoch 2/2" in first.stdout and "Epoch" not in second.stdout  # one progress report


def test_two_processes_equal_one_process_on_two_devices_bit_for_bit(runs):
    tmp, *_ = runs
    two_processes, two_devices = tmp / "process0" / "model.h5", tmp / "two-devices" / "model.h5"
    for a, b in zip(_weights(two_processes), _weights(two_devices)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_log(two_processes)["epochs"], _log(two_devices)["epochs"]):
        assert [a[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")] == \
               [b[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")]


@pytest.mark.slow
def test_two_processes_match_one_process_on_one_device(runs):
    """Up to the order of floating-point sums: 1e-5 relative, 1e-4 absolute (the input BN's
    moving variance is about 9,000 on 0..255 pixels, where 1e-4 is below float32's step).
    Longer runs drift apart: with 1-bit weights a latent weight near 0 that changes sign in
    one run and not in the other changes the network (docs/training.md)."""
    tmp, _ = runs
    two, one = tmp / "process0" / "model.h5", tmp / "one-device" / "model.h5"
    (reference,) = _finish([_single(one, *ARGS)])
    assert reference.returncode == 0, reference.stderr[-3000:]
    worst = 0.0
    for a, b in zip(_weights(two), _weights(one)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        worst = max(worst, float(np.max(np.abs(a - b))))
    assert worst > 0  # the sums really are in another order: this is not the same computation twice
    assert abs(_log(two)["test_accuracy"] - _log(one)["test_accuracy"]) <= 0.005
    np.testing.assert_allclose([e["loss"] for e in _log(two)["epochs"]], [e["loss"] for e in _log(one)["epochs"]],
                               rtol=1e-5)


# --- mistakes: one line in every process, before anything is trained -----------------------------


def test_tensorflow_backend_is_refused_in_every_process(tmp_path):
    for result in _two(tmp_path, *ARGS, backend="tensorflow"):
        assert_one_line_error(result, "KERAS_BACKEND=jax", "keras-team/keras#20585")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("options, words", [
    (["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:9"], ["--process-id 2", "0 to 1"]),
    (["--num-processes", "2", "--process-id", "1"], ["--coordinator", "missing"]),
    (["--num-processes", "0"], ["at least 1"]),
    (["--num-processes", "2", "--process-id", "0", "--coordinator", "localhost"], ["HOST:PORT"]),
    (["--num-processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1:9", "--batch-size", "125"],
     ["--batch-size 125", "2 processes", "126"]),
])
def test_wrong_counts_are_one_line_errors(tmp_path, options, words):
    result = subprocess.run([CLI, "train", *ARGS[:-2], *options, "--out", str(tmp_path / "out" / "m.h5")],
                            env=cli_env(KERAS_BACKEND="jax"), capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "out").exists()


def test_processes_with_other_options_are_refused_in_every_process(tmp_path):
    port = _free_port()
    results = _finish([_process(0, port, tmp_path / "a" / "m.h5", *ARGS),
                       _process(1, port, tmp_path / "b" / "m.h5", *ARGS[:-2], "--batch-size", "128")])
    for result in results:
        assert_one_line_error(result, "process 1", "other training options", "batch_size")


def test_process_0s_unwritable_output_stops_every_process(tmp_path):
    foreign = tmp_path / "process0" / "model.h5"
    foreign.parent.mkdir()
    foreign.write_text("not a model")
    for result in _two(tmp_path, *ARGS):
        assert_one_line_error(result, str(foreign), "not written by `mcu-onebit train`")
    assert foreign.read_text() == "not a model" and not (tmp_path / "process1").exists()


def test_an_unreachable_coordinator_and_a_missing_process_are_one_line_errors(tmp_path):
    port = _free_port()
    started = time.monotonic()
    alone = _finish([_process(1, port, tmp_path / "m.h5", *ARGS, timeout=3)])[0]
    assert_one_line_error(alone, f"cannot reach the coordinator 127.0.0.1:{port}", "within 3 s")
    host = _finish([_process(0, port, tmp_path / "m.h5", *ARGS, timeout=3)])[0]
    assert_one_line_error(host, "only 1 of 2 processes", "missing: process 1")
    assert time.monotonic() - started < 60 and not list(tmp_path.iterdir())


# --- a process that dies --------------------------------------------------------------------------


def _checkpoint_epochs(path: Path) -> int:
    try:
        with np.load(path) as f:
            return len(json.loads(f["state"].tobytes())["history"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_both_resume_to_the_uninterrupted_result(runs, tmp_path):
    reference = runs[0] / "process0" / "model.h5"
    port, out = _free_port(), tmp_path / "process0" / "model.h5"
    host, peer = (_process(i, port, tmp_path / f"process{i}" / "model.h5", *ARGS) for i in (0, 1))
    try:
        deadline = time.monotonic() + 300
        while _checkpoint_epochs(checkpoint_path(out)) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        peer.kill()
        killed = time.monotonic()
        peer.communicate()
    stdout, stderr = host.communicate(timeout=120)
    waited = time.monotonic() - killed
    kept = _checkpoint_epochs(checkpoint_path(out))
    if host.returncode == 0:
        pytest.fail(f"process 0 finished although process 1 was killed ({waited:.1f} s later):\n{stdout}")
    assert waited < 60, waited
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in stderr, stderr[-2000:]
    assert f"after epoch {kept}" in last and "--resume" in last
    assert kept >= 1 and not out.exists()

    resumed = _two(tmp_path, *ARGS, "--resume")
    for result in resumed:
        assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {checkpoint_path(out)} after epoch {kept}" in resumed[0].stdout
    for a, b in zip(_weights(out), _weights(reference)):
        np.testing.assert_array_equal(a, b)
    assert not checkpoint_path(out).exists()


# --- the pieces, without processes -----------------------------------------------------------------


def test_the_shares_of_the_processes_make_up_the_batch():
    batch = (np.arange(12)[:, None] * np.ones((1, 3)), np.arange(12))
    shares = [Share(i, 3).of(batch) for i in range(3)]
    assert all(len(x) == len(y) == 4 for x, y in shares)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in shares]), batch[0])
    np.testing.assert_array_equal(np.concatenate([y for _, y in shares]), batch[1])


def test_one_process_is_the_ordinary_run():
    assert cluster_from_options(environ={}) is None
    assert cluster_from_options(num_processes=1, environ={}) is None
    assert cluster_from_options(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None


@pytest.mark.parametrize("environ, launcher", [
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
      "SLURM_LOCALID": "0"}, "srun"),
    ({"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:34911", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_RANK": "1"}, "mpirun"),
])
def test_a_launcher_is_recognised_without_options(environ, launcher):
    cluster = cluster_from_options(environ=environ)
    assert cluster == Cluster(2, 1, None, launcher)
    assert not cluster.writes and cluster.share == Share(1, 2)
    with pytest.raises(OnebitError, match="--process-id"):  # given options win: all three, not some
        cluster_from_options(num_processes=2, environ=environ)
