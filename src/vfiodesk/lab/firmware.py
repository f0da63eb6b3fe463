"""The lab's firmware: SeaBIOS (QEMU's default) or OVMF, found through QEMU's firmware descriptors.

Distributions describe their firmware builds in JSON files (QEMU's docs/interop/firmware.json,
the same files libvirt reads for ``<os firmware='efi'>``). The lab wants plain UEFI on q35: no
Secure Boot and no SMM requirement, so the direct kernel boot through fw_cfg stays simple.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vfiodesk.errors import VfiodeskError
from vfiodesk.host.firmware import Q35_MACHINE, read_firmware_descriptors
from vfiodesk.paths import QEMU_FIRMWARE_DIRS, HostPaths

Firmware = Literal["uefi", "bios"]
FIRMWARES: tuple[Firmware, ...] = ("uefi", "bios")

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


def find_uefi_firmware(host: HostPaths | None = None) -> UefiFirmware:
    """The first installed OVMF build that boots q35 without Secure Boot or SMM (on this
    machine, or under ``host``'s root)."""
    host = host or HostPaths()
    found = read_firmware_descriptors(host)
    for descriptor in found.usable:
        if "uefi" in descriptor.interfaces and not _UNWANTED_FEATURES & descriptor.features and \
                descriptor.runs("x86_64", Q35_MACHINE):
            template = descriptor.nvram_template
            return UefiFirmware(host(descriptor.executable.lstrip("/")),
                                None if template is None else host(template.lstrip("/")),
                                descriptor.description)
    raise VfiodeskError(f"no UEFI firmware for q35 without Secure Boot is described in "
                        f"{' or '.join(host(d).as_posix() for d in QEMU_FIRMWARE_DIRS)}"
                        f"{found.skipped_note()}", _HINT)
