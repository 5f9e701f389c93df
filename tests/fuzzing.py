"""Build and run the libFuzzer harnesses of firmware/fuzz/ (clang from Debian, with ASan and
UBSan), and mutate `.tflite` files for the Python reader: what tests/test_fuzz.py runs for
seconds and benchmarks/fuzz.py for a million executions."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mcu_onebit.errors import OnebitError
from mcu_onebit.paths import firmware_dir

CORPUS = firmware_dir() / "fuzz" / "corpus"
SANITIZERS = ("-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all")


@dataclass(frozen=True)
class Harness:
    name: str  # also its corpus folder, firmware/fuzz/corpus/<name>
    sources: tuple[str, ...]  # under firmware/
    include_dirs: tuple[str, ...]
    defines: tuple[str, ...] = ()

    @property
    def cxx(self) -> bool:
        return any(s.endswith(".cc") for s in self.sources)


_APP = ("app/protocol.c", "app/energyrunner.c", "kernels/ob_common.c", "fuzz/fuzz_board.c")
HARNESSES = (
    Harness("options", ("fuzz/options_fuzz.cc", "runtime/tflm/onebit_conv2d_options.cc"),
            ("kernels", "runtime/tflm")),
    Harness("params", ("fuzz/params_fuzz.c", "kernels/onebit_conv2d.c", "kernels/conv_int8.c",
                       "kernels/ob_common.c"), ("kernels",)),
    # A receive buffer of 512 bytes: identity replies fit, and longer frames are refused.
    Harness("frames", ("fuzz/frames_fuzz.c", "app/main.c", *_APP), ("app", "kernels", "fuzz"),
            ("-DOB_APP_MAX_PAYLOAD=512",)),
    Harness("energyrunner", ("fuzz/energyrunner_fuzz.c", *_APP), ("app", "kernels", "fuzz")),
)


@lru_cache(maxsize=None)
def libfuzzer_problem() -> str | None:
    """Why no harness can be built here, or None: clang with libFuzzer and the sanitizers'
    runtimes (Debian's clang and libclang-rt-dev, which `make setup` installs)."""
    for tool in ("clang", "clang++"):
        if shutil.which(tool) is None:
            return f"{tool} not found: `make setup` installs clang and libclang-rt-dev"
    with tempfile.TemporaryDirectory() as work:
        probe = Path(work) / "probe.c"
        probe.write_text("#include <stddef.h>\n#include <stdint.h>\n"
                         "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
        result = subprocess.run(["clang", *SANITIZERS, str(probe), "-o", str(Path(work) / "probe")],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return f"clang cannot link a libFuzzer harness (install libclang-rt-dev): {result.stderr.strip()[-300:]}"
    return None


def build(harness: Harness, out_dir: Path) -> Path:
    """The harness's executable in out_dir; OnebitError carries clang's diagnostics."""
    out = Path(out_dir) / f"{harness.name}_fuzz"
    compiler, standard = ("clang++", "-std=c++17") if harness.cxx else ("clang", "-std=c99")
    command = [compiler, standard, "-g", "-O1", "-Wall", "-Wextra", "-Werror", *SANITIZERS, *harness.defines,
               *(f"-I{firmware_dir() / d}" for d in harness.include_dirs),
               *(str(firmware_dir() / s) for s in harness.sources), "-lm", "-o", str(out)]  # -lm: expf (EnergyRunner)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise OnebitError(f"building {out.name} failed ({' '.join(command)}):\n{result.stderr.strip()}")
    return out


@dataclass(frozen=True)
class FuzzRun:
    executions: int
    coverage: int  # libFuzzer's cov: (edges reached)
    features: int  # its ft:
    seconds: float
    findings: list[str]  # crash, timeout, leak or out-of-memory inputs it wrote, and sanitizer reports
    output: str


def run(binary: Path, corpus: Path, work: Path, runs: int | None = None, seconds: int | None = None,
        timeout_s: int = 10) -> FuzzRun:
    """Fuzz from the corpus folder (read, never written: new inputs go to work/corpus)
    for `runs` executions or `seconds`; every corpus input runs first, so each crash-*
    regression input there is replayed."""
    work = Path(work)
    found, artifacts = work / "corpus", work / "artifacts"
    found.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    limit = [f"-runs={runs}"] if runs is not None else [f"-max_total_time={seconds}"]
    command = [str(binary), *limit, f"-timeout={timeout_s}", "-rss_limit_mb=2048", "-print_final_stats=1",
               f"-artifact_prefix={artifacts}/", str(found), str(corpus)]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    executions = re.search(r"stat::number_of_executed_units: (\d+)", output)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", output)
    reports = [line for line in output.splitlines()
               if re.search(r"ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|SUMMARY: ", line)]
    findings = [p.name for p in sorted(artifacts.iterdir())] + reports
    if result.returncode != 0 and not findings:
        findings = [f"exit status {result.returncode}"]
    return FuzzRun(int(executions.group(1)) if executions else 0,
                   int(coverage[-1][0]) if coverage else 0, int(coverage[-1][1]) if coverage else 0,
                   elapsed, findings, output)


def mutate(data: bytes, rng: np.random.Generator, most: int = 13) -> bytes:
    """data with 1 to `most` bytes changed to random values, as the issue's mutants."""
    mutant = bytearray(data)
    count = int(rng.integers(1, most + 1))
    positions = rng.integers(0, len(mutant), count)
    mutant_bytes = rng.integers(0, 256, count)
    for position, value in zip(positions, mutant_bytes):
        mutant[int(position)] = int(value)
    return bytes(mutant)
