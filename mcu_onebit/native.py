"""The one place that loads TensorFlow and Keras, and holds back what native code prints.

TensorFlow's C++ libraries log through absl while they load, before absl's logging is
initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence them. Where oneDNN is on (by default
on CPUs with AVX-512 or AMX, on any x86-64 CPU with TF_ENABLE_ONEDNN_OPTS=1), `import
tensorflow` writes, once for each of its two shared libraries that carries absl:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796287672.985480    2792 port.cc:153] oneDNN custom operations are on. ...

So every command that needs TensorFlow or Keras loads it through `tensorflow()` or
`keras()`, after its arguments are checked: file descriptors 1 and 2 are held while the
libraries load, and whatever is not such start-up chatter is passed on, so a real error
still reaches the user. `held_output` does the same around TF's converter, which prints
from C++ too.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from types import ModuleType

from .errors import OnebitError

# TF's own logging (after absl's is set up) honours this; it must be set before the load.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Info and warning lines in absl's format (`I0000 00:00:1796287672.985480 2792 port.cc:153] ...`),
# absl's notice before its initialisation, and cpu_feature_guard's second line. Errors
# (E..., F...) and anything else pass.
CHATTER = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)$"
)


def without_chatter(text: str) -> str:
    """`text` without the lines that are native start-up chatter."""
    return "".join(line for line in text.splitlines(keepends=True) if not CHATTER.match(line.rstrip("\r\n")))


@contextlib.contextmanager
def held_output(fds: tuple[int, ...] = (2,)) -> Iterator[Callable[[], str]]:
    """Sends what is written to the file descriptors `fds` (Python and C alike) to a
    temporary file while the block runs; yields a function returning what was caught."""
    with tempfile.TemporaryFile(mode="w+", errors="replace") as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in fds]
        for fd in fds:
            os.dup2(sink.fileno(), fd)

        text: list[str] = []

        def caught() -> str:
            """What was caught so far; after the block, everything it caught."""
            if sink.closed:
                return "".join(text)
            sink.flush()
            sink.seek(0)
            return sink.read()

        try:
            yield caught
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip(fds, saved):
                os.dup2(copy, fd)
                os.close(copy)
            text.append(caught())


def load(name: str) -> ModuleType:
    """The module `name`, imported with what its native code prints at load held back."""
    if name in sys.modules:
        return sys.modules[name]
    with held_output() as caught:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            failure = exc
        else:
            failure = None
    rest = without_chatter(caught())
    if rest:
        sys.stderr.write(rest)
        sys.stderr.flush()
    if failure is not None:
        raise OnebitError(f"cannot load {name} ({failure}); reinstall mcu-onebit's dependencies (`make setup`)")
    return module


def tensorflow() -> ModuleType:
    """TensorFlow, loaded once and quietly."""
    return load("tensorflow")


def backend() -> str:
    """The Keras backend that `keras()` loads: KERAS_BACKEND, TensorFlow by default."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def keras() -> ModuleType:
    """Keras on the backend KERAS_BACKEND names (TensorFlow by default), loaded quietly.
    TensorFlow is loaded first whatever the backend: Keras imports it later on JAX too
    (its data utilities), and would then let its start-up lines through."""
    tensorflow()
    return load("keras")
