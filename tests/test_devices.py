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
