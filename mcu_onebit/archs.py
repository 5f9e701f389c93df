"""The architecture names `train --arch` takes, parsed without Keras (so a wrong name is
refused at once); `models.build_model` builds what they name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import OnebitError

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
ARCHS = ("tiny-resnet", "cnn-small", "wrn-D-K (D = 6n+2, e.g. wrn-8-1, wrn-14-2, wrn-20-4)")


@dataclass(frozen=True)
class Arch:
    family: str  # tiny-resnet, cnn-small or wrn
    depth: int = 0  # wrn only
    k: int = 0  # wrn only: the width multiplier


def parse_arch(arch: str) -> Arch:
    if arch in ("tiny-resnet", "cnn-small"):
        return Arch(arch)
    match = _WRN.match(arch)
    if match:
        depth, k = int(match.group(1)), int(match.group(2))
        if depth < 8 or (depth - 2) % 6 or k < 1:
            raise OnebitError(f"--arch {arch}: WRN depth must be 6n+2 >= 8 and width >= 1 (e.g. wrn-20-4)")
        return Arch("wrn", depth, k)
    raise OnebitError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHS)}")


# Measured on CIFAR-10 (docs/training.md): learned BN scale and offset lift a 1-bit WRN-8-1
# from 63.1 % to 73.5 % validation accuracy in 10 epochs; McDonnell 2018 drops them for
# networks wide enough to overfit (WRN-20-10), which small ones are not.
WIDE_K = 10


def default_bn_affine(arch: str) -> bool:
    """Whether `train` gives the inner BNs a learned scale and offset unless told."""
    parsed = parse_arch(arch)
    return not (parsed.family == "wrn" and parsed.k >= WIDE_K)
