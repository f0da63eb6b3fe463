"""Writing a VM's UEFI variable store: Microsoft's 2023 Secure Boot certificates enrolled next to
the 2011 ones, the old file kept as a backup. The file is replaced atomically (hostfiles.atomic)."""

from __future__ import annotations

import time
from pathlib import Path

from vfiodesk.errors import VfiodeskError
from vfiodesk.host.varstore import VarstoreKeys, open_edk2_varstore, read_varstore_keys
from vfiodesk.hostfiles.atomic import file_error, write_atomic


def plan_2023_keys(template: Path, shown: str) -> bytes:
    """The bytes of ``template`` with the 2023 KEK and db certificates added (each once)."""
    from virt.firmware.efi import certs, guids

    varstore = open_edk2_varstore(template, shown)
    varlist = varstore.get_varlist()
    have = read_varstore_keys(template, shown)
    if not have.certificates.get("PK"):
        raise VfiodeskError(f"{shown} has no platform key: Secure Boot is not set up in it",
                            "start from a template with enrolled keys (OVMF_VARS_4M.ms.fd)")
    resources = {"Microsoft Corporation KEK 2K CA 2023": ("KEK", certs.MS_KEK_2023),
                 "Windows UEFI CA 2023": ("db", certs.MS_WIN_2023),
                 "Microsoft UEFI CA 2023": ("db", certs.MS_3RD_2023),
                 "Microsoft Option ROM UEFI CA 2023": ("db", certs.MS_ROM_2023)}
    for subject in have.missing_2023:
        variable, resource = resources[subject]
        varlist.add_cert_resource(variable, guids.MicrosoftVendor, resource)
    return bytes(varstore.bytes_varstore(varlist))


def apply_2023_keys(path: Path, shown: str, template: Path | None = None) -> tuple[VarstoreKeys, Path | None]:
    """Enroll the 2023 keys into ``path`` (made from ``template`` when it does not exist yet).

    An existing file is copied to ``<name>.vfiodesk-<time>.bak`` first; returns the keys now
    enrolled and the backup's path."""
    source = path if path.exists() else template
    if source is None:
        raise VfiodeskError(f"{shown} does not exist", "start the VM once so libvirt creates it")
    if source is path and not (keys := read_varstore_keys(path, shown)).missing_2023:
        return keys, None  # already there: nothing written, no backup
    data = plan_2023_keys(source, str(source) if source is template else shown)
    backup = None
    if path.exists():
        backup = _backup_name(path)
        try:
            old = path.read_bytes()
        except OSError as exc:
            raise file_error(shown, exc) from None
        write_atomic(backup, old, str(backup), mode=0o600)
    write_atomic(path, data, shown, mode=0o600)
    return read_varstore_keys(path, shown), backup


def _backup_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidates = (path.with_name(f"{path.name}.vfiodesk-{stamp}{f'-{n}' if n else ''}.bak")
                  for n in range(100))
    return next(candidate for candidate in candidates if not candidate.exists())
