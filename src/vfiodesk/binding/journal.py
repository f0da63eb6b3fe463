"""The binding journal: one file per device under run/vfiodesk/devices, written before any change.

run/ is a tmpfs: after a reboot the kernel's default binding is back and the journal is
gone with it, which is what we want.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError, VfiodeskError
from vfiodesk.host.sysfs import is_kernel_name
from vfiodesk.hostfiles.atomic import open_lock, read_journal_file, write_atomic
from vfiodesk.model.pci import PciAddress

# What modprobe gets from the journal: a module name, never an option or a path.
_MODULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class DeviceRecord:
    address: str
    original_driver: str | None
    original_override: str | None
    owner: str  # who bound it: "cli" or a VM name
    consoles: tuple[str, ...] = ()  # vtcon entries unbound for this GPU, rebound on release
    nvidia_unloaded: bool = False
    framebuffers: tuple[str, ...] = ()  # "driver/device" firmware framebuffers, rebound on release
    module: str | None = None  # the original driver's kernel module, loaded again if it went away


def journal_dir(host: P.HostPaths) -> Path:
    return host(P.RUN_VFIODESK, "devices")


def record(host: P.HostPaths, entry: DeviceRecord) -> None:
    path = journal_dir(host) / f"{entry.address}.json"
    write_atomic(path, json.dumps(asdict(entry)).encode(), str(path))


def forget(host: P.HostPaths, address: str) -> None:
    (journal_dir(host) / f"{address}.json").unlink(missing_ok=True)


def read_records(host: P.HostPaths) -> dict[str, DeviceRecord]:
    records = {}
    directory = journal_dir(host)
    if not directory.is_dir():
        return {}
    for path in sorted(directory.glob("*.json")):
        try:
            raw = json.loads(read_journal_file(path))
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            PciAddress.parse(raw["address"])
            module = raw.get("module")
            if module is not None and not _MODULE_NAME.fullmatch(module):
                raise ValueError(f"{module!r} is not a module name")
            entry = DeviceRecord(
                raw["address"], raw["original_driver"], raw["original_override"], raw["owner"],
                tuple(raw.get("consoles", ())), bool(raw.get("nvidia_unloaded", False)),
                tuple(raw.get("framebuffers", ())), module)
            _check_names(entry, path)
            records[raw["address"]] = entry
        except (ValueError, KeyError, TypeError, VfiodeskError) as exc:
            raise HostReadError(f"the journal file {path} is damaged ({exc})",
                                "check the device by hand (vfiodesk devices), then delete the file") from None
    return records


# Names that release joins into sysfs paths or writes to sysfs: a kernel name, never a path.
_CONSOLE_NAME = re.compile(r"vtcon[0-9]{1,3}")


def _check_names(entry: DeviceRecord, path: Path) -> None:
    """Every name in ``entry`` is what the kernel could have given (the journal is a file
    anyone with root, a restored backup or a --root tree could have changed)."""
    if path.name != f"{entry.address}.json":
        raise ValueError(f"it names {entry.address!r}")
    for label, value in (("original_driver", entry.original_driver),
                         ("original_override", entry.original_override)):
        if value is not None and not (isinstance(value, str) and is_kernel_name(value)):
            raise ValueError(f"{label} {value!r} is not a driver name")
    if not isinstance(entry.owner, str) or not entry.owner.isprintable() or not entry.owner:
        raise ValueError(f"owner {entry.owner!r} is not a VM name")
    for console in entry.consoles:
        if not (isinstance(console, str) and _CONSOLE_NAME.fullmatch(console)):
            raise ValueError(f"console {console!r} is not a vtcon name")
    for framebuffer in entry.framebuffers:
        driver, _, device = framebuffer.partition("/") if isinstance(framebuffer, str) else ("", "", "")
        if not (is_kernel_name(driver) and is_kernel_name(device)):
            raise ValueError(f"framebuffer {framebuffer!r} is not DRIVER/DEVICE")


@contextlib.contextmanager
def locked(host: P.HostPaths, *, dry_run: bool = False) -> Iterator[None]:
    """Serialize binding operations (CLI, hooks of several VMs) on one lock file.

    A dry run writes nothing, not even the lock file."""
    if dry_run:
        yield
        return
    path = host(P.RUN_VFIODESK, "lock")
    with open(open_lock(path, str(path))) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
