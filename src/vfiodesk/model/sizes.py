"""Memory sizes as users write them (``8G``, ``512MiB``, ``2048M``)."""

from __future__ import annotations

import re

from vfiodesk.errors import InputError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

_UNITS = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_HINT = "write a size as a number and a unit, like 8G, 8GiB, 512M or 2048MiB"


def parse_size(text: str, *, default_unit: str = "") -> int:
    """Bytes in ``text``; binary units (G = GiB) as libvirt and QEMU read them."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise InputError(f"{text!r} is not a size", _HINT)
    number, unit = match.groups()
    if not unit and text.strip().lower().endswith("b"):
        unit = "b"
    multiplier = _UNITS[(unit or default_unit).lower()]
    value = float(number) * multiplier
    if value != int(value):
        raise InputError(f"{text!r} is not a whole number of bytes", _HINT)
    if value <= 0:
        raise InputError(f"{text!r} must be larger than zero", _HINT)
    return int(value)


def format_size(size: int) -> str:
    """The largest binary unit that divides ``size`` exactly (``8GiB``, ``1536MiB``)."""
    for name, unit in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size}B"
