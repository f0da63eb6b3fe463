from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import ready_host
from tests.fakekernel import FakeRunner
from vfiodesk.checks.doctor import CHECKS
from vfiodesk.errors import ExitStatus

SNAPSHOTS = Path(__file__).parent / "data" / "snapshots"


def checks_of(payload: dict[str, object]) -> dict[str, dict[str, str]]:
    return {check["id"]: check for check in payload["checks"]}  # type: ignore[attr-defined]


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SUDO_USER", "alice")
    return "alice"


def test_a_ready_host_passes_every_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         user: str) -> None:
    host = ready_host(tmp_path)
    result = run_cli(capsys, "doctor", "--json", "--root", str(host.root))
    payload = result.json()
    failing = {k: v for k, v in checks_of(payload).items() if v["status"] != "pass"}
    assert failing == {}
    assert payload["ready"] is True and result.status == ExitStatus.OK
    checks = checks_of(payload)
    assert "'DMAR: IOMMU enabled'" in checks["iommu-enabled"]["summary"]
    assert "0000:01:00.0" in checks["gpu-candidate"]["summary"]


def test_every_check_has_id_status_summary_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path)
    for check in run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json()["checks"]:
        assert set(check) == {"id", "status", "summary", "hint"}
        assert check["status"] in {"pass", "warn", "fail", "skip"}
        assert check["status"] == "pass" or check["status"] == "skip" or check["hint"]


@pytest.mark.parametrize(("cmdline", "check_id", "status", "words"), [
    ("ro quiet", "kernel-cmdline", "warn", "intel_iommu=on is not"),
    ("ro intel_iommu=on", "kernel-cmdline", "warn", "iommu=pt is not set"),
    ("ro intel_iommu=on,igfx_off iommu=pt", "kernel-cmdline", "pass", "igfx_off keeps the integrated GPU"),
])
def test_intel_command_line_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str], cmdline: str,
                                   check_id: str, status: str, words: str) -> None:
    host = ready_host(tmp_path, cmdline=cmdline)
    check = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())[check_id]
    assert check["status"] == status and words in check["summary"]


def test_amd_iommu_on_is_flagged_as_bogus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path, vendor="AuthenticAMD", cmdline="ro amd_iommu=on iommu=pt")
    check = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())["kernel-cmdline"]
    assert check["status"] == "warn" and "not a valid value" in check["summary"]
    assert "remove amd_iommu=on" in check["hint"]


def test_missing_tools_give_the_distro_install_command(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path)
    os.unlink(host.root / "usr/bin/qemu-system-x86_64")
    os.unlink(host.root / "usr/share/OVMF/OVMF_CODE_4M.fd")
    (host.root / "etc/os-release").write_text("ID=fedora\n")
    result = run_cli(capsys, "doctor", "--json", "--root", str(host.root))
    checks = checks_of(result.json())
    assert checks["qemu"]["hint"] == "dnf install -y qemu-kvm"
    assert checks["ovmf"]["hint"] == "dnf install -y edk2-ovmf"
    assert result.status == ExitStatus.HOST_NOT_READY and result.json()["ready"] is False


def test_missing_swtpm_is_named_with_its_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path)
    os.unlink(host.root / "usr/bin/swtpm_setup")
    result = run_cli(capsys, "doctor", "--json", "--root", str(host.root))
    check = checks_of(result.json())["swtpm"]
    assert check["status"] == "warn" and "Windows 11" in check["summary"]
    assert check["hint"] == "apt-get install -y swtpm-tools" and result.status == ExitStatus.OK


def test_user_outside_the_libvirt_group(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "bob")
    host = ready_host(tmp_path)
    check = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())["libvirt-group"]
    assert check["status"] == "warn" and check["hint"] == "usermod -aG libvirt bob, then log in again"


def test_gpu_sharing_its_group_with_a_stranger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path)
    # Put the NVIDIA card's group next to the NIC: a stranger in group 1.
    link = host.root / "sys/devices/pci0000:00/0000:03:00.0/iommu_group"
    link.unlink()
    link.symlink_to("../../../kernel/iommu_groups/1")
    for gpu in ("0000:02:00.0",):  # the AMD card is in the dirty group 4; hide it as boot VGA
        (host.root / f"sys/devices/pci0000:00/{gpu}/boot_vga").write_text("1\n")
    check = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())["gpu-candidate"]
    assert check["status"] == "fail" and "0000:03:00.0" in check["summary"]


def test_unreadable_probe_is_reported_and_the_rest_still_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path)
    (host.root / "proc/cpuinfo").unlink()
    (host.root / "proc/cpuinfo").mkdir()  # reading it fails with EISDIR
    result = run_cli(capsys, "doctor", "--json", "--root", str(host.root))
    checks = checks_of(result.json())
    assert checks["cpu-virtualization"]["status"] == "skip"
    assert "proc/cpuinfo" in checks["cpu-virtualization"]["summary"]
    assert checks["qemu"]["status"] == "pass" and len(checks) == len(CHECKS)


def test_this_ci_machine_snapshot_says_plainly_the_iommu_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "doctor", "--json", "--root", str(SNAPSHOTS / "ci-machine.tar.gz"))
    checks = checks_of(result.json())
    assert result.status == ExitStatus.HOST_NOT_READY
    assert checks["iommu-enabled"]["status"] == "fail"
    assert "the IOMMU is off" in checks["iommu-enabled"]["summary"]
    devices = run_cli(capsys, "devices", "--root", str(SNAPSHOTS / "ci-machine.tar.gz")).stdout
    assert "The IOMMU is off" in devices


def test_table_output_ends_with_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path, cmdline="ro")
    (host.root / "dev/kvm").unlink()
    result = run_cli(capsys, "doctor", "--root", str(host.root))
    assert "Not ready" in result.stdout and "modprobe kvm_intel" in result.stdout
    assert result.status == ExitStatus.HOST_NOT_READY


@pytest.mark.parametrize("iommu", ["intel", "amd"])
def test_lab_snapshots_read_like_the_real_lab(iommu: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Snapshots taken inside the lab's real kernel (emulated VT-d / AMD-Vi)."""
    archive = str(SNAPSHOTS / f"lab-{iommu}.tar.gz")
    payload = run_cli(capsys, "devices", "--json", "--root", archive).json()
    assert payload["iommu_enabled"] is True
    by_address = {d["address"]: d for d in payload["devices"]}
    gpu, audio = by_address["0000:01:00.0"], by_address["0000:01:00.1"]
    assert (gpu["vendor_id"], gpu["device_id"], gpu["driver"]) == ("1234", "1111", "bochs-drm")
    assert gpu["boot_vga"] is True and audio["driver"] == "snd_hda_intel"
    assert gpu["iommu_group"] == audio["iommu_group"] and audio["role"] == "companion"
    strangers = [by_address[a] for a in ("0000:04:01.0", "0000:04:02.0")]
    assert strangers[0]["iommu_group"] == strangers[1]["iommu_group"]
    assert by_address["0000:03:00.0"]["iommu_group"] == strangers[0]["iommu_group"]
    assert "stranger" in {s["role"] for s in strangers}
    checks = checks_of(run_cli(capsys, "doctor", "--json", "--root", archive).json())
    assert checks["iommu-enabled"]["status"] == "pass"
    assert checks["vfio-modules"]["status"] == "pass"
    assert checks["gpu-candidate"]["status"] == "warn"  # the lab's only GPU is its console
    if iommu == "intel":
        assert "DMAR: IOMMU enabled" in checks["iommu-enabled"]["summary"]
    else:
        assert checks["kernel-cmdline"]["status"] == "warn"
        assert "amd_iommu=on" in checks["kernel-cmdline"]["summary"]


def _prime_select(tree_root: Path, answer: str) -> None:
    """A stand-in prime-select in the tree that answers `query` like nvidia-prime's."""
    program = tree_root / "usr/bin/prime-select"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(f'#!/bin/sh\n[ "$1" = query ] && echo {answer}\n')
    program.chmod(0o755)


@pytest.mark.parametrize(("answer", "status"), [("on-demand", "pass"), ("intel", "pass"),
                                                ("integrated", "pass"), ("nvidia", "fail"),
                                                ("unknown", "warn")])
def test_doctor_asks_prime_select_where_nvidia_prime_is_installed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        answer: str, status: str) -> None:
    host = ready_host(tmp_path)
    plain = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())
    assert plain["prime-select"]["status"] == "pass" and "not installed" in plain["prime-select"]["summary"]
    _prime_select(host.root, answer)
    # Under a tree the runner only prints; the tree-aware runner runs the tree's stand-in.
    unasked = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())
    assert unasked["prime-select"]["status"] == "warn"
    monkeypatch.setattr("vfiodesk.cli.doctor.CommandRunner", FakeRunner)
    result = run_cli(capsys, "doctor", "--json", "--root", str(host.root))
    check = checks_of(result.json())["prime-select"]
    assert check["status"] == status and f"prime-select query says {answer}" in check["summary"]
    if status == "fail":
        assert "0000:01:00.0" in check["summary"] and result.status == ExitStatus.HOST_NOT_READY
        assert check["hint"].startswith("sudo prime-select on-demand (or intel)")
