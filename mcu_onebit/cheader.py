"""Read `#define NAME value` constants and X-macro tables from the firmware's C headers.

Facts that both C and Python need (the op specification, the serial protocol) are
written once, in a C header under firmware/, and Python reads them from there.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from .paths import firmware_dir

_DEFINE = re.compile(r"^\s*#define\s+([A-Z][A-Z0-9_]*)\s+(.+?)\s*(?:/[/*].*)?$")
_TABLE = re.compile(r"^\s*#define\s+([A-Z][A-Z0-9_]*)\((\w+)\)(.*)$", re.MULTILINE)


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


@lru_cache(maxsize=None)
def read_tables(relative_path: str) -> dict[str, list[tuple[str, ...]]]:
    """X-macro tables in firmware/<relative_path>: `#define NAME(X) X(a, b) X(c, d)`, over
    continued lines, gives NAME: [("a", "b"), ("c", "d")], each argument as written."""
    text = (firmware_dir() / relative_path).read_text().replace("\\\n", " ")
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    tables: dict[str, list[tuple[str, ...]]] = {}
    for name, parameter, body in _TABLE.findall(text):
        rows = re.findall(rf"\b{parameter}\(([^()]*)\)", body)
        tables[name] = [tuple(argument.strip() for argument in row.split(",")) for row in rows]
    return tables


def header_path(relative_path: str) -> Path:
    return firmware_dir() / relative_path
