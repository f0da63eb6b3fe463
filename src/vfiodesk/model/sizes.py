"""Memory sizes as users write them (``8G``, ``512MiB``, ``2048M``), in integer arithmetic."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vfiodesk.errors import InputError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

_UNITS = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
# Bounded digit counts: the number never grows past what a size can be.
_SIZE_RE = re.compile(r"^\s*(\d{1,20})(?:\.(\d{1,12}))?\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_HINT = "write a size as a number and a unit, like 8G, 8GiB, 512M or 2048MiB"


@dataclass(frozen=True)
class SizeLimits:
    """What one option accepts, so ``1B`` of RAM or ``99999T`` of disk is refused by name."""

    what: str
    minimum: int
    maximum: int


# QEMU/KVM guests and hosts: far above any real machine, far below float rounding trouble.
VM_MEMORY = SizeLimits("--memory", 128 * MIB, 16 * TIB)
VM_MEMORY_CURRENT = SizeLimits("--memory-current", 128 * MIB, 16 * TIB)
DISK_SIZE = SizeLimits("disk size=", MIB, 256 * TIB)
HUGEPAGES_SIZE = SizeLimits("hugepages SIZE", 2 * MIB, 16 * TIB)
ANY_SIZE = SizeLimits("size", 1, 1024 * TIB)


def parse_size(text: str, *, default_unit: str = "", limits: SizeLimits = ANY_SIZE) -> int:
    """Bytes in ``text``; binary units (G = GiB) as libvirt and QEMU read them."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise InputError(f"{text[:60]!r} is not a size", _HINT)
    whole, fraction, unit, suffix = match.groups()
    if not unit and suffix and suffix.lower() == "ib":
        raise InputError(f"{text!r} is not a size", _HINT)
    multiplier = _UNITS[(unit or ("b" if suffix else default_unit)).lower()]
    scale = 10 ** len(fraction or "")
    numerator = (int(whole) * scale + int(fraction or "0")) * multiplier
    if numerator % scale:
        raise InputError(f"{text!r} is not a whole number of bytes", _HINT)
    value: int = numerator // scale
    if value <= 0:
        raise InputError(f"{text!r} must be larger than zero", _HINT)
    if value < limits.minimum:
        raise InputError(f"{limits.what} {text.strip()} is too small: the least is "
                         f"{format_size(limits.minimum)}", f"give at least {format_size(limits.minimum)}")
    if value > limits.maximum:
        raise InputError(f"{limits.what} {text.strip()} is too large: the most is "
                         f"{format_size(limits.maximum)}", f"give at most {format_size(limits.maximum)}")
    return value


def format_size(size: int) -> str:
    """The largest binary unit that divides ``size`` exactly (``8GiB``, ``1536MiB``)."""
    for name, unit in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size}B"
