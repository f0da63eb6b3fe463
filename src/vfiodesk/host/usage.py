"""What the host itself is using: the root filesystem's disk, the default route's NIC,
framebuffer consoles, and processes holding a GPU's DRM or NVIDIA device nodes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from vfiodesk import paths as P
from vfiodesk.host.sysfs import FILE_LIMIT, read_attr
from vfiodesk.model.pci import PciAddress

_PCI_IN_PATH = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


@dataclass(frozen=True)
class HostUsage:
    root_fs: frozenset[PciAddress] = frozenset()  # controllers behind / (all of the path)
    default_route: frozenset[PciAddress] = frozenset()  # NICs the default route leaves by
    fb_consoles: tuple[str, ...] = ()  # vtcon entries bound to a framebuffer console
    platform_fbs: tuple[str, ...] = ()  # "driver/device" firmware framebuffers (efifb, simpledrm)
    device_holders: dict[PciAddress, tuple[str, ...]] = field(default_factory=dict)  # "pid comm"
    nvidia_holders: tuple[str, ...] = ()


def _pci_chain(host: P.HostPaths, link: str) -> set[PciAddress]:
    """Every PCI function on the sysfs path of ``link`` (a device behind bridges names them all)."""
    try:
        real = os.path.realpath(host(link))
    except OSError:
        return set()
    return {PciAddress.parse(match) for match in _PCI_IN_PATH.findall(real)}


def _block_devices_under(host: P.HostPaths, name: str, depth: int = 0) -> set[PciAddress]:
    """PCI functions behind a block device, through dm/md/partition layers (slaves/)."""
    found = _pci_chain(host, f"{P.SYS_CLASS_BLOCK}/{name}")
    if depth < 8:
        try:
            slaves = os.listdir(host(P.SYS_CLASS_BLOCK, name, "slaves"))
        except OSError:
            slaves = []
        for slave in slaves:
            found |= _block_devices_under(host, slave, depth + 1)
    return found


def read_root_fs_devices(host: P.HostPaths) -> frozenset[PciAddress]:
    text = read_attr(host(P.PROC_MOUNTS), FILE_LIMIT) or ""
    found: set[PciAddress] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "/" and fields[0].startswith("/dev/"):
            name = os.path.basename(os.path.realpath(host(fields[0][1:]))
                                    if os.path.islink(host(fields[0][1:])) else fields[0])
            found |= _block_devices_under(host, name)
    return frozenset(found)


def read_default_route_devices(host: P.HostPaths) -> frozenset[PciAddress]:
    """NICs of the IPv4 default route (proc/net/route: destination 00000000)."""
    text = read_attr(host(P.PROC_NET_ROUTE), FILE_LIMIT) or ""
    found: set[PciAddress] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "00000000":
            found |= _pci_chain(host, f"{P.SYS_CLASS_NET}/{fields[0]}/device")
    return frozenset(found)


def read_fb_consoles(host: P.HostPaths) -> tuple[str, ...]:
    """vtcon entries bound to the framebuffer console (Documentation/driver-api/console.rst)."""
    bound = []
    try:
        names = sorted(os.listdir(host(P.SYS_VTCONSOLE)))
    except OSError:
        return ()
    for name in names:
        if "frame buffer" in (read_attr(host(P.SYS_VTCONSOLE, name, "name")) or "") and \
                read_attr(host(P.SYS_VTCONSOLE, name, "bind")) == "1":
            bound.append(name)
    return tuple(bound)


# Firmware framebuffers that sit on the boot GPU's memory until its real driver takes over.
_PLATFORM_FB_DRIVERS = ("efi-framebuffer", "simple-framebuffer", "simpledrm", "vesa-framebuffer")


def read_platform_framebuffers(host: P.HostPaths) -> tuple[str, ...]:
    """Bound firmware framebuffer devices, as ``driver/device`` (sys/bus/platform/drivers)."""
    bound = []
    for driver in _PLATFORM_FB_DRIVERS:
        try:
            entries = os.listdir(host(P.SYS_PLATFORM_DRIVERS, driver))
        except OSError:
            continue
        bound += [f"{driver}/{entry}" for entry in sorted(entries) if "framebuffer" in entry]
    return tuple(bound)


def _device_nodes(host: P.HostPaths, address: PciAddress) -> set[str]:
    """/dev/dri nodes of a GPU (its drm/cardN and renderDN children)."""
    try:
        names = os.listdir(host.pci_device(str(address)) / "drm")
    except OSError:
        return set()
    return {f"/dev/dri/{name}" for name in names if name.startswith(("card", "renderD"))}


def read_open_files(host: P.HostPaths) -> dict[str, set[str]]:
    """``pid comm`` -> device nodes each process holds open (one pass over proc/*/fd)."""
    found: dict[str, set[str]] = {}
    try:
        pids = [entry for entry in os.listdir(host(P.PROC)) if entry.isdecimal()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = os.path.join(host.root, P.PROC, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        targets = set()
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("/dev/"):
                targets.add(target)
        if targets:
            comm = read_attr(host(P.PROC, pid, "comm")) or "?"
            found[f"{pid} {comm}"] = targets
    return found


def holders_of(open_files: dict[str, set[str]], nodes: set[str]) -> tuple[str, ...]:
    """Processes holding one of ``nodes`` (a trailing ``*`` matches a prefix)."""
    exact = {node for node in nodes if not node.endswith("*")}
    prefixes = tuple(node[:-1] for node in nodes if node.endswith("*"))
    holders = [process for process, targets in open_files.items()
               if targets & exact or (prefixes and any(t.startswith(prefixes) for t in targets))]
    return tuple(sorted(holders, key=lambda h: int(h.split()[0])))


def read_host_usage(host: P.HostPaths, gpus: list[PciAddress]) -> HostUsage:
    open_files = read_open_files(host)
    return HostUsage(
        root_fs=read_root_fs_devices(host),
        default_route=read_default_route_devices(host),
        fb_consoles=read_fb_consoles(host),
        platform_fbs=read_platform_framebuffers(host),
        device_holders={gpu: holders for gpu in gpus
                        if (holders := holders_of(open_files, _device_nodes(host, gpu)))},
        nvidia_holders=holders_of(open_files, {"/dev/nvidia*"}),
    )
