"""Build C sources into a shared library with the host compiler.

Used to prove C equals Python on the PC: the tests load the kernels with ctypes, and the
code generator's static runtime is built the same way. Warnings are errors, as on the
firmware build, so host and target see the same code quality bar.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from .errors import OnebitError

_WARNINGS = ("-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")
HOST_CFLAGS = ("-std=c99", *_WARNINGS)
HOST_CXXFLAGS = ("-std=c++17", *_WARNINGS)  # the firmware's C++ (the TFLM runtime's options parser)


def build_shared_library(sources: Sequence[Path], include_dirs: Sequence[Path], out: Path,
                         extra_flags: Sequence[str] = (), cxx: bool = False) -> Path:
    """Compile and link `sources` into the shared library `out`; returns `out`.

    The compiler is $CC or gcc ($CXX or g++ for C++ sources, cxx=True). OnebitError
    carries the compiler's diagnostics when the build fails or no compiler is installed.
    """
    compiler = os.environ.get("CXX", "g++") if cxx else os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        raise OnebitError(f"{'C++' if cxx else 'C'} compiler {compiler!r} not found; install "
                          f"{'g++' if cxx else 'gcc'} or set {'CXX' if cxx else 'CC'}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [compiler, *(HOST_CXXFLAGS if cxx else HOST_CFLAGS), *extra_flags,
               *(f"-I{Path(d)}" for d in include_dirs),
               *(str(Path(s)) for s in sources), "-o", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise OnebitError(f"host build of {out.name} failed ({' '.join(command)}):\n"
                          f"{result.stderr.strip()}")
    return out
