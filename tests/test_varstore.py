"""The VM's UEFI varstore: the 2023 Microsoft keys enrolled with virt-firmware, old file kept."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vfiodesk.errors import VfiodeskError
from vfiodesk.host.firmware import read_firmware_descriptors
from vfiodesk.host.varstore import MICROSOFT_2023, find_secure_boot_firmware, read_varstore_keys
from vfiodesk.hostfiles.varstore import apply_2023_keys
from vfiodesk.paths import HostPaths

OVMF = Path("/usr/share/OVMF")
ENROLLED = OVMF / "OVMF_VARS_4M.ms.fd"  # Debian 12's template: Microsoft's 2011 keys only
BLANK = OVMF / "OVMF_VARS_4M.fd"
VIRT_FW_VARS = Path(__file__).parents[1] / ".venv/bin/virt-fw-vars"


def virt_fw_subjects(path: Path) -> str:
    """What the firmware maintainers' own tool prints: the independent reader."""
    done = subprocess.run([str(VIRT_FW_VARS), "-i", str(path), "-p", "-v"], capture_output=True, text=True,
                          check=True)
    return done.stdout


def test_the_distribution_template_lacks_the_2023_keys() -> None:
    keys = read_varstore_keys(ENROLLED, str(ENROLLED))
    assert keys.secure_boot and "Microsoft Corporation KEK CA 2011" in keys.certificates["KEK"]
    assert keys.missing_2023 == [*MICROSOFT_2023["KEK"], *MICROSOFT_2023["db"]]


def test_enrolling_adds_the_2023_keys_keeps_2011_and_backs_up(tmp_path: Path) -> None:
    nvram = tmp_path / "win11_VARS.fd"
    shutil.copy(ENROLLED, nvram)
    original = nvram.read_bytes()
    keys, backup = apply_2023_keys(nvram, "win11_VARS.fd")
    assert keys.missing_2023 == [] and keys.secure_boot
    assert backup is not None and backup.read_bytes() == original
    printed = virt_fw_subjects(nvram)
    for subject in ("Microsoft Corporation KEK CA 2011", "Microsoft Windows Production PCA 2011",
                    *MICROSOFT_2023["KEK"], *MICROSOFT_2023["db"]):
        assert f"CN={subject}" in printed
    assert nvram.stat().st_size == len(original)
    again, second_backup = apply_2023_keys(nvram, "win11_VARS.fd")
    assert again == keys and second_backup is None  # nothing to add: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([nvram.name, backup.name])


def test_a_new_varstore_is_made_from_the_template(tmp_path: Path) -> None:
    nvram = tmp_path / "nvram" / "new_VARS.fd"
    keys, backup = apply_2023_keys(nvram, str(nvram), template=ENROLLED)
    assert backup is None and keys.missing_2023 == [] and ENROLLED.read_bytes() != nvram.read_bytes()


@pytest.mark.parametrize(("source", "message"), [
    (BLANK, "has no platform key"),
    (Path("/etc/hostname"), "is not a raw edk2 (OVMF) variable store"),
])
def test_unusable_varstores_are_refused_untouched(tmp_path: Path, source: Path, message: str) -> None:
    nvram = tmp_path / "VARS.fd"
    shutil.copy(source, nvram)
    with pytest.raises(VfiodeskError, match=re.escape(message)):
        apply_2023_keys(nvram, str(nvram))
    assert nvram.read_bytes() == source.read_bytes() and len(list(tmp_path.iterdir())) == 1


def test_the_firmware_libvirt_would_pick(tmp_path: Path) -> None:
    found = find_secure_boot_firmware(read_firmware_descriptors(HostPaths()))
    assert found is not None and found.nvram_template == str(ENROLLED)
    assert found.executable.endswith("OVMF_CODE_4M.ms.fd")
    # /etc/qemu/firmware overrides a descriptor of the same name; a broken one is skipped.
    (tmp_path / "etc/qemu/firmware").mkdir(parents=True)
    (tmp_path / "usr/share/qemu/firmware").mkdir(parents=True)
    (tmp_path / "usr/share/qemu/firmware/10-broken.json").write_text("{not json")
    assert find_secure_boot_firmware(read_firmware_descriptors(HostPaths(tmp_path))) is None
