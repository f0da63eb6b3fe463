from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, desktop_host
from vfiodesk.checks.groups import Role, classify_group
from vfiodesk.errors import ExitStatus
from vfiodesk.host.pci import scan_pci_devices
from vfiodesk.model.pci import PciAddress


def test_scan_reads_every_attribute(desktop: FakeHost) -> None:
    found = {str(d.address): d for d in scan_pci_devices(desktop.paths)}
    gpu = found["0000:01:00.0"]
    assert (gpu.vendor_id, gpu.device_id, gpu.class_code) == (0x10DE, 0x1B80, 0x030000)
    assert (gpu.subsystem_vendor_id, gpu.subsystem_device_id) == (0x1043, 0x8591)
    assert gpu.driver == "nouveau" and gpu.iommu_group == 1 and gpu.boot_vga is False
    assert gpu.reset_methods == ("flr", "bus") and gpu.numa_node is None
    assert gpu.driver_override is None and gpu.problems == ()
    assert found["0000:00:00.0"].driver is None


def test_group_roles_mark_card_functions_bridges_and_strangers(desktop: FakeHost) -> None:
    found = scan_pci_devices(desktop.paths)
    members = [d for d in found if d.iommu_group == 4]
    view = classify_group(4, members, [PciAddress.parse("02:00.0")])
    assert view.role_of(PciAddress.parse("00:1c.0")) is Role.BRIDGE
    assert view.role_of(PciAddress.parse("03:00.0")) is Role.STRANGER
    assert not view.is_clean
    clean = classify_group(1, [d for d in found if d.iommu_group == 1],
                           [PciAddress.parse("01:00.0")])
    assert clean.is_clean
    assert clean.role_of(PciAddress.parse("01:00.1")) is Role.COMPANION


def test_devices_json_contract(desktop: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "devices", "--json", "--root", str(desktop.root))
    assert result.status == ExitStatus.OK
    payload = result.json()
    assert payload["iommu_enabled"] is True
    by_address = {d["address"]: d for d in payload["devices"]}
    assert len(by_address) == 11
    gpu = by_address["0000:01:00.0"]
    assert gpu["vendor_id"] == "10de" and gpu["device_id"] == "1b80"
    assert gpu["class_code"] == "030000" and gpu["driver"] == "nouveau"
    assert gpu["iommu_group"] == 1 and gpu["role"] == "target"
    assert gpu["device_name"] == "GP104 [GeForce GTX 1080]"
    assert by_address["0000:01:00.1"]["role"] == "companion"
    assert by_address["0000:03:00.0"]["role"] == "stranger"
    assert by_address["0000:00:00.0"]["driver"] is None


def test_devices_table_names_groups_and_roles(desktop: FakeHost,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "devices", "--root", str(desktop.root))
    assert result.status == ExitStatus.OK
    assert "IOMMU group 4: shared with 1 stranger(s)" in result.stdout
    assert "GP104 [GeForce GTX 1080]" in result.stdout
    assert "stranger" in result.stdout and "boot VGA" in result.stdout


def test_devices_says_plainly_when_the_iommu_is_off(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    host = desktop_host(tmp_path, iommu=False)
    result = run_cli(capsys, "devices", "--json", "--root", str(host.root))
    assert result.json()["iommu_enabled"] is False
    assert all(d["iommu_group"] is None for d in result.json()["devices"])
    text = run_cli(capsys, "devices", "--root", str(host.root)).stdout
    assert "The IOMMU is off" in text


def test_env_variable_selects_the_root(desktop: FakeHost, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VFIODESK_ROOT", str(desktop.root))
    assert len(run_cli(capsys, "devices", "--json").json()["devices"]) == 11


def test_missing_pci_ids_gives_ids_only(desktop: FakeHost,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    os.unlink(desktop.root / "usr/share/misc/pci.ids")
    payload = run_cli(capsys, "devices", "--json", "--root", str(desktop.root)).json()
    assert all(d["device_name"] is None for d in payload["devices"])
    assert "showing IDs only" in run_cli(capsys, "devices", "--root", str(desktop.root)).stdout


def test_garbage_sysfs_file_is_reported_not_a_traceback(
        desktop: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    (desktop.root / "sys/devices/pci0000:00/0000:01:00.0/vendor").write_text("banana\n")
    (desktop.root / "sys/devices/pci0000:00/0000:01:00.1/class").write_bytes(b"\xff\xfe")
    payload = run_cli(capsys, "devices", "--json", "--root", str(desktop.root)).json()
    by_address = {d["address"]: d for d in payload["devices"]}
    assert "vendor holds 'banana'" in by_address["0000:01:00.0"]["problems"][0]
    assert "binary data" in by_address["0000:01:00.1"]["problems"][0]
    assert by_address["0000:02:00.0"]["problems"] == []


def test_a_root_that_is_not_a_host_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "devices", "--root", str(tmp_path))
    assert result.status == ExitStatus.ERROR
    assert result.stderr.startswith("vfiodesk: error: ")
    assert "is not a host tree" in result.stderr and "hint: " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_root_that_is_a_broken_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "host.tar.gz"
    junk.write_bytes(b"not a tarball")
    result = run_cli(capsys, "devices", "--root", str(junk))
    assert "neither a directory nor a snapshot archive" in result.stderr


def _roles(capsys: pytest.CaptureFixture[str], tree: FakeHost) -> dict[str, str | None]:
    payload = run_cli(capsys, "devices", "--json", "--root", str(tree.root)).json()
    return {d["address"]: d["role"] for d in payload["devices"]}


def test_the_hosts_boot_igpu_is_its_display_not_a_candidate(desktop: FakeHost,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _roles(capsys, desktop)["0000:00:02.0"] == "host display"
    text = run_cli(capsys, "devices", "--root", str(desktop.root)).stdout
    assert "IOMMU group 2: the host's own display, stays" in text
    assert "host display (boot VGA)" in text and "pass (boot VGA)" not in text


def test_the_only_gpu_is_the_hosts_display(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = FakeHost(tmp_path)
    tree.pci("0000:00:01.0", 0x8086, 0x1901, 0x060400, driver="pcieport", group=1)
    tree.pci("0000:01:00.0", 0x10DE, 0x1B80, 0x030000, driver="nvidia", group=1)  # boot_vga unknown
    tree.pci("0000:01:00.1", 0x10DE, 0x10F0, 0x040300, driver="snd_hda_intel", group=1)
    roles = _roles(capsys, tree)
    assert (roles["0000:01:00.0"], roles["0000:01:00.1"]) == ("host display", "companion")


def test_a_discrete_boot_gpu_next_to_another_gpu_is_a_candidate(desktop: FakeHost,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (desktop.root / "sys/devices/pci0000:00/0000:00:02.0/boot_vga").write_text("0\n")
    (desktop.root / "sys/devices/pci0000:00/0000:01:00.0/boot_vga").write_text("1\n")
    roles = _roles(capsys, desktop)
    assert (roles["0000:01:00.0"], roles["0000:00:02.0"]) == ("target", "target")


def test_chipset_functions_are_never_the_same_card(desktop: FakeHost,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The chipset slot 00:1f: ISA bridge on lpc_ich, AHCI, SMBus, HD audio in one group."""
    isa = desktop.root / "sys/devices/pci0000:00/0000:00:1f.0"
    (desktop.root / "sys/bus/pci/drivers/lpc_ich").mkdir(parents=True)
    (isa / "driver").symlink_to("../../../bus/pci/drivers/lpc_ich")
    desktop.pci("0000:00:1f.2", 0x8086, 0xA352, 0x010601, driver="ahci", group=5)
    desktop.pci("0000:00:1f.4", 0x8086, 0xA323, 0x0C0500, driver="i801_smbus", group=5)
    roles = _roles(capsys, desktop)
    chipset = {a: r for a, r in roles.items() if a.startswith("0000:00:1f.")}
    assert chipset == {"0000:00:1f.0": "stranger", "0000:00:1f.2": "target",
                       "0000:00:1f.3": "stranger", "0000:00:1f.4": "stranger"}
    payload = run_cli(capsys, "devices", "--json", "--root", str(desktop.root)).json()
    assert next(g for g in payload["groups"] if g["number"] == 5)["clean"] is False
    refused = run_cli(capsys, "bind", "00:1f.3", "--dry-run", "--root", str(desktop.root))
    assert refused.status == ExitStatus.REFUSED
    assert "0000:00:1f.0 (IOMMU group 5) shares the group but was not named" in refused.stderr
