"""Read `#define NAME value` constants from the firmware's C headers.

Facts that both C and Python need (the op specification, the serial protocol) are
written once, in a C header under firmware/, and Python reads them from there.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from .paths import firmware_dir

_DEFINE = re.compile(r"^\s*#define\s+([A-Z][A-Z0-9_]*)\s+(.+?)\s*(?:/[/*].*)?$")


@lru_cache(maxsize=None)
def read_defines(relative_path: str) -> dict[str, int | str]:
    """Integer and string constants defined in firmware/<relative_path>."""
    text = (firmware_dir() / relative_path).read_text()
    values: dict[str, int | str] = {}
    for line in text.splitlines():
        match = _DEFINE.match(line)
        if not match:
            continue
        name, raw = match.groups()
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"'):
            values[name] = raw[1:-1]
            continue
        raw = raw.strip("()").rstrip("uUlL")
        try:
            values[name] = int(raw, 0)
        except ValueError:
            pass  # macros with expressions are C-only
    return values


def header_path(relative_path: str) -> Path:
    return firmware_dir() / relative_path
