"""Several processes, one training: `train` as a data-parallel job on JAX's distributed runtime.

A run has N processes (on one machine or several), each with its own devices; together
they hold every global batch, each process its own rows (`Share`). Process 0 hosts JAX's
coordination service and is the one that writes files.

How the processes find each other follows JAX:
- explicitly, `--coordinator HOST:PORT --num-processes N --process-id I` on every process
  (or MCU_ONEBIT_COORDINATOR, MCU_ONEBIT_NUM_PROCESSES, MCU_ONEBIT_PROCESS_ID), HOST:PORT
  where process 0 listens;
- under a launcher JAX recognises (SLURM's `srun`, Open MPI's `mpirun`) with no options:
  `jax.distributed.initialize()` reads the launcher's environment.
Anything else is one process, as before: no distributed runtime is started.

`join` meets the others and starts the runtime. With explicit options it first holds a
rendezvous of its own on the coordinator's port: JAX's `initialize` does not raise when a
process is missing or the counts disagree, it waits and then aborts the process with a
native stack trace. The rendezvous turns those cases (and processes started with
different options) into one `OnebitError` line in every process that is there to read it.

After a failure in a multi-process run, `exit_now` ends the process without Python's exit
handlers: JAX's handler waits at a shutdown barrier for every process, and a dead one never
comes (it would abort with a stack trace once the heartbeat times out).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import OnebitError

DEFAULT_TIMEOUT_S = 300.0  # JAX's own initialization_timeout
# A process that stops sending heartbeats for this long counts as dead (JAX's default, 100 s,
# is longer than a user waits). A killed process is noticed at once anyway: its sockets close
# and the next collective fails; the heartbeat is for a machine that vanishes.
HEARTBEAT_TIMEOUT_S = 30


@dataclass(frozen=True)
class Share:
    """The rows of every global batch that one process reads: process `index` of `count`
    takes rows [index * B / count, (index + 1) * B / count) of a batch of B (B a multiple of
    count), so the processes' shares put together are the batch."""

    index: int = 0
    count: int = 1

    def of(self, batch):
        """This process's rows of `batch` (an array, or a tuple of arrays of one length)."""
        if isinstance(batch, tuple):
            return tuple(self.of(part) for part in batch)
        n = len(batch) // self.count
        return batch[self.index * n:(self.index + 1) * n]


@dataclass(frozen=True)
class Cluster:
    """The processes of one multi-process run, as this process sees them."""

    num_processes: int
    process_id: int
    coordinator: str | None  # HOST:PORT of process 0; None: the launcher's, which JAX finds
    launcher: str | None = None  # "srun" or "mpirun" when detected
    timeout: float = DEFAULT_TIMEOUT_S  # seconds to wait for the other processes

    @property
    def share(self) -> Share:
        return Share(self.process_id, self.num_processes)

    @property
    def writes(self) -> bool:
        return self.process_id == 0

    def describe(self) -> str:
        how = f"coordinator {self.coordinator}" if self.coordinator else f"started by {self.launcher}"
        return f"process {self.process_id} of {self.num_processes} ({how})"


def cluster_from_options(coordinator: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None, timeout: float | None = None,
                         environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The `Cluster` that the options (or, without any, a launcher's environment) describe;
    None for a single-process run. Mistakes are one-line `OnebitError`s; nothing is loaded."""
    timeout = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    if not timeout > 0:
        raise OnebitError(f"--coordinator-timeout must be a positive number of seconds, got {timeout:g}")
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if all(v is None for v in given.values()):
        return _launched(environ, timeout)
    if num_processes is not None and num_processes < 1:
        raise OnebitError(f"--num-processes must be at least 1, got {num_processes}")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise OnebitError(f"--process-id {process_id} is out of range for --num-processes {num_processes}: "
                          f"the processes are numbered 0 to {num_processes - 1}")
    if num_processes == 1:
        return None  # one process: the ordinary run, whatever --coordinator says
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise OnebitError(f"a multi-process run needs --coordinator, --num-processes and --process-id on every "
                          f"process; {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    _address(coordinator)
    return Cluster(num_processes, process_id, coordinator, timeout=timeout)


def _launched(environ: Mapping[str, str], timeout: float) -> Cluster | None:
    """A cluster launcher's tasks, as JAX detects them (jax/_src/clusters), or None."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in environ for k in slurm):
        size, rank, launcher = environ["SLURM_NTASKS"], environ["SLURM_PROCID"], "srun"
    elif "OMPI_MCA_orte_hnp_uri" in environ and "OMPI_COMM_WORLD_SIZE" in environ:
        size, rank, launcher = environ["OMPI_COMM_WORLD_SIZE"], environ["OMPI_COMM_WORLD_RANK"], "mpirun"
    else:
        return None
    if int(size) < 2:
        return None
    return Cluster(int(size), int(rank), None, launcher, timeout)


def _address(coordinator: str) -> tuple[str, int]:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OnebitError(f"--coordinator {coordinator!r} must be HOST:PORT, e.g. 10.0.0.1:9876 (process 0's "
                          "address and a free port)")
    return host.strip("[]"), int(port)


def check_cluster(cluster: Cluster, batch_size: int, backend: str) -> None:
    """What can be checked before JAX loads: the backend and the split of a global batch."""
    if backend != "jax":
        why = (" (Keras 3's MultiWorkerMirroredStrategy fails in fit: keras-team/keras#20585)"
               if backend == "tensorflow" else "")
        raise OnebitError(f"training in {cluster.num_processes} processes needs the JAX backend, not {backend}{why}; "
                          "start every process with KERAS_BACKEND=jax")
    if batch_size % cluster.num_processes:
        multiple = -(-batch_size // cluster.num_processes) * cluster.num_processes
        raise OnebitError(f"--batch-size {batch_size} (the global batch) does not split evenly over "
                          f"{cluster.num_processes} processes; pass a multiple of {cluster.num_processes} "
                          f"(e.g. {multiple})")


def join(cluster: Cluster, options: dict, problem: str | None = None) -> None:
    """Meets the other processes and starts JAX's distributed runtime. `options` (the
    training options) must be the same in every process; `problem`, process 0's reason not
    to train (its output cannot be written, ...), is raised in every process."""
    if cluster.coordinator is not None:
        if cluster.process_id == 0:
            _gather(cluster, options, problem)
        else:
            _report(cluster, options)
    elif problem:
        raise OnebitError(problem)  # the launcher stops the other tasks when this one fails
    from .native import load

    jax = load("jax")
    settings = dict(initialization_timeout=math.ceil(cluster.timeout), heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    if cluster.coordinator is None:
        jax.distributed.initialize(**settings)
    else:
        jax.distributed.initialize(cluster.coordinator, cluster.num_processes, cluster.process_id, **settings)
    if (jax.process_count(), jax.process_index()) != (cluster.num_processes, cluster.process_id):
        raise OnebitError(f"JAX's runtime counts this process as {jax.process_index()} of {jax.process_count()}, "
                          f"not {cluster.process_id} of {cluster.num_processes}")


def local_devices() -> int:
    """The devices of this process (after `join`)."""
    from .native import load

    return load("jax").local_device_count()


def broadcast_bytes(data: bytes | None) -> bytes:
    """Process 0's `data` in every process (the others pass None), over the runtime's
    collectives, so no file system needs to be shared."""
    from .native import load

    load("jax")
    from jax.experimental import multihost_utils

    length = multihost_utils.broadcast_one_to_all(np.int64(len(data) if data is not None else 0))
    buffer = np.frombuffer(data, np.uint8) if data is not None else np.zeros(int(length), np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes()


def exit_now(code: int) -> None:
    """Ends a multi-process run's process after a failure, without exit handlers (see the
    module docstring); returns when no distributed runtime was started."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# --- the rendezvous -------------------------------------------------------------------------
# One JSON line each way: a process sends {"process_id", "num_processes", "options"}; process
# 0 answers every process at once with {"error": message or null}. Then process 0 closes the
# port and JAX's coordination service binds it (JAX's clients retry until it does).


def _gather(cluster: Cluster, options: dict, problem: str | None) -> None:
    _, port = _address(cluster.coordinator)
    deadline = time.monotonic() + cluster.timeout
    family = socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET
    try:
        server = socket.create_server(("", port), family=family, dualstack_ipv6=family == socket.AF_INET6)
    except OSError as exc:
        raise OnebitError(f"process 0 cannot listen on port {port} of --coordinator {cluster.coordinator} "
                          f"({exc.strerror or exc}); choose another port") from None
    joined: dict[int, socket.socket] = {}
    error = problem
    with server:
        try:
            while len(joined) < cluster.num_processes - 1 and time.monotonic() < deadline:
                server.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    break
                hello = _read_line(conn, min(deadline, time.monotonic() + 10))  # a stray client: next
                if hello is None:
                    conn.close()
                    continue
                mistake = _mismatch(hello, cluster, options, joined)
                joined[hello.get("process_id")] = conn
                if mistake:
                    error = mistake
                    break
            if len(joined) < cluster.num_processes - 1 and error is None:
                missing = sorted(set(range(1, cluster.num_processes)) - set(joined))
                error = (f"only {len(joined) + 1} of {cluster.num_processes} processes reached the coordinator "
                         f"{cluster.coordinator} within {cluster.timeout:g} s (missing: process "
                         f"{', '.join(map(str, missing))}); start every process, or raise --coordinator-timeout")
            for conn in joined.values():
                try:
                    conn.sendall((json.dumps({"error": error}) + "\n").encode())
                except OSError:
                    pass  # that process is gone; JAX would not start without it anyway
        finally:
            for conn in joined.values():
                conn.close()
    if error:
        raise OnebitError(error)


def _mismatch(hello: dict, cluster: Cluster, options: dict, joined: dict) -> str | None:
    pid = hello.get("process_id")
    if hello.get("num_processes") != cluster.num_processes:
        return (f"process {pid} was started with --num-processes {hello.get('num_processes')}, process 0 with "
                f"{cluster.num_processes}; give every process the same count")
    if pid in joined or pid == 0:
        return f"two processes were started with --process-id {pid}; give each process its own id"
    if hello.get("options") != options:
        theirs = hello.get("options") or {}
        changed = sorted(k for k in set(options) | set(theirs) if options.get(k) != theirs.get(k))
        return (f"process {pid} was started with other training options than process 0 ({', '.join(changed)}); "
                "start every process with the same options")
    return None


def _report(cluster: Cluster, options: dict) -> None:
    host, port = _address(cluster.coordinator)
    deadline = time.monotonic() + cluster.timeout
    hello = {"process_id": cluster.process_id, "num_processes": cluster.num_processes, "options": options}
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            conn = socket.create_connection((host, port), timeout=max(0.01, min(5.0, deadline - time.monotonic())))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            time.sleep(0.2)
            continue
        with conn:
            try:
                conn.sendall((json.dumps(hello) + "\n").encode())
            except OSError as exc:
                reason = exc.strerror or str(exc)
                continue
            # Process 0 answers once every process is there, or at its own deadline.
            answer = _read_line(conn, time.monotonic() + cluster.timeout + 5)
        if answer is None:
            raise OnebitError(f"the coordinator {cluster.coordinator} closed the connection without an answer; "
                              "see process 0's output")
        if answer.get("error"):
            raise OnebitError(answer["error"])
        return
    raise OnebitError(f"cannot reach the coordinator {cluster.coordinator} (process 0) within {cluster.timeout:g} s "
                      f"({reason}); start process 0 there, or check --coordinator")


def _read_line(conn: socket.socket, deadline: float) -> dict | None:
    """One JSON object sent as a line, or None (closed, timed out, or not ours)."""
    data = b""
    try:
        while not data.endswith(b"\n"):
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        message = json.loads(data)
    except (OSError, ValueError):
        return None
    return message if isinstance(message, dict) else None
