"""QEMU's firmware descriptors (QEMU docs/interop/firmware.json): the one reader.

Distributions describe each firmware build in a JSON file in /usr/share/qemu/firmware; a file
of the same name in /etc/qemu/firmware overrides it, and an empty one (or a link to /dev/null)
hides it. libvirt reads the same files to pick the firmware of ``<os firmware='efi'>``.
``read_firmware_descriptors`` reads and checks them once; callers filter what it returns, and
name what it skipped (and why) when nothing fits.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from typing import Any

from vfiodesk import paths as P
from vfiodesk.host.sysfs import read_bytes

DESCRIPTOR_LIMIT = 256 * 1024  # a descriptor is a few hundred bytes
# A q35 machine type: libvirt expands "q35" to the newest pc-q35-X.Y, and descriptors name the
# family as a glob (pc-q35-*), so any version stands for it.
Q35_MACHINE = "pc-q35-9.0"


@dataclass(frozen=True)
class FirmwareDescriptor:
    """One usable build: its files exist under the root (paths as the host sees them)."""

    name: str  # the file name: its numeric prefix is its priority
    path: str  # the descriptor, as the host sees it
    description: str
    interfaces: frozenset[str]  # "uefi", "bios", ...
    features: frozenset[str]  # "secure-boot", "enrolled-keys", "requires-smm", ...
    targets: tuple[tuple[str, tuple[str, ...]], ...]  # (architecture, machine type globs)
    executable: str  # the code in flash, or the one image mapped in memory
    nvram_template: str | None  # flash builds: the varstore template; None: mapped in memory

    def runs(self, architecture: str, machine: str) -> bool:
        """Built for machine type ``machine`` (pc-q35-9.0): the descriptor's machines are
        globs matched against the machine type, as libvirt matches them (qemu_firmware.c)."""
        return any(arch == architecture and any(fnmatch.fnmatchcase(machine, glob) for glob in globs)
                   for arch, globs in self.targets)


@dataclass(frozen=True)
class FirmwareDescriptors:
    usable: tuple[FirmwareDescriptor, ...]  # in priority order (file name)
    skipped: tuple[tuple[str, str], ...]  # (descriptor path, why it was passed over)

    def skipped_note(self) -> str:
        """For an error that found nothing: which descriptors were passed over and why."""
        return "".join(f"; skipped {path}: {why}" for path, why in self.skipped)


class _Unusable(Exception):
    """Why a descriptor is passed over (the next one may do, as libvirt goes on too)."""


def read_firmware_descriptors(host: P.HostPaths) -> FirmwareDescriptors:
    """Every descriptor under the root, checked; the ones that cannot be used, with the reason."""
    chosen: dict[str, str] = {}
    for directory in P.QEMU_FIRMWARE_DIRS:
        try:
            names = os.listdir(host(directory))
        except OSError:
            continue  # no such folder (or unreadable): no descriptors there
        for name in names:
            if name.endswith(".json"):
                chosen.setdefault(name, f"{directory}/{name}")
    usable, skipped = [], []
    for name in sorted(chosen):
        try:
            descriptor = _read_descriptor(host, name, chosen[name])
        except _Unusable as why:
            skipped.append((f"/{chosen[name]}", str(why)))
            continue
        if descriptor is not None:
            usable.append(descriptor)
    return FirmwareDescriptors(tuple(usable), tuple(skipped))


def _read_descriptor(host: P.HostPaths, name: str, relative: str) -> FirmwareDescriptor | None:
    """The descriptor; None for an empty file or a link to /dev/null (it hides the file of the
    same name in a folder searched later, firmware.json)."""
    path = host(relative)
    if os.path.realpath(path) == os.devnull:
        return None
    try:
        data = read_bytes(path, DESCRIPTOR_LIMIT)
    except OSError as exc:
        raise _Unusable(f"cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        return None
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Unusable(f"not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _Unusable("not a JSON object")
    interfaces = _strings(raw, "interface-types")
    executable, template = _mapping(raw.get("mapping"))
    for file in (executable, template):
        if file is not None:
            _check_file(host, file)
    description = raw.get("description", "")
    return FirmwareDescriptor(name, f"/{relative}", description if isinstance(description, str) else "",
                              interfaces, _strings(raw, "features"), _targets(raw.get("targets")),
                              executable, template)


def _strings(raw: dict[str, Any], key: str) -> frozenset[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Unusable(f"{key!r} is not a list of strings")
    return frozenset(value)


def _targets(value: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, list):
        raise _Unusable("'targets' is not a list")
    targets = []
    for target in value:
        if not isinstance(target, dict) or not isinstance(target.get("architecture"), str):
            raise _Unusable("a target has no architecture")
        machines = target.get("machines", [])
        if not isinstance(machines, list) or not all(isinstance(glob, str) for glob in machines):
            raise _Unusable("a target's 'machines' is not a list of strings")
        targets.append((target["architecture"], tuple(machines)))
    return tuple(targets)


def _mapping(value: object) -> tuple[str, str | None]:
    """(code or image, varstore template) of a raw split-flash or memory-mapped build."""
    if not isinstance(value, dict):
        raise _Unusable("'mapping' is not an object")
    device = value.get("device")
    if device == "memory":
        return _filename(value, "filename"), None
    if device != "flash":
        raise _Unusable(f"mapping device {device!r} is neither flash nor memory")
    if value.get("mode", "split") != "split":
        raise _Unusable(f"flash mode {value.get('mode')!r}: only split code and varstore are used")
    files = []
    for key in ("executable", "nvram-template"):
        part = value.get(key)
        if not isinstance(part, dict):
            raise _Unusable(f"flash mapping has no {key!r} object")
        if part.get("format", "raw") != "raw":
            raise _Unusable(f"{key} format {part.get('format')!r}: only raw images are used")
        files.append(_filename(part, "filename"))
    return files[0], files[1]


def _filename(value: dict[str, Any], key: str) -> str:
    filename = value.get(key)
    if not isinstance(filename, str) or not filename.startswith("/") or "\0" in filename:
        raise _Unusable(f"{key} {filename!r} is not an absolute path")
    if ".." in filename.split("/"):
        raise _Unusable(f"{key} {filename!r} holds '..'")  # under --root it would lead out
    return filename


def _check_file(host: P.HostPaths, filename: str) -> None:
    if not os.path.isfile(host(filename.lstrip("/"))):
        raise _Unusable(f"{filename} does not exist")
