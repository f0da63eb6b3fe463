"""Read a VM's UEFI variable store (OVMF NVRAM): Secure Boot state and enrolled certificates.

virt-firmware (the edk2/QEMU firmware maintainers' library, also `virt-fw-vars`) parses the edk2
varstore; Microsoft's certificates it ships are named in `virt.firmware.efi.certs`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError
from vfiodesk.host.sysfs import read_attr

# Microsoft's 2023 CAs (they replace the 2011 ones, which expire in 2026): the KEK that signs db
# updates, the CA of Windows' boot manager, the third-party UEFI CA (shim, drivers) and the CA of
# option ROMs (GPU GOP drivers). Subjects as in the certificates virt-firmware ships.
MICROSOFT_2023 = {
    "KEK": ("Microsoft Corporation KEK 2K CA 2023",),
    "db": ("Windows UEFI CA 2023", "Microsoft UEFI CA 2023", "Microsoft Option ROM UEFI CA 2023"),
}


@dataclass(frozen=True)
class VarstoreKeys:
    path: str
    secure_boot: bool  # SecureBootEnable is set
    certificates: dict[str, tuple[str, ...]]  # "PK"/"KEK"/"db" -> subject common names

    @property
    def missing_2023(self) -> list[str]:
        return [subject for variable, subjects in MICROSOFT_2023.items() for subject in subjects
                if subject not in self.certificates.get(variable, ())]


def open_edk2_varstore(path: Path, shown: str) -> Any:
    """virt-firmware's raw edk2 varstore (the 4M/2M OVMF_VARS files libvirt copies per VM)."""
    from virt.firmware.varstore import edk2

    try:
        if not edk2.Edk2VarStore.probe(str(path)):
            raise HostReadError(f"{shown} is not a raw edk2 (OVMF) variable store",
                                "give the VM's <nvram> file (qcow2 varstores are not supported)")
        return edk2.Edk2VarStore(str(path))
    except OSError as exc:
        raise HostReadError(f"cannot read {shown}: {exc.strerror or exc}",
                            "check the <nvram> path of the domain") from None


def read_varstore_keys(path: Path, shown: str) -> VarstoreKeys:
    varlist = open_edk2_varstore(path, shown).get_varlist()
    certificates = {name: _subjects(varlist.get(name)) for name in ("PK", "KEK", "db")}
    enable = varlist.get("SecureBootEnable")
    return VarstoreKeys(shown, bool(enable is not None and enable.data[:1] == b"\x01"), certificates)


def _subjects(variable: Any) -> tuple[str, ...]:
    from cryptography.x509.oid import NameOID

    if variable is None or not variable.sigdb:
        return ()
    names = []
    for siglist in variable.sigdb:
        if siglist.x509 is not None:
            common = siglist.x509.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            names.append(str(common[0].value) if common else siglist.x509.subject.rfc4514_string())
    return tuple(names)


@dataclass(frozen=True)
class FirmwareChoice:
    descriptor: str
    executable: str
    nvram_template: str


def find_secure_boot_firmware(host: P.HostPaths, machine: str = "q35") -> FirmwareChoice | None:
    """The firmware libvirt picks for <os firmware="efi"> with secure-boot and enrolled-keys:
    the first descriptor (by file name; /etc overrides /usr/share) for x86_64 ``machine`` with
    those features (QEMU docs/interop/firmware.json)."""
    chosen: dict[str, str] = {}
    for directory in P.QEMU_FIRMWARE_DIRS:
        with contextlib.suppress(OSError):
            for name in os.listdir(host(directory)):
                if name.endswith(".json"):
                    chosen.setdefault(name, str(host(directory, name)))
    for name in sorted(chosen):
        text = read_attr(chosen[name])
        try:
            descriptor = json.loads(text or "")
            mapping = descriptor["mapping"]
            executable = mapping["executable"]["filename"]
            template = mapping["nvram-template"]["filename"]
        except (ValueError, KeyError, TypeError):
            continue  # a descriptor we cannot use (memory-mapped, broken): libvirt skips it too
        targets = descriptor.get("targets", [])
        fits = any(target.get("architecture") == "x86_64" and
                   any(str(pattern).startswith(f"pc-{machine}-") for pattern in target.get("machines", []))
                   for target in targets if isinstance(target, dict))
        if fits and {"secure-boot", "enrolled-keys"} <= set(descriptor.get("features", [])) and \
                mapping.get("device") == "flash" and "uefi" in descriptor.get("interface-types", []):
            return FirmwareChoice(name, executable, template)
    return None
