"""What passing an IOMMU group to a VM would take.

VFIO hands a VM whole groups: every endpoint in the group must be bound to vfio-pci (or
no driver) or the group is "not viable" (Documentation/driver-api/vfio.rst, "Groups,
Devices, and IOMMUs"). Bridges and root ports stay with the host.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from vfiodesk.model.pci import PciAddress, PciDevice


class Role(enum.StrEnum):
    TARGET = "target"  # a device the user names (or the GPU, in listings)
    COMPANION = "companion"  # another function of a target's card (HDMI audio, USB-C)
    BRIDGE = "bridge"  # root port / bridge: never bound, does not block
    STRANGER = "stranger"  # anything else in the group: would have to go too


@dataclass(frozen=True)
class GroupView:
    """A group's members with their roles relative to a set of targets."""

    number: int | None
    roles: tuple[tuple[PciDevice, Role], ...]

    @property
    def strangers(self) -> list[PciDevice]:
        return [device for device, role in self.roles if role is Role.STRANGER]

    @property
    def endpoints(self) -> list[PciDevice]:
        return [device for device, role in self.roles if role is not Role.BRIDGE]

    @property
    def is_clean(self) -> bool:
        """Nothing but the targets' own cards (and bridges) shares the group."""
        return not self.strangers

    def role_of(self, address: PciAddress) -> Role:
        return next(role for device, role in self.roles if device.address == address)


def classify_group(number: int | None, members: Sequence[PciDevice],
                   targets: Collection[PciAddress]) -> GroupView:
    """Roles of ``members`` when ``targets`` are to be passed through."""
    target_slots = {address.slot_key for address in targets}
    roles = []
    for device in members:
        if device.is_bridge:
            role = Role.BRIDGE
        elif device.address in targets:
            role = Role.TARGET
        elif device.address.slot_key in target_slots:
            role = Role.COMPANION
        else:
            role = Role.STRANGER
        roles.append((device, role))
    return GroupView(number, tuple(roles))


def default_targets(members: Sequence[PciDevice]) -> list[PciAddress]:
    """What a listing assumes the user would pass: the group's GPUs, else its first card."""
    displays = [device.address for device in members if device.is_display]
    if displays:
        return displays
    endpoints = [device.address for device in members if not device.is_bridge]
    return endpoints[:1]
