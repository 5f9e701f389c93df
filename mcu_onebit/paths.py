"""Where the installed firmware sources, board records and PlatformIO state live."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def firmware_dir() -> Path:
    return Path(str(resources.files("mcu_onebit._firmware")))


def boards_dir() -> Path:
    return Path(str(resources.files("mcu_onebit._boards")))


def state_dir() -> Path:
    """Per-user state: the offline PlatformIO core and the last converted project."""
    root = os.environ.get("MCU_ONEBIT_HOME") or Path.home() / ".cache" / "mcu-onebit"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
