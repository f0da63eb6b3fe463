"""The running kernel: command line, modules, and its log lines about the IOMMU."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass

from vfiodesk import paths as P
from vfiodesk.host.sysfs import FILE_LIMIT, read_attr
from vfiodesk.model.cmdline import KernelCmdline

# Lines the IOMMU drivers print at boot (drivers/iommu/intel/dmar.c, drivers/iommu/amd/init.c).
_IOMMU_LOG_RE = re.compile(r"DMAR|AMD-Vi|IOMMU|iommu|IVRS|vfio|VFIO")
_MAX_KMSG_RECORDS = 200_000


def read_cmdline(host: P.HostPaths) -> KernelCmdline | None:
    text = read_attr(host(P.PROC_CMDLINE))
    return None if text is None else KernelCmdline.parse(text)


def read_kernel_release(host: P.HostPaths) -> str | None:
    return read_attr(host(P.PROC_SYS_KERNEL_OSRELEASE))


@dataclass(frozen=True)
class ModuleState:
    """Modules loaded now, built in, and available to modprobe for the running kernel."""

    loaded: frozenset[str]
    builtin: frozenset[str]
    available: frozenset[str]

    def has(self, name: str) -> bool:
        """Usable: loaded, built in, or loadable (names compare with '-' and '_' alike)."""
        key = name.replace("-", "_")
        return key in self.loaded or key in self.builtin or key in self.available


def read_modules(host: P.HostPaths) -> ModuleState:
    loaded = set()
    text = read_attr(host(P.PROC_MODULES), FILE_LIMIT) or ""
    for line in text.splitlines():
        if line.strip():
            loaded.add(line.split()[0])
    release = read_kernel_release(host)
    builtin: set[str] = set()
    available: set[str] = set()
    if release:
        base = host(P.LIB_MODULES, release)
        builtin = _module_names(read_attr(base / "modules.builtin", FILE_LIMIT) or "")
        available = _module_names(read_attr(base / "modules.dep", FILE_LIMIT) or "")
    return ModuleState(frozenset(loaded), frozenset(builtin), frozenset(available))


def _module_names(index: str) -> set[str]:
    """Module names from modules.dep / modules.builtin lines ("kernel/.../vfio-pci.ko.xz: deps")."""
    names = set()
    for line in index.splitlines():
        path = line.split(":", 1)[0].strip()
        if path:
            name = os.path.basename(path).split(".ko", 1)[0]
            names.add(name.replace("-", "_"))
    return names


def read_kmsg_records(host: P.HostPaths) -> list[str] | None:
    """The kernel log's records, or None when it cannot be read.

    On a real host dev/kmsg is a character device: each read returns one record and EAGAIN
    at the end (Documentation/ABI/testing/dev-kmsg). In a snapshot it is a regular file.
    """
    path = host(P.DEV_KMSG)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode):
        return _read_kmsg_device(str(path))
    text = read_attr(path, FILE_LIMIT)
    return [] if text is None else text.splitlines()


def read_iommu_log(host: P.HostPaths) -> list[str] | None:
    """Kernel log messages about the IOMMU (DMAR, AMD-Vi, vfio), or None when unreadable."""
    records = read_kmsg_records(host)
    if records is None:
        return None
    return [message for message in map(_kmsg_message, records) if _IOMMU_LOG_RE.search(message)]


def _read_kmsg_device(path: str) -> list[str] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    records: list[str] = []
    try:
        while len(records) < _MAX_KMSG_RECORDS:
            try:
                chunk = os.read(fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # a record was overwritten while reading; go on
                break  # EAGAIN: the end of the buffer
            if not chunk:
                break
            records.append(chunk.decode("utf-8", "replace").rstrip("\n"))
    finally:
        os.close(fd)
    return records


def _kmsg_message(record: str) -> str:
    """The text of a ``prio,seq,time,flags;message`` record; plain lines pass through."""
    head, sep, message = record.partition(";")
    if sep and head.count(",") >= 3:
        return message.split("\n", 1)[0]
    return record
