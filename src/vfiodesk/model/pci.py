"""PCI addresses, class codes and the devices read from sysfs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vfiodesk.errors import InputError

_ADDRESS_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<slot>[0-9a-fA-F]{1,2})"
    r"(?:\.(?P<function>[0-7]))?$"
)
_ADDRESS_HINT = "write a PCI address as 0000:01:00.0, 01:00.0, or 01:00 for every function of a slot"


@dataclass(frozen=True, order=True)
class PciAddress:
    """A PCI function address (domain:bus:slot.function)."""

    domain: int
    bus: int
    slot: int
    function: int

    def __post_init__(self) -> None:
        limits = (("domain", self.domain, 0xFFFF), ("bus", self.bus, 0xFF),
                  ("slot", self.slot, 0x1F), ("function", self.function, 7))
        for name, value, limit in limits:
            if not 0 <= value <= limit:
                raise InputError(f"PCI {name} {value:#x} is out of range (0..{limit:#x})",
                                 _ADDRESS_HINT)

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """Parse one function's address; the domain defaults to 0000."""
        pattern = parse_pci_pattern(text)
        if pattern.function is None:
            raise InputError(f"{text!r} names a slot, not one PCI function", _ADDRESS_HINT)
        return cls(pattern.domain, pattern.bus, pattern.slot, pattern.function)

    @property
    def slot_key(self) -> tuple[int, int, int]:
        """Functions of one physical card share this key."""
        return (self.domain, self.bus, self.slot)

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


@dataclass(frozen=True)
class PciPattern:
    """A user's device argument: one function, or every function of a slot."""

    domain: int
    bus: int
    slot: int
    function: int | None

    def matches(self, address: PciAddress) -> bool:
        same_slot = (self.domain, self.bus, self.slot) == address.slot_key
        return same_slot and self.function in (None, address.function)

    def __str__(self) -> str:
        slot = f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}"
        return slot if self.function is None else f"{slot}.{self.function:x}"


def parse_pci_pattern(text: str) -> PciPattern:
    """Parse ``0000:01:00.0``, ``01:00.0`` or ``01:00`` (a whole slot)."""
    match = _ADDRESS_RE.match(text.strip())
    if match is None:
        raise InputError(f"{text!r} is not a PCI address", _ADDRESS_HINT)
    domain = int(match["domain"] or "0", 16)
    bus, slot = int(match["bus"], 16), int(match["slot"], 16)
    function = None if match["function"] is None else int(match["function"])
    PciAddress(domain, bus, slot, function or 0)  # range check
    return PciPattern(domain, bus, slot, function)


# PCI class codes (PCI Code and ID Assignment Specification), top byte then sub-class.
CLASS_DISPLAY = 0x03
CLASS_MULTIMEDIA = 0x04
CLASS_BRIDGE = 0x06
CLASS_SERIAL_BUS = 0x0C
SUBCLASS_USB = 0x03
SUBCLASS_AUDIO_DEVICE = 0x03  # 0x0403: HD Audio, as on a GPU's HDMI function
SUBCLASS_VGA = 0x00
# PCI bridges stay with the host and do not block a group: host (00), PCI-to-PCI (04),
# CardBus (07), semi-transparent PCI-to-PCI (09); pcieport lets vfio share their group.
# Non-PCI bridges (ISA/LPC 01, other 80) are chipset functions with host drivers (lpc_ich:
# TPM, super I/O, watchdog): a group holding one is not viable for VFIO.
BRIDGE_SUBCLASSES_NEVER_BOUND = frozenset({0x00, 0x04, 0x07, 0x09})


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as sysfs describes it."""

    address: PciAddress
    vendor_id: int
    device_id: int
    class_code: int
    subsystem_vendor_id: int | None = None
    subsystem_device_id: int | None = None
    revision: int | None = None
    driver: str | None = None
    iommu_group: int | None = None
    boot_vga: bool | None = None
    reset_methods: tuple[str, ...] | None = None
    numa_node: int | None = None
    driver_override: str | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def base_class(self) -> int:
        return self.class_code >> 16

    @property
    def sub_class(self) -> int:
        return (self.class_code >> 8) & 0xFF

    @property
    def is_display(self) -> bool:
        return self.base_class == CLASS_DISPLAY

    @property
    def is_bridge(self) -> bool:
        """PCI bridges and root ports stay with the host: vfio-pci does not take them."""
        return self.base_class == CLASS_BRIDGE and self.sub_class in BRIDGE_SUBCLASSES_NEVER_BOUND

    @property
    def is_usb_controller(self) -> bool:
        return self.base_class == CLASS_SERIAL_BUS and self.sub_class == SUBCLASS_USB

    @property
    def identified(self) -> bool:
        """False when sysfs held no readable vendor/device/class (PCI-SIG assigns no vendor 0)."""
        return self.vendor_id != 0

    @property
    def ids(self) -> str:
        """``vendor:device`` as lspci -n prints it."""
        return f"{self.vendor_id:04x}:{self.device_id:04x}"
