"""The `devices` listing as data: scanned, grouped, and turned into JSON without click or rich,
so `devices --json` can run before the CLI framework is even imported (cli/fast.py)."""

from __future__ import annotations

from dataclasses import dataclass

from vfiodesk.checks.groups import GroupView, Role, classify_group, default_targets, find_host_display
from vfiodesk.checks.reset import reset_advice
from vfiodesk.host.pci import group_devices, read_iommu_group_numbers, scan_pci_devices
from vfiodesk.host.pciids import PciNames, read_pci_names
from vfiodesk.model.pci import PciDevice
from vfiodesk.paths import HostPaths


@dataclass(frozen=True)
class DeviceListing:
    views: list[GroupView]
    names: PciNames
    iommu_enabled: bool


def scan_listing(host: HostPaths) -> DeviceListing:
    """Every PCI function, grouped by IOMMU group (no group last), with roles and names."""
    found = scan_pci_devices(host)
    names = read_pci_names(host, {(d.vendor_id, d.device_id) for d in found})
    host_display = find_host_display(found)
    views = [classify_group(number, members,
                            default_targets(members, host_display) if number is not None else [],
                            host_display)
             for number, members in sorted(group_devices(found).items(),
                                           key=lambda item: (item[0] is None, item[0] or 0))]
    return DeviceListing(views, names, bool(read_iommu_group_numbers(host)))


def listing_json(listing: DeviceListing) -> dict[str, object]:
    return {
        "iommu_enabled": listing.iommu_enabled,
        "devices": [device_json(device, role, listing.names) for view in listing.views
                    for device, role in view.roles],
        "groups": [{"number": view.number, "clean": view.is_clean,
                    "devices": [str(device.address) for device, _ in view.roles]}
                   for view in listing.views if view.number is not None],
    }


def device_json(device: PciDevice, role: Role | None, names: PciNames) -> dict[str, object]:
    def hex_or_none(value: int | None, digits: int) -> str | None:
        return None if value is None else f"{value:0{digits}x}"

    known = device.identified
    return {
        "address": str(device.address),
        "vendor_id": f"{device.vendor_id:04x}" if known else None,
        "device_id": f"{device.device_id:04x}" if known else None,
        "subsystem_vendor_id": hex_or_none(device.subsystem_vendor_id, 4),
        "subsystem_device_id": hex_or_none(device.subsystem_device_id, 4),
        "class_code": f"{device.class_code:06x}" if known else None,
        "revision": hex_or_none(device.revision, 2),
        "vendor_name": names.vendor(device.vendor_id),
        "device_name": names.device(device.vendor_id, device.device_id),
        "driver": device.driver,
        "iommu_group": device.iommu_group,
        "boot_vga": device.boot_vga,
        "reset_methods": None if device.reset_methods is None else list(device.reset_methods),
        "numa_node": device.numa_node,
        "driver_override": device.driver_override,
        "role": None if device.iommu_group is None or role is None else role.value,
        "reset_warnings": reset_advice(device),
        "problems": list(device.problems),
    }
