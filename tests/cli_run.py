"""Running the real `mcu-onebit` CLI from tests, and the check every user-mistake test makes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, env: dict | None = None, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("mcu-onebit")
    env = env if env is not None else {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"mcu-onebit {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 and exactly one `error: ...` line on stderr (no traceback) naming `words`."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
