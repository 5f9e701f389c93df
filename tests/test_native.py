"""mcu_onebit/native.py: what native libraries print while they load is held back when it
is start-up chatter, and passed on otherwise (a real error must reach the user)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcu_onebit.errors import OnebitError
from mcu_onebit.native import load

CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796287672.985480    2792 port.cc:153] oneDNN custom operations are on. You may see ...",
    "W1203 08:01:02.123456 2792 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
]
KEPT = [
    "E0000 00:00:1796287672.985480    2792 cuda_executor.cc:1] a real error",
    "something else a library printed",
]


def test_start_up_chatter_is_held_back_and_the_rest_passes(tmp_path):
    lines = "".join(f"os.write(2, {(line + chr(10)).encode()!r})\n" for line in CHATTER[:2] + KEPT[:1] + CHATTER[2:] + KEPT[1:])
    (tmp_path / "noisy_native.py").write_text("import os\n" + lines)
    code = f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nfrom mcu_onebit.native import load\nload('noisy_native')\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == KEPT


def test_a_library_that_will_not_load_is_one_error():
    with pytest.raises(OnebitError, match="cannot load no_such_native_library.*make setup"):
        load("no_such_native_library")
