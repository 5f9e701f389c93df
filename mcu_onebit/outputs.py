"""Where a command may write, checked before its long work starts.

A command that computes for minutes must not fail at the end because its output cannot
be saved, and it must never replace what it did not write. So each command checks its
outputs first: `check_file_target` for a report or model file, `check_output_dir` for
`convert --out`, whose folder is replaced as a whole and may be replaced only when it is
empty or holds nothing but what mcu-onebit wrote there. Nothing is made or left behind
by a check.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import OnebitError

def _nearest_existing(path: Path) -> Path:
    parent = path.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_writable_folder(folder: Path, what: str) -> None:
    """`folder`, or the nearest folder above it that exists, takes new files: probed by
    making and removing one (permissions, read-only disks, and root alike)."""
    existing = _nearest_existing(Path(folder))
    if not existing.is_dir():
        raise OnebitError(f"cannot write {what}: {existing} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OnebitError(f"cannot write {what}: {exc.strerror or exc} in {existing}; choose another path") from None


def check_file_target(path: Path, what: str, suffix: str) -> None:
    """`path` can be written as a file: not a folder, the right suffix, a writable parent."""
    path = Path(path)
    if path.is_dir():
        example = {".h5": "model.h5"}.get(suffix, f"report{suffix}")
        raise OnebitError(f"{what} {path} is a folder; name a file in it, e.g. {path / example}")
    if path.suffix != suffix:
        raise OnebitError(f"{what} {path} must name a {suffix} file (e.g. {path.with_suffix(suffix)})")
    check_writable_folder(path.parent, f"{what} {path}")


def listing(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted relative POSIX paths (links are not followed)."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(out)


def check_output_dir(folder: Path, owns: Callable[[str], bool] | None) -> None:
    """`convert --out folder` may go ahead: the folder is absent, empty, or every file in it
    is one that `owns` (None: the folder is not a convert's) says mcu-onebit wrote; and its
    parent takes new files (the new output is staged beside it, then renamed into place)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OnebitError(f"--out {folder} is a file; give a folder for the model, report and project")
    if folder.is_dir():
        files = listing(folder)
        if files:
            if owns is None:
                raise OnebitError(f"--out {folder} holds files that `mcu-onebit convert` did not write (e.g. {files[0]}); "
                                  "choose another --out or empty it")
            foreign = [f for f in files if not owns(f)]
            if foreign:
                raise OnebitError(f"--out {folder} holds {folder / foreign[0]}, which mcu-onebit did not write, and "
                                  "converting replaces the whole folder; move it away or choose another --out")
    check_writable_folder(folder.absolute().parent, f"--out {folder}")


def replace_folder(out: Path, fill: Callable[[Path], None], recheck: Callable[[], None],
                   replacing: Callable[[], None] = lambda: None) -> None:
    """Write the folder `out` as a whole, atomically: `fill` writes a staging folder beside
    it; then `recheck` (the folder may have changed meanwhile) and, when `out` exists,
    `replacing` run, and one rename puts the new folder in place. A failure leaves
    nothing behind, and an OSError is one line naming --out."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise OnebitError(f"cannot write --out {out}: {exc.strerror or exc} ({exc.filename or out})") from None
    try:
        fill(staging)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the folder from the team
        recheck()
        if out.exists():
            replacing()
            shutil.rmtree(out)
        os.replace(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OnebitError(f"cannot write --out {out}: {exc.strerror or exc} ({exc.filename or out})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
