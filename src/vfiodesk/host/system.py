"""Facts about the host system: CPU vendor and flags, firmware tables, tools, distro, groups."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from vfiodesk import paths as P
from vfiodesk.host.sysfs import FILE_LIMIT, read_attr


@dataclass(frozen=True)
class CpuInfo:
    vendor: str | None  # "GenuineIntel", "AuthenticAMD"
    model_name: str | None
    flags: frozenset[str]
    family: int | None = None  # "cpu family" and "model": Intel's family 6 models name generations
    model: int | None = None

    @property
    def is_intel(self) -> bool:
        return self.vendor == "GenuineIntel"

    @property
    def is_amd(self) -> bool:
        return self.vendor == "AuthenticAMD"


def read_cpuinfo(host: P.HostPaths) -> CpuInfo | None:
    text = read_attr(host(P.PROC_CPUINFO), FILE_LIMIT)
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CpuInfo(fields.get("vendor_id"), fields.get("model name"),
                   frozenset(fields.get("flags", "").split()),
                   _int_or_none(fields.get("cpu family")), _int_or_none(fields.get("model")))


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdecimal() else None


def read_acpi_tables(host: P.HostPaths) -> frozenset[str] | None:
    """Names of the ACPI tables the firmware gave (DMAR: Intel VT-d, IVRS: AMD-Vi)."""
    try:
        return frozenset(os.listdir(host(P.SYS_FIRMWARE_ACPI_TABLES)))
    except OSError:
        return None


def find_program(host: P.HostPaths, name: str) -> str | None:
    """Where ``name`` is installed under the root (not $PATH, so trees and snapshots work)."""
    for directory in P.BIN_DIRS:
        path = host(directory, name)
        if os.path.isfile(path) or os.path.islink(path):
            return "/" + os.path.join(directory, name)
    return None


def read_direct_io_support(path: str | os.PathLike[str]) -> bool | None:
    """Whether the file system holding the regular file ``path`` opens it with O_DIRECT (what
    QEMU does for a disk with cache='none'); None when it cannot tell (no such file, not a
    regular file, no permission).

    open(2): EINVAL "The filesystem does not support the O_DIRECT flag" (tmpfs before Linux 6.6,
    ramfs, procfs, some FUSE file systems). A directory or FIFO gets EINVAL on ext4 too, so only
    a regular file's EINVAL speaks for its file system; O_NONBLOCK: a FIFO never blocks the open.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return False if exc.errno == errno.EINVAL else None
    os.close(fd)
    return True


def find_ovmf(host: P.HostPaths) -> list[str]:
    """OVMF firmware files present, as host paths (for libvirt's <loader>)."""
    return ["/" + candidate for candidate in P.OVMF_CANDIDATES if os.path.isfile(host(candidate))]


def read_os_release(host: P.HostPaths) -> dict[str, str]:
    """os-release(5) fields; empty when absent."""
    text = read_attr(host(P.ETC_OS_RELEASE)) or read_attr(host("usr/lib/os-release")) or ""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip('"').strip("'")
    return fields


def read_group_members(host: P.HostPaths, group: str) -> frozenset[str] | None:
    """Users listed in ``group`` in etc/group; None when the group does not exist."""
    text = read_attr(host(P.ETC_GROUP)) or ""
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == group:
            return frozenset(user for user in parts[3].split(",") if user)
    return None
