"""QEMU's firmware descriptors, read once (host/firmware.py): what is skipped and why, and the
two filters over the result (the lab's plain build, vm create's Secure Boot build)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import ready_host
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.firmware import read_firmware_descriptors
from vfiodesk.host.varstore import find_secure_boot_firmware
from vfiodesk.lab.firmware import find_uefi_firmware
from vfiodesk.paths import HostPaths

SHARE, ETC = "usr/share/qemu/firmware", "etc/qemu/firmware"
REAL = Path("/usr/share/qemu/firmware")  # Debian's ovmf package: files nobody here wrote


def debian_tree(root: Path) -> Path:
    """This machine's descriptors and the OVMF images they name, under ``root``."""
    shutil.copytree(REAL, root / SHARE)
    for descriptor in (root / SHARE).glob("*.json"):
        mapping = json.loads(descriptor.read_text())["mapping"]
        for part in ("executable", "nvram-template"):
            image = root / mapping[part]["filename"].lstrip("/")
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"fd")
    return root


def test_this_machines_descriptors_serve_both_callers() -> None:
    found = read_firmware_descriptors(HostPaths())
    assert [d.name for d in found.usable] == sorted(p.name for p in REAL.glob("*.json"))
    assert found.skipped == ()
    secure = find_secure_boot_firmware(found)
    assert secure is not None and secure.name == "40-edk2-x86_64-secure-enrolled.json"
    assert secure.nvram_template == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    plain = find_uefi_firmware()
    assert (str(plain.code), str(plain.vars_template)) == ("/usr/share/OVMF/OVMF_CODE_4M.fd",
                                                           "/usr/share/OVMF/OVMF_VARS_4M.fd")


def _flash(**changes: object) -> dict[str, object]:
    descriptor: dict[str, object] = json.loads((REAL / "40-edk2-x86_64-secure-enrolled.json").read_text())
    descriptor.update(changes)
    return descriptor


def _mapping(**changes: object) -> dict[str, object]:
    mapping = dict(_flash()["mapping"])  # type: ignore[call-overload]
    mapping.update(changes)
    return _flash(mapping=mapping)


@pytest.mark.parametrize(("content", "reason"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps(_flash(features="secure-boot")).encode(), "'features' is not a list of strings"),
    (json.dumps(_flash(**{"interface-types": [1]})).encode(), "'interface-types' is not a list of strings"),
    (json.dumps(_flash(targets={"architecture": "x86_64"})).encode(), "'targets' is not a list"),
    (json.dumps(_flash(targets=[{"machines": ["pc-q35-*"]}])).encode(), "a target has no architecture"),
    (json.dumps(_flash(targets=[{"architecture": "x86_64", "machines": "pc-q35-*"}])).encode(),
     "a target's 'machines' is not a list of strings"),
    (json.dumps(_flash(mapping=[])).encode(), "'mapping' is not an object"),
    (json.dumps(_mapping(device="kernel")).encode(), "mapping device 'kernel' is neither flash nor memory"),
    (json.dumps(_mapping(mode="stateless")).encode(), "flash mode 'stateless'"),
    (json.dumps(_mapping(**{"nvram-template": None})).encode(), "flash mapping has no 'nvram-template'"),
    (json.dumps(_mapping(executable={"filename": "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
                                     "format": "qcow2"})).encode(), "executable format 'qcow2'"),
    (json.dumps(_mapping(executable={"filename": "OVMF_CODE.fd"})).encode(),
     "filename 'OVMF_CODE.fd' is not an absolute path"),
    (json.dumps(_mapping(executable={"filename": "/usr/../../etc/shadow"})).encode(),
     "filename '/usr/../../etc/shadow' holds '..'"),
    (json.dumps(_mapping(executable={"filename": "/usr/share/OVMF/gone.fd"})).encode(),
     "/usr/share/OVMF/gone.fd does not exist"),
])
def test_a_bad_descriptor_is_skipped_with_its_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    """It outranks the good ones (10- sorts first): both callers go on to the next, as libvirt
    does, and say why it was passed over when nothing else fits."""
    root = debian_tree(tmp_path)
    (root / SHARE / "10-bad.json").write_bytes(content)
    found = read_firmware_descriptors(HostPaths(root))
    assert len(found.skipped) == 1 and found.skipped[0][0] == f"/{SHARE}/10-bad.json"
    assert reason in found.skipped[0][1]
    secure = find_secure_boot_firmware(found)
    assert secure is not None and secure.name == "40-edk2-x86_64-secure-enrolled.json"
    assert find_uefi_firmware(HostPaths(root)).code == root / "usr/share/OVMF/OVMF_CODE_4M.fd"
    for good in (root / SHARE).glob("[46]0-*.json"):
        good.unlink()
    with pytest.raises(VfiodeskError, match="no UEFI firmware") as caught:
        find_uefi_firmware(HostPaths(root))
    assert f"skipped /{SHARE}/10-bad.json: {reason}" in caught.value.message


def test_unreadable_entries_are_skipped(tmp_path: Path) -> None:
    root = debian_tree(tmp_path)
    (root / SHARE / "20-folder.json").mkdir()
    os.mkfifo(root / SHARE / "30-fifo.json")  # never blocks: opened O_NONBLOCK, then refused
    (root / SHARE / "35-huge.json").write_bytes(b" " * (300 * 1024))
    found = read_firmware_descriptors(HostPaths(root))
    assert [path for path, _ in found.skipped] == [f"/{SHARE}/{n}" for n in ("20-folder.json", "30-fifo.json",
                                                                           "35-huge.json")]
    assert all(why.startswith("cannot be read") for _, why in found.skipped)


def test_etc_overrides_or_masks_a_descriptor_of_the_same_name(tmp_path: Path) -> None:
    root = debian_tree(tmp_path)
    (root / ETC).mkdir(parents=True)
    (root / ETC / "40-edk2-x86_64-secure-enrolled.json").write_bytes(b"")  # an empty file masks it
    found = read_firmware_descriptors(HostPaths(root))
    assert "40-edk2-x86_64-secure-enrolled.json" not in [d.name for d in found.usable]
    assert find_secure_boot_firmware(found) is None and found.skipped == ()
    (root / ETC / "60-edk2-x86_64.json").symlink_to(os.devnull)  # so does a link to /dev/null
    with pytest.raises(VfiodeskError, match="no UEFI firmware"):
        find_uefi_firmware(HostPaths(root))
    override = _flash(description="the admin's build")
    (root / ETC / "40-edk2-x86_64-secure-enrolled.json").write_text(json.dumps(override))
    secure = find_secure_boot_firmware(read_firmware_descriptors(HostPaths(root)))
    assert secure is not None and secure.path == f"/{ETC}/40-edk2-x86_64-secure-enrolled.json"


@pytest.mark.libvirt
def test_vm_create_names_the_skipped_descriptors(tmp_path: Path, libvirtd: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A Windows 11 VM needs the Secure Boot build; its varstore template is gone: the error
    says so, and nothing is defined."""
    host = ready_host(tmp_path / "host")
    write_topology(host.root, intel_4c8t())
    shutil.rmtree(host.root / "usr/share/qemu", ignore_errors=True)  # the tree's stand-in firmware
    debian_tree(host.root)
    (host.root / "usr/share/OVMF/OVMF_VARS_4M.ms.fd").unlink()
    name = f"vfiodesk-test-{uuid.uuid4().hex[:8]}"
    result = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                     "--domain-type", "qemu", "--memory", "512M")
    assert result.status == 1, result.stderr
    assert "no OVMF build with Secure Boot and enrolled keys" in result.stderr
    assert "40-edk2-x86_64-secure-enrolled.json: /usr/share/OVMF/OVMF_VARS_4M.ms.fd does not exist" \
        in result.stderr
    listed = subprocess.run(["virsh", "-c", libvirtd, "list", "--all", "--name"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert name not in listed


QEMU_DESCRIPTORS = Path(__file__).parent / "data/firmware"  # QEMU's own (SOURCES)


def install_qemu_descriptors(root: Path, folder: str, datadir: str = "/usr/share/qemu") -> None:
    """As QEMU's build installs them: @DATADIR@ replaced, the images beside."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for source in QEMU_DESCRIPTORS.glob("*.json"):
        text = source.read_text().replace("@DATADIR@", datadir)
        (root / folder / source.name).write_text(text)
        mapping = json.loads(text)["mapping"]
        for part in ("executable", "nvram-template"):
            image = root / mapping[part]["filename"].lstrip("/")
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"fd")


def test_qemus_published_descriptors(tmp_path: Path) -> None:
    """Files nobody here wrote: QEMU's x86_64 builds (plain; Secure Boot without enrolled keys,
    SMM required) and an aarch64 one."""
    raw = tmp_path / "raw"
    shutil.copytree(QEMU_DESCRIPTORS, raw / SHARE, ignore=shutil.ignore_patterns("SOURCES"))
    found = read_firmware_descriptors(HostPaths(raw))  # not installed: @DATADIR@ left in
    assert found.usable == () and len(found.skipped) == 3
    assert all("'@DATADIR@/edk2-" in why and "not an absolute path" in why for _, why in found.skipped)
    qemu = tmp_path / "qemu"
    install_qemu_descriptors(qemu, SHARE)
    found = read_firmware_descriptors(HostPaths(qemu))
    assert {d.name: d.runs("x86_64", "pc-q35-9.0") for d in found.usable} == {
        "50-edk2-x86_64-secure.json": True, "60-edk2-aarch64.json": False, "60-edk2-x86_64.json": True}
    assert find_secure_boot_firmware(found) is None  # no build with enrolled keys
    assert find_uefi_firmware(HostPaths(qemu)).code == qemu / "usr/share/qemu/edk2-x86_64-code.fd"
    # Beside Debian's: an administrator's copy in /etc overrides Debian's plain build of the same
    # name; vm create still finds Debian's enrolled build first.
    both = debian_tree(tmp_path / "both")
    install_qemu_descriptors(both, ETC)
    assert find_uefi_firmware(HostPaths(both)).code == both / "usr/share/qemu/edk2-x86_64-code.fd"
    secure = find_secure_boot_firmware(read_firmware_descriptors(HostPaths(both)))
    assert secure is not None and secure.name == "40-edk2-x86_64-secure-enrolled.json"
