"""Vendor and device names from the system's pci.ids (hwdata / pciutils).

Only the vendors asked for are parsed, in one pass, so naming a whole host costs about
as much as lspci's own lookup. No pci.ids file means IDs only, never an error.
"""

from __future__ import annotations

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
    """Look up every (vendor, device) pair in ``wanted``."""
    source = find_pci_ids(host)
    wanted_devices = set(wanted)
    if source is None or not wanted_devices:
        return PciNames(source)
    wanted_vendors = {vendor for vendor, _ in wanted_devices}
    names = PciNames(source)
    current: int | None = None
    try:
        lines = read_bytes(source, PCI_IDS_LIMIT).splitlines(keepends=True)
    except OSError:
        return PciNames(None)  # unreadable or not a file: IDs only, as with no pci.ids
    for raw in lines:
        if raw[:1] == b"\t":
            if current is None or raw[:2] == b"\t\t":
                continue
            device_id = _hex4(raw[1:5])
            if device_id is not None and (current, device_id) in wanted_devices:
                names.devices[(current, device_id)] = _text(raw[5:])
            continue
        if raw[:1] in (b"#", b"\n"):
            continue
        if raw[:2] == b"C ":
            break  # the device-class section follows the vendors
        vendor_id = _hex4(raw[:4])
        current = vendor_id if vendor_id in wanted_vendors else None
        if current is not None:
            names.vendors[current] = _text(raw[4:])
    return names


def _hex4(chunk: bytes) -> int | None:
    try:
        return int(chunk, 16) if len(chunk) == 4 else None
    except ValueError:
        return None


def _text(rest: bytes) -> str:
    return rest.decode("utf-8", "replace").strip()
