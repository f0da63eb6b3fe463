"""PCI devices and IOMMU groups from /sys/bus/pci and /sys/kernel/iommu_groups."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError, VfiodeskError
from vfiodesk.host.sysfs import read_attr, read_hex_attr, read_int_attr, read_link_name
from vfiodesk.model.pci import PciAddress, PciDevice

# typing is not imported at run time (`devices --json` starts faster without it); mypy reads
# the name TYPE_CHECKING as typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

_NOT_A_TREE_HINT = "give --root a directory that mirrors / (with sys/bus/pci) or a snapshot archive"


def scan_pci_devices(host: P.HostPaths) -> list[PciDevice]:
    """Every PCI function under the root, sorted by address.

    A device whose files are unreadable or garbage is still listed, with the reason in
    ``problems``, so one bad device never hides the others.
    """
    devices_dir = host(P.SYS_PCI_DEVICES)
    try:
        names = os.listdir(devices_dir)
    except FileNotFoundError:
        raise HostReadError(f"{devices_dir} does not exist: {host.root} is not a host tree",
                            _NOT_A_TREE_HINT) from None
    except NotADirectoryError:
        raise HostReadError(f"{devices_dir} is not a directory", _NOT_A_TREE_HINT) from None
    devices = []
    for name in names:
        try:
            address = PciAddress.parse(name)
        except VfiodeskError:
            continue  # not a function entry (stray file in a hand-made tree)
        devices.append(read_pci_device(host, address))
    # The fields' tuple, compared in C: the dataclass's own ordering runs Python per comparison.
    return sorted(devices, key=lambda found: _address_key(found.address))


def _address_key(address: PciAddress) -> tuple[int, int, int, int]:
    return (address.domain, address.bus, address.slot, address.function)


def read_pci_device(host: P.HostPaths, address: PciAddress) -> PciDevice:
    """One function's attributes (Documentation/ABI/testing/sysfs-bus-pci)."""
    # Plain strings, not Path objects: this runs for every file of every device.
    base = os.path.join(host.root, P.SYS_PCI_DEVICES, str(address))
    if not os.path.exists(base):
        raise HostReadError(f"no PCI device {address} on this host",
                            "list the devices with `vfiodesk devices`")
    problems: list[str] = []

    def guarded(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except HostReadError as exc:
            problems.append(exc.message)
            return None

    vendor = guarded(lambda: read_hex_attr(f"{base}/vendor", 4))
    device = guarded(lambda: read_hex_attr(f"{base}/device", 4))
    class_code = guarded(lambda: read_hex_attr(f"{base}/class", 6))
    if vendor is None or device is None or class_code is None:
        problems.append(f"{base} lacks readable vendor/device/class files")
        # All three unknown (0): half an identity would be a plausible wrong one.
        vendor = device = class_code = None
    reset_text = guarded(lambda: read_attr(f"{base}/reset_method"))
    boot_vga = guarded(lambda: read_int_attr(f"{base}/boot_vga"))
    numa = guarded(lambda: read_int_attr(f"{base}/numa_node"))
    override = guarded(lambda: read_attr(f"{base}/driver_override"))
    return PciDevice(
        address=address,
        vendor_id=vendor or 0,
        device_id=device or 0,
        class_code=class_code or 0,
        subsystem_vendor_id=guarded(lambda: read_hex_attr(f"{base}/subsystem_vendor", 4)),
        subsystem_device_id=guarded(lambda: read_hex_attr(f"{base}/subsystem_device", 4)),
        revision=guarded(lambda: read_hex_attr(f"{base}/revision", 2)),
        driver=guarded(lambda: read_link_name(f"{base}/driver")),
        iommu_group=guarded(lambda: _group_number(f"{base}/iommu_group")),
        boot_vga=None if boot_vga is None else boot_vga == 1,
        # reset_method exists since Linux 5.15; an empty file means no reset at all.
        reset_methods=None if reset_text is None else tuple(reset_text.split()),
        numa_node=None if numa is None or numa < 0 else numa,
        # sysfs prints "(null)" when no override is set.
        driver_override=None if override in (None, "", "(null)") else override,
        problems=tuple(problems),
    )


def _group_number(link: str) -> int | None:
    name = read_link_name(link)
    if name is None:
        return None
    if not name.isdecimal() or len(name) > 9:
        raise HostReadError(f"{link} points to group {name[:40]!r}, not a group number",
                            "the host tree is damaged; take a fresh snapshot")
    return int(name)


def read_iommu_group_numbers(host: P.HostPaths) -> list[int]:
    """The IOMMU groups the kernel created; empty when the IOMMU is off."""
    try:
        names = os.listdir(host(P.SYS_IOMMU_GROUPS))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(name) for name in names if name.isdecimal())


def group_devices(devices: Iterable[PciDevice]) -> dict[int | None, list[PciDevice]]:
    """Devices keyed by IOMMU group (None: no group, i.e. the IOMMU is off or ignores them)."""
    groups: dict[int | None, list[PciDevice]] = {}
    for device in devices:
        groups.setdefault(device.iommu_group, []).append(device)
    return groups
