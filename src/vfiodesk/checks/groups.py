"""What passing an IOMMU group to a VM would take.

VFIO hands a VM whole groups: every endpoint in the group must be bound to vfio-pci (or
no driver) or the group is "not viable" (Documentation/driver-api/vfio.rst, "Groups,
Devices, and IOMMUs"). Bridges and root ports stay with the host.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from vfiodesk.model.pci import CLASS_BRIDGE, PciAddress, PciDevice


class Role(enum.StrEnum):
    TARGET = "target"  # a device the user names (or the GPU, in listings)
    COMPANION = "companion"  # another function of a GPU's card (HDMI audio, USB-C)
    HOST_DISPLAY = "host display"  # the GPU the host shows its own screen on: not a candidate
    BRIDGE = "bridge"  # PCI bridge / root port: never bound, does not block
    STRANGER = "stranger"  # anything else in the group: would have to go too


@dataclass(frozen=True)
class GroupView:
    """A group's members with their roles relative to a set of targets."""

    number: int | None
    roles: tuple[tuple[PciDevice, Role], ...]

    @property
    def strangers(self) -> list[PciDevice]:
        """Members that would have to leave the host with the targets (the host's display too)."""
        targeted = any(role is Role.TARGET for _, role in self.roles)
        return [device for device, role in self.roles
                if role is Role.STRANGER or (role is Role.HOST_DISPLAY and targeted)]

    @property
    def endpoints(self) -> list[PciDevice]:
        return [device for device, role in self.roles if role is not Role.BRIDGE]

    @property
    def is_clean(self) -> bool:
        """Nothing but the targets' own cards (and bridges) shares the group."""
        return not self.strangers

    def role_of(self, address: PciAddress) -> Role:
        return next(role for device, role in self.roles if device.address == address)


def find_host_display(devices: Sequence[PciDevice]) -> PciAddress | None:
    """The GPU the host keeps for its own screen: the only GPU, or the boot GPU when it is
    integrated (on a root bus, as Intel's iGPU at 00:02.0). A discrete boot GPU next to
    another GPU is a candidate: the firmware merely started on it."""
    displays = [device for device in devices if device.is_display]
    if len(displays) == 1:
        return displays[0].address
    boot = [device for device in displays if device.boot_vga]
    if len(boot) == 1 and boot[0].address.bus == 0:
        return boot[0].address
    return None


def classify_group(number: int | None, members: Sequence[PciDevice], targets: Collection[PciAddress],
                   host_display: PciAddress | None = None) -> GroupView:
    """Roles of ``members`` when ``targets`` are to be passed through.

    A companion is another function of a GPU's own card (the slot of a display function that
    is named, or the host's display). Functions sharing a chipset slot (00:1f.x) are not one
    card; nor is a non-PCI bridge (ISA/LPC) a PCI bridge that may stay."""
    cards = {device.address.slot_key for device in members
             if device.is_display and (device.address in targets or device.address == host_display)}
    roles = []
    for device in members:
        if device.is_bridge:
            role = Role.BRIDGE
        elif device.address in targets:
            role = Role.TARGET
        elif device.address == host_display:
            role = Role.HOST_DISPLAY
        elif device.address.slot_key in cards:
            role = Role.COMPANION
        else:
            role = Role.STRANGER
        roles.append((device, role))
    return GroupView(number, tuple(roles))


def default_targets(members: Sequence[PciDevice], host_display: PciAddress | None) -> list[PciAddress]:
    """What a listing assumes the user would pass: the group's GPUs but the host's display;
    nothing in the host display's group; else the first endpoint that is not a bridge."""
    displays = [device.address for device in members if device.is_display]
    if host_display in displays:
        return [address for address in displays if address != host_display]
    if displays:
        return displays
    endpoints = [device.address for device in members if device.base_class != CLASS_BRIDGE]
    return endpoints[:1]
