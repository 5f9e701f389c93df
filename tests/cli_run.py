"""Running the real `mcu-onebit` CLI from tests, and the check every user-mistake test makes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


# With this, TensorFlow prints its oneDNN start-up lines on every x86-64 CPU (without it,
# only on some: AVX-512, AMX). Every CLI test runs with it, and without TF_CPP_MIN_LOG_LEVEL,
# so that "exactly one line on stderr" is proven with TensorFlow's chatter present.
CHATTY_TENSORFLOW = {"TF_ENABLE_ONEDNN_OPTS": "1"}
TF_CHATTER = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")


def cli_env(**extra: str) -> dict:
    """The environment CLI tests run the command in: this one, TensorFlow made chatty."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **CHATTY_TENSORFLOW, **extra}


def assert_no_tf_chatter(stderr: str) -> None:
    leaked = [line for line in stderr.splitlines() if any(mark in line for mark in TF_CHATTER)]
    assert not leaked, leaked


def run_cli(*args: str, env: dict | None = None, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("mcu-onebit")
    env = env if env is not None else cli_env()
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
