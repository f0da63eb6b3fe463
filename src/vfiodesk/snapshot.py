"""`vfiodesk snapshot`: everything the probes read, in an archive that --root accepts.

Files are stored with the content read (sysfs files report a size of 4096 whatever they
hold), links as relative links, and the kernel log as a regular file, so a user's host can
be attached to a bug report and replayed offline.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import InputError, VfiodeskError
from vfiodesk.host.facts import PROGRAMS
from vfiodesk.host.kernel import read_kernel_release, read_kmsg_records
from vfiodesk.host.sysfs import read_bytes

# Globs (relative to the root) of the files the probes read. Directories are walked.
CAPTURED_FILES = (
    f"{P.SYS_PCI_DEVICES}/*/" + "{vendor,device,class,subsystem_vendor,subsystem_device,revision,"
    "boot_vga,reset_method,numa_node,driver_override,enable}",
    f"{P.SYS_CPU}/{{online,possible,present,isolated,nohz_full}}",
    f"{P.SYS_CPU}/cpu[0-9]*/topology/*",
    f"{P.SYS_CPU}/cpu[0-9]*/cache/index[0-9]*/{{level,type,shared_cpu_list,size}}",
    f"{P.SYS_CPU}/cpu[0-9]*/online",
    f"{P.SYS_NODE}/{{online,possible,has_cpu}}",
    f"{P.SYS_NODE}/node[0-9]*/cpulist",
    f"{P.SYS_NODE}/node[0-9]*/hugepages/*/*",
    "sys/devices/cpu_core/cpus",
    "sys/devices/cpu_atom/cpus",
    f"{P.SYS_HUGEPAGES}/*/*",
    f"{P.SYS_VTCONSOLE}/*/{{bind,name}}",
    P.PROC_CMDLINE, P.PROC_CPUINFO, P.PROC_MEMINFO, P.PROC_MODULES, P.PROC_MOUNTS,
    P.PROC_NET_ROUTE, P.PROC_SYS_KERNEL_OSRELEASE, P.ETC_OS_RELEASE,
)
# Links whose targets the probes read (driver, iommu_group); kept as relative links.
CAPTURED_LINKS = (
    f"{P.SYS_PCI_DEVICES}/*/driver",
    f"{P.SYS_PCI_DEVICES}/*/iommu_group",
    f"{P.SYS_IOMMU_GROUPS}/*/devices/*",
)
# Presence only: stored as empty files.
CAPTURED_MARKERS = (P.DEV_KVM, f"{P.SYS_FIRMWARE_ACPI_TABLES}/*",
                    *P.OVMF_CANDIDATES,
                    *(f"{directory}/{name}" for directory in P.BIN_DIRS for name in PROGRAMS))
_MAX_FILE = 4 * 1024 * 1024


def write_snapshot(host: P.HostPaths, out: Path) -> int:
    """Write the archive atomically (mode 0600: it holds the kernel log); returns the number of
    entries. The temporary file is new (O_EXCL, random name), so a planted file or link next to
    OUT is never followed or overwritten."""
    if not out.name or out.name in (".", ".."):
        raise InputError(f"{str(out)!r} is not a file name for the archive",
                         "give one, e.g. vfiodesk snapshot host.tar.gz")
    try:
        fd, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    except OSError as exc:
        raise _write_error(out, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            with tarfile.open(fileobj=handle, mode="w:gz") as archive:
                entries = _add_everything(archive, host)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise _write_error(out, exc) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return entries


def _write_error(out: Path, exc: OSError) -> VfiodeskError:
    return VfiodeskError(f"cannot write snapshot {out}: {exc.strerror or exc}",
                         "choose a writable place for the archive (an existing directory)")


def _add_everything(archive: tarfile.TarFile, host: P.HostPaths) -> int:
    root = host.root
    entries = 0
    for relative, target in _device_links(root):
        _add_link(archive, relative, target)
        entries += 1
    for pattern in CAPTURED_LINKS:
        for relative in _expand(root, pattern):
            _add_link(archive, relative, os.readlink(root / relative))
            entries += 1
    for pattern in CAPTURED_FILES:
        for relative in _expand(root, pattern):
            data = _read(root / relative)
            if data is not None:
                _add_bytes(archive, relative, data)
                entries += 1
    for pattern in CAPTURED_MARKERS:
        for relative in _expand(root, pattern):
            _add_bytes(archive, relative, b"")
            entries += 1
    return entries + _add_kernel_files(archive, host)


def _expand(root: Path, pattern: str) -> Iterator[str]:
    for brace_free in _braces(pattern):
        for match in sorted(glob.glob(str(root / brace_free))):
            if not brace_free.startswith("sys/"):
                yield os.path.relpath(match, root)
                continue
            # Store under the real directory (sys/devices/...), not through sysfs's links.
            parent = os.path.realpath(os.path.dirname(match))
            yield os.path.relpath(os.path.join(parent, os.path.basename(match)), root.resolve())


def _braces(pattern: str) -> list[str]:
    """Expand one level of {a,b} (glob has none)."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    end = pattern.index("}", start)
    return [result for choice in pattern[start + 1:end].split(",")
            for result in _braces(pattern[:start] + choice + pattern[end + 1:])]


def _device_links(root: Path) -> Iterator[tuple[str, str]]:
    """sys/bus/pci/devices/X -> ../../../devices/..., and the real device dirs they point to."""
    for relative in _expand(root, f"{P.SYS_PCI_DEVICES}/*"):
        path = root / relative
        if path.is_symlink():
            yield relative, os.readlink(path)


def _add_kernel_files(archive: tarfile.TarFile, host: P.HostPaths) -> int:
    added = 0
    records = read_kmsg_records(host)
    if records is not None:
        _add_bytes(archive, P.DEV_KMSG, ("\n".join(records) + "\n").encode())
        added += 1
    release = read_kernel_release(host)
    if release:
        for index in ("modules.dep", "modules.builtin"):
            relative = f"{P.LIB_MODULES}/{release}/{index}"
            data = _read(host.root / relative)
            if data is not None:
                _add_bytes(archive, relative, data)
                added += 1
    return added


def _read(path: Path) -> bytes | None:
    try:
        return read_bytes(path, _MAX_FILE)
    except OSError:
        return None  # write-only or vanished attributes are simply not captured


def _add_bytes(archive: tarfile.TarFile, relative: str, data: bytes) -> None:
    info = tarfile.TarInfo(relative)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    archive.addfile(info, io.BytesIO(data))


def _add_link(archive: tarfile.TarFile, relative: str, target: str) -> None:
    info = tarfile.TarInfo(relative)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, int(time.time())
    archive.addfile(info)
