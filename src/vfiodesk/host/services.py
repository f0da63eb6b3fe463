"""Probes for host configuration: initramfs tool, encrypted disks, memory, routes, sound, users."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from vfiodesk import paths as P
from vfiodesk.host.configfiles import read_config
from vfiodesk.host.sysfs import FILE_LIMIT, read_attr, read_int_attr, read_link_name
from vfiodesk.host.system import find_program

# Tool name -> the program that rebuilds its images.
INITRAMFS_TOOLS = (("initramfs-tools", "update-initramfs"), ("dracut", "dracut"),
                   ("mkinitcpio", "mkinitcpio"))


def detect_initramfs_tool(host: P.HostPaths) -> str | None:
    """initramfs-tools (Debian family), dracut (Fedora, openSUSE) or mkinitcpio (Arch)."""
    for tool, program in INITRAMFS_TOOLS:
        if find_program(host, program):
            return tool
    return None


def has_encrypted_disks(host: P.HostPaths) -> bool:
    """crypttab(5) lists a device: the initramfs will ask for a passphrase on the console."""
    data = read_config(host, P.ETC_CRYPTTAB) or b""
    return any(line.strip() and not line.lstrip().startswith(b"#") for line in data.splitlines())


def _read_meminfo_kib(host: P.HostPaths, wanted: str) -> int | None:
    for line in (read_attr(host(P.PROC_MEMINFO), FILE_LIMIT) or "").splitlines():
        key, _, value = line.partition(":")
        if key == wanted and value.split()[:1] and value.split()[0].isdecimal():
            return int(value.split()[0])
    return None


def read_mem_total(host: P.HostPaths) -> int | None:
    """MemTotal from proc/meminfo, in bytes."""
    kib = _read_meminfo_kib(host, "MemTotal")
    return None if kib is None else kib * 1024


def read_default_hugepage_kib(host: P.HostPaths) -> int:
    """The default hugepage size (Hugepagesize in proc/meminfo; 2 MiB on x86 unless
    default_hugepagesz= says otherwise): what a domain's plain <hugepages/> backing uses."""
    return _read_meminfo_kib(host, "Hugepagesize") or 2048


def read_nr_hugepages(host: P.HostPaths) -> int | None:
    return read_int_attr(host(P.PROC, "sys/vm/nr_hugepages"))


def read_route_networks(host: P.HostPaths) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of the routing table (proc/net/route: little-endian hex)."""
    networks = []
    for line in (read_attr(host(P.PROC_NET_ROUTE), FILE_LIMIT) or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, mask = (socket.inet_ntoa(struct.pack("<I", int(value, 16)))
                                 for value in (fields[1], fields[7]))
            networks.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
        except (ValueError, struct.error):
            continue
    return networks


def list_net_interfaces(host: P.HostPaths) -> frozenset[str] | None:
    try:
        return frozenset(os.listdir(host(P.SYS_CLASS_NET)))
    except OSError:
        return None


def detect_sound_server(host: P.HostPaths) -> str | None:
    """pipewire (with its PulseAudio server) or pulseaudio."""
    if find_program(host, "pipewire-pulse"):
        return "pipewire"
    if find_program(host, "pulseaudio") or os.path.isfile(host(P.ETC_PULSE_DEFAULT_PA)):
        return "pulseaudio"
    return None


def user_exists(host: P.HostPaths, user: str) -> bool:
    data = read_config(host, P.ETC_PASSWD) or b""
    return any(line.split(b":", 1)[0] == user.encode() for line in data.splitlines())


def read_driver_module(host: P.HostPaths, driver: str) -> str:
    """The module behind a PCI driver (xhci_hcd is module xhci_pci); the driver name if unknown."""
    return read_link_name(host(P.SYS_PCI_DRIVERS, driver, "module")) or driver
