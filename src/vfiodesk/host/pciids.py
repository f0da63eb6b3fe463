"""Vendor and device names from the system's pci.ids (hwdata / pciutils).

Only the vendors and devices asked for are looked up, so naming a whole host costs less than
lspci's own parse. No pci.ids file means IDs only, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.host.sysfs import read_bytes

PCI_IDS_LIMIT = 32 * 1024 * 1024  # hwdata's pci.ids is ~1.5 MB


@dataclass(frozen=True)
class PciNames:
    """Names for the (vendor, device) pairs that were looked up."""

    source: Path | None
    vendors: dict[int, str] = field(default_factory=dict)
    devices: dict[tuple[int, int], str] = field(default_factory=dict)

    def vendor(self, vendor_id: int) -> str | None:
        return self.vendors.get(vendor_id)

    def device(self, vendor_id: int, device_id: int) -> str | None:
        return self.devices.get((vendor_id, device_id))


def find_pci_ids(host: P.HostPaths) -> Path | None:
    for candidate in P.PCI_IDS_CANDIDATES:
        path = host(candidate)
        if path.is_file():
            return path
    return None


def read_pci_names(host: P.HostPaths, wanted: Iterable[tuple[int, int]]) -> PciNames:
    """Look up every (vendor, device) pair in ``wanted``.

    pci.ids (lowercase hex, a vendor line "vvvv  name" followed by its "\tdddd  name" device
    lines) is searched, not parsed: a find per wanted vendor and device, which costs about a
    millisecond where a line-by-line pass over its ~40,000 lines costs ten.
    """
    source = find_pci_ids(host)
    wanted_devices = set(wanted)
    names = PciNames(source)
    if source is None or not wanted_devices:
        return names
    try:
        data = read_bytes(source, PCI_IDS_LIMIT)
    except OSError:
        return PciNames(None)  # unreadable or not a file: IDs only, as with no pci.ids
    # The device-class section after the vendors has "C cc  " and "\tss  " lines, which
    # neither pattern below can match, so the whole file is searched as it is.
    for vendor in {vendor for vendor, _ in wanted_devices}:
        key = b"%04x  " % vendor
        line = -1 if data.startswith(key) else data.find(b"\n" + key)
        if line < 0 and not data.startswith(key):
            continue
        line_end = data.find(b"\n", line + 1)
        names.vendors[vendor] = _text(data[line + 1 + len(key):line_end])
        following = _NEXT_VENDOR.search(data, line_end)
        block = data[line_end:following.start() + 1 if following else len(data)]
        for wanted_vendor, device in wanted_devices:
            at = block.find(b"\n\t%04x  " % device) if wanted_vendor == vendor else -1
            if at >= 0:
                names.devices[(vendor, device)] = _text(block[at + 8:block.find(b"\n", at + 1)])
    return names


_NEXT_VENDOR = re.compile(rb"\n[0-9a-f]{4}  ")


def _text(rest: bytes) -> str:
    return rest.decode("utf-8", "replace").strip()
