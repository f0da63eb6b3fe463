"""The lab's firmware: SeaBIOS (QEMU's default) or OVMF, found through QEMU's firmware descriptors.

Distributions describe their firmware builds in JSON files (QEMU's docs/interop/firmware.json,
the same files libvirt reads for ``<os firmware='efi'>``). The lab wants plain UEFI on q35: no
Secure Boot and no SMM requirement, so the direct kernel boot through fw_cfg stays simple.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vfiodesk.errors import VfiodeskError

Firmware = Literal["uefi", "bios"]
FIRMWARES: tuple[Firmware, ...] = ("uefi", "bios")

# Searched in this order; a file name in an earlier directory hides the same name in later ones
# (firmware.json: "/etc" overrides "/usr/share").
DESCRIPTOR_DIRS = (Path("/etc/qemu/firmware"), Path("/usr/share/qemu/firmware"))
_UNWANTED_FEATURES = {"secure-boot", "requires-smm", "enrolled-keys"}
_HINT = "install OVMF (Debian/Ubuntu: apt-get install ovmf), or boot with --firmware bios"


@dataclass(frozen=True)
class UefiFirmware:
    """An OVMF build: code in flash with a varstore template, or one image mapped in memory."""

    code: Path
    vars_template: Path | None  # None for a memory-mapped image (-bios)
    description: str = ""

    def qemu_args(self) -> tuple[str, ...]:
        """QEMU arguments that boot this firmware; the varstore is a throwaway snapshot of the
        template, so nothing on this machine is ever written."""
        if self.vars_template is None:
            return ("-bios", str(self.code))
        return ("-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_escape(self.code)}",
                "-drive", f"if=pflash,format=raw,unit=1,snapshot=on,file={_escape(self.vars_template)}")


def _escape(path: Path) -> str:
    """A path inside a QEMU option list: commas are doubled (qemu-options "-drive")."""
    return str(path).replace(",", ",,")


def _descriptors(dirs: tuple[Path, ...]) -> list[Path]:
    chosen: dict[str, Path] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
            chosen.setdefault(path.name, path)
    return [chosen[name] for name in sorted(chosen)]  # the numeric prefixes give the priority


def _suits_the_lab(descriptor: dict[str, object]) -> bool:
    targets = descriptor.get("targets")
    features = descriptor.get("features")
    interfaces = descriptor.get("interface-types")
    if not isinstance(interfaces, list) or "uefi" not in interfaces:
        return False
    if not isinstance(features, list) or _UNWANTED_FEATURES & set(features):
        return False
    return isinstance(targets, list) and any(
        isinstance(target, dict) and target.get("architecture") == "x86_64"
        and any(fnmatch.fnmatch("pc-q35-9.0", pattern) for pattern in target.get("machines", []))
        for target in targets)


def _firmware_from(descriptor: dict[str, object]) -> UefiFirmware | None:
    mapping = descriptor.get("mapping")
    if not isinstance(mapping, dict):
        return None
    description = str(descriptor.get("description", ""))
    if mapping.get("device") == "memory" and isinstance(mapping.get("filename"), str):
        return UefiFirmware(Path(mapping["filename"]), None, description)
    executable, template = mapping.get("executable"), mapping.get("nvram-template")
    if mapping.get("device") != "flash" or not isinstance(executable, dict) or \
            not isinstance(template, dict) or executable.get("format", "raw") != "raw" or \
            template.get("format", "raw") != "raw":
        return None
    return UefiFirmware(Path(executable["filename"]), Path(template["filename"]), description)


def find_uefi_firmware(dirs: tuple[Path, ...] = DESCRIPTOR_DIRS) -> UefiFirmware:
    """The first installed OVMF build that boots q35 without Secure Boot or SMM."""
    for path in _descriptors(dirs):
        try:
            descriptor = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # a broken descriptor is someone else's; the next one may do
        if not isinstance(descriptor, dict) or not _suits_the_lab(descriptor):
            continue
        firmware = _firmware_from(descriptor)
        files = (firmware.code, firmware.vars_template) if firmware else ()
        if firmware is not None and all(f is None or f.is_file() for f in files):
            return firmware
    raise VfiodeskError(f"no UEFI firmware for q35 without Secure Boot is described in "
                        f"{' or '.join(str(d) for d in dirs)}", _HINT)
