"""Read a VM's UEFI variable store (OVMF NVRAM): Secure Boot state and enrolled certificates.

virt-firmware (the edk2/QEMU firmware maintainers' library, also `virt-fw-vars`) parses the edk2
varstore; Microsoft's certificates it ships are named in `virt.firmware.efi.certs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfiodesk.errors import HostReadError
from vfiodesk.host.firmware import Q35_MACHINE, FirmwareDescriptor, FirmwareDescriptors

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


def find_secure_boot_firmware(found: FirmwareDescriptors,
                               machine: str = Q35_MACHINE) -> FirmwareDescriptor | None:
    """The firmware libvirt picks for <os firmware="efi"> with secure-boot and enrolled-keys:
    the first descriptor (by file name) of a flash build with a varstore template for x86_64
    ``machine`` with those features."""
    return next((descriptor for descriptor in found.usable
                 if "uefi" in descriptor.interfaces and descriptor.nvram_template is not None
                 and {"secure-boot", "enrolled-keys"} <= descriptor.features
                 and descriptor.runs("x86_64", machine)), None)
