"""Which devices a passthrough binds, and why it might refuse.

VFIO passes whole IOMMU groups: every endpoint of a group must leave its host driver
(Documentation/driver-api/vfio.rst, "Groups, Devices, and IOMMUs"); bridges stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vfiodesk.checks.groups import GroupView, Role, classify_group, find_host_display
from vfiodesk.errors import HostReadError, InputError, RefusedError
from vfiodesk.host.pci import group_devices
from vfiodesk.host.usage import HostUsage
from vfiodesk.model.pci import PciAddress, PciDevice, PciPattern

VFIO_DRIVER = "vfio-pci"
NVIDIA_VENDOR = 0x10DE
# Unload order: users first (nvidia_drm, nvidia_modeset, nvidia_uvm), then the core module.
NVIDIA_MODULES = ("nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia")
# Load order on the way back: the core module first, then the modules that depend on it.
NVIDIA_LOAD_ORDER = ("nvidia", "nvidia_modeset", "nvidia_drm", "nvidia_uvm")
NVIDIA_PERSISTENCED = "nvidia-persistenced"
PERSISTENCED_COMM = NVIDIA_PERSISTENCED[:15]  # /proc/PID/comm keeps 15 characters
_FORCE_HINT = "pass --force if you really mean it (the host may lose that device)"


@dataclass(frozen=True)
class BindPlan:
    groups: tuple[GroupView, ...]
    to_bind: tuple[PciDevice, ...]  # endpoints that must move to vfio-pci, in address order
    already_bound: tuple[PciDevice, ...]
    free_consoles: tuple[str, ...]  # vtcon entries to unbind first (the boot GPU's console)
    free_framebuffers: tuple[str, ...]  # efifb/simpledrm devices on the boot GPU's memory
    unload_nvidia: bool  # the host keeps no NVIDIA GPU on the nvidia driver
    warnings: tuple[str, ...]
    host_display: PciAddress | None = None  # set when the plan takes the host's own display

    @property
    def devices(self) -> tuple[PciDevice, ...]:
        return self.to_bind + self.already_bound


def select_devices(devices: Sequence[PciDevice], patterns: Sequence[PciPattern]) -> list[PciDevice]:
    """The functions the user named; every pattern must match something."""
    chosen: list[PciDevice] = []
    for pattern in patterns:
        matched = [device for device in devices if pattern.matches(device.address)]
        if not matched:
            raise InputError(f"no PCI device {pattern} on this host",
                             "list the devices with `vfiodesk devices`")
        chosen += [device for device in matched if device not in chosen]
    return chosen


def plan_bind(devices: Sequence[PciDevice], patterns: Sequence[PciPattern], usage: HostUsage, *,
              force: bool = False) -> BindPlan:
    """Plan moving the named devices (and their group mates) to vfio-pci."""
    named = select_devices(devices, patterns)
    for device in named:
        if device.is_bridge:
            raise InputError(f"{device.address} is a bridge or root port; bridges stay with the host",
                             "name the endpoint devices behind it instead")
        if device.iommu_group is None:
            raise HostReadError(f"{device.address} has no IOMMU group: the IOMMU is off",
                                "enable it: vfiodesk doctor shows how")
    groups = group_devices(devices)
    targets = [device.address for device in named]
    numbers = sorted({device.iommu_group for device in named if device.iommu_group is not None})
    host_display = find_host_display(devices)
    views = tuple(classify_group(number, groups[number], targets, host_display) for number in numbers)
    refusals, warnings = _judge(views, usage)
    taken_display = host_display if host_display in targets else None
    if taken_display is not None:
        warnings.append(f"{taken_display} is the host's own display (its boot GPU): the host has no "
                        "picture while it is away")
    if refusals and not force:
        raise RefusedError("; ".join(refusals), _FORCE_HINT)
    endpoints = [device for view in views for device in view.endpoints]
    junk = next((device for device in endpoints if device.problems), None)
    if junk is not None:  # a decision on a half-read device would be a guess
        raise HostReadError(f"{junk.address} holds junk in sysfs: {junk.problems[0]}",
                            "vfiodesk devices shows it; reboot (or reseat the card), or take a new snapshot")
    to_bind = tuple(device for device in endpoints if device.driver != VFIO_DRIVER)
    already = tuple(device for device in endpoints if device.driver == VFIO_DRIVER)
    boot_gpu_moves = any(device.is_display and device.boot_vga for device in to_bind)
    moving_nvidia = [d for d in to_bind if d.vendor_id == NVIDIA_VENDOR and d.driver == "nvidia"]
    staying_nvidia = [d for d in devices if d.driver == "nvidia" and d not in endpoints]
    if moving_nvidia and staying_nvidia:
        warnings.append(f"the host keeps NVIDIA GPU {staying_nvidia[0].address} on the nvidia driver: "
                        "the NVIDIA modules stay loaded")
    unload = bool(moving_nvidia) and not staying_nvidia
    if unload:
        # nvidia-persistenced holds the device nodes by design and is stopped first; anyone
        # else holding them (a desktop, CUDA) would make the unload fail halfway.
        others = [h for h in usage.nvidia_holders if h.split(" ", 1)[1] != PERSISTENCED_COMM]
        if others and not force:
            raise RefusedError(f"/dev/nvidia* is held by {', '.join(others)}",
                               "close those programs (or log out of the desktop) first")
    return BindPlan(views, to_bind, already, usage.fb_consoles if boot_gpu_moves else (),
                    usage.platform_fbs if boot_gpu_moves else (), unload, tuple([*refusals, *warnings]),
                    taken_display)


def _judge(views: Sequence[GroupView], usage: HostUsage) -> tuple[list[str], list[str]]:
    refusals: list[str] = []
    warnings: list[str] = []
    for view in views:
        for device, role in view.roles:
            if role is Role.BRIDGE:
                continue
            where = f"{device.address} (IOMMU group {view.number})"
            if role is Role.STRANGER:
                refusals.append(f"{where} shares the group but was not named: VFIO needs the whole group")
            if role is Role.HOST_DISPLAY:
                refusals.append(f"{where} is the host's own display and shares the group")
            if device.address in usage.root_fs:
                refusals.append(f"{where} carries the root filesystem")
            if device.address in usage.default_route:
                refusals.append(f"{where} is the NIC of the default route")
            holders = usage.device_holders.get(device.address)
            if holders:
                refusals.append(f"{where} is in use by {', '.join(holders)} (a display server?)")
    return refusals, warnings
