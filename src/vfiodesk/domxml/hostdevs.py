"""A domain's PCI hostdevs: what the hook binds at prepare and gives back at release, kept
apart from the tuning code (guest features, pinning) so the hook does not import that."""

from __future__ import annotations

from vfiodesk.domxml.document import DomainDocument, Element
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciAddress


def pci_hostdevs(doc: DomainDocument) -> list[tuple[Element, PciAddress]]:
    """PCI hostdevs with their source addresses (odd values are input errors, not crashes)."""
    found = []
    for element in doc.iter_devices("hostdev"):
        source = element.find("source/address")
        if element.get("type") == "pci" and source is not None:
            found.append((element, PciAddress(*(_hex(source.get(key, "0"))
                                                for key in ("domain", "bus", "slot", "function")))))
    return found


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise InputError(f"hostdev address value {text[:20]!r} is not a number",
                         "fix the <hostdev> source address (virsh edit)") from None
