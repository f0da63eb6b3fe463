"""`vfiodesk setup`: the step graph over fake hosts, and the guided run across a reboot."""

from __future__ import annotations

import io
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.fakekernel import FakeRunner
from tests.test_pinning import intel_4c8t, write_topology
from tests.test_vm import qemu_readable_dir, with_this_machines_firmware
from vfiodesk.errors import ExitStatus

# The test driver answers "is the domain defined?" without the system libvirtd.
TEST_URI = "test:///default"


def _tree(root: Path, *, iommu: bool = True, boot_id: str = "boot-1") -> FakeHost:
    host = ready_host(root, iommu=iommu)
    write_topology(host.root, intel_4c8t())
    host.file("proc/sys/kernel/random/boot_id", boot_id + "\n")
    host.file("etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n')
    host.file("usr/sbin/update-grub")
    host.file("isos/win10.iso", "iso")
    host.file("isos/virtio-win.iso", "iso")
    return host


def plan(capsys: pytest.CaptureFixture[str], host: FakeHost, *options: str) -> dict[str, Any]:
    result = run_cli(capsys, "setup", "--dry-run", "--json", "--root", str(host.root),
                     "--connect", TEST_URI, *options)
    assert result.status == 0, result.stderr
    payload: dict[str, Any] = result.json()
    payload["by_id"] = {step["id"]: step for step in payload["steps"]}
    return payload


def statuses(payload: dict[str, Any]) -> dict[str, str]:
    return {step["id"]: step["status"] for step in payload["steps"]}


def test_iommu_off_plans_the_kernel_parameters_and_blocks_what_needs_groups(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h", iommu=False)
    payload = plan(capsys, host, "--gpu", "01:00")
    assert payload["next"] == "iommu"
    steps = payload["by_id"]
    assert steps["hardware"]["status"] == "done"
    assert steps["iommu"]["status"] == "todo"
    assert steps["iommu"]["command"] == f"vfiodesk host iommu --apply --root {host.root}"
    assert steps["reboot"]["status"] == "blocked"
    assert steps["gpu"]["status"] == "blocked" and "after the reboot" in steps["gpu"]["summary"]
    assert steps["vm"]["status"] == "blocked"
    assert set(statuses(payload).values()) <= {"done", "todo", "blocked", "skipped"}
    assert list(payload) == ["steps", "next", "by_id"]
    assert set(payload["steps"][0]) == {"id", "title", "status", "summary", "command"}


def test_iommu_asked_for_but_absent_points_at_the_firmware(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h", iommu=False)
    host.file("proc/cmdline", "BOOT_IMAGE=/vmlinuz ro intel_iommu=off intel_iommu=on\n")
    step = plan(capsys, host)["by_id"]["iommu"]
    assert step["status"] == "blocked" and "enable VT-d in the firmware" in step["summary"]
    host.file("proc/cmdline", "BOOT_IMAGE=/vmlinuz ro intel_iommu=on intel_iommu=off\n")
    assert plan(capsys, host)["by_id"]["iommu"]["status"] == "todo"  # the last one wins


def test_iommu_on_and_a_clean_nvidia_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h")
    payload = plan(capsys, host, "--gpu", "01:00", "--iso", "/isos/win10.iso",
                   "--virtio-iso", "/isos/virtio-win.iso")
    steps = payload["by_id"]
    assert steps["iommu"]["status"] == "done" and steps["reboot"]["status"] == "done"
    assert "DMAR: IOMMU enabled" in steps["reboot"]["summary"]
    assert steps["gpu"]["status"] == "done"
    assert "0000:01:00.1 (10de:10f0)" in steps["gpu"]["summary"]  # the HDMI audio goes along
    assert steps["prime"]["status"] == "skipped"  # no nvidia-prime on this host
    assert steps["binding"]["status"] == "done" and steps["binding"]["summary"].startswith("vfiodesk:")
    assert steps["hook"]["status"] == "todo"
    assert steps["vm"]["status"] == "blocked" and "hook" in steps["vm"]["summary"]
    assert payload["next"] == "hook"
    root = str(host.root)
    assert steps["vm"]["command"] == (
        f"vfiodesk vm create win10 --gpu 01:00 --memory 8G --disk path=/var/lib/libvirt/images/win10.qcow2,"
        f"size=80G,format=qcow2 --iso /isos/win10.iso --virtio-iso "
        f"/isos/virtio-win.iso --binding vfiodesk --root {root} --connect {TEST_URI}")


def test_a_gpu_sharing_its_group_with_strangers_is_blocked(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h")
    steps = plan(capsys, host, "--gpu", "02:00")["by_id"]
    assert steps["gpu"]["status"] == "blocked"
    assert "0000:03:00.0 (10ec:8168)" in steps["gpu"]["summary"]  # the NIC in group 4
    assert steps["binding"]["status"] == "blocked"


def test_two_spare_gpus_need_a_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = plan(capsys, _tree(tmp_path / "h"))["by_id"]
    assert steps["gpu"]["status"] == "blocked"
    assert "0000:01:00.0, 0000:02:00.0" in steps["gpu"]["summary"]


def test_the_only_gpu_is_blocked_unless_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h")
    for address in ("0000:01:00.0", "0000:01:00.1", "0000:02:00.0"):
        shutil.rmtree(host.root / f"sys/devices/pci0000:00/{address}")
        (host.root / f"sys/bus/pci/devices/{address}").unlink()
        for link in (host.root / "sys/kernel/iommu_groups").glob(f"*/devices/{address}"):
            link.unlink()
    steps = plan(capsys, host)["by_id"]
    assert steps["gpu"]["status"] == "blocked"
    assert "the only GPU (0000:00:02.0) is the host's display" in steps["gpu"]["summary"]
    named = plan(capsys, host, "--gpu", "00:02")["by_id"]
    assert named["gpu"]["status"] == "done" and "no host picture" in named["gpu"]["summary"]
    assert named["vm"]["command"].split()[-5:-4] == ["--force"]  # vm create refuses it otherwise
    assert named["binding"]["summary"].startswith("libvirt:")  # an Intel GPU


@pytest.mark.parametrize(("answer", "status"), [("nvidia", "todo"), ("unknown", "todo"),
                                                ("on-demand", "done"), ("intel", "done")])
def test_nvidia_with_prime_select(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, answer: str, status: str) -> None:
    host = _tree(tmp_path / "h")
    # nvidia-prime's prime-select, answering `query` from the tree (the tree-aware runner runs it).
    host.file("usr/bin/prime-select", f'#!/bin/sh\n[ "$1" = query ] && echo {answer}\n').chmod(0o755)
    monkeypatch.setattr("vfiodesk.cli.setup.CommandRunner", FakeRunner)
    payload = plan(capsys, host, "--gpu", "01:00")
    step = payload["by_id"]["prime"]
    assert step["status"] == status
    assert step["command"] == "prime-select intel"
    if status == "todo":
        assert payload["next"] == "prime"
        assert payload["by_id"]["vm"]["status"] == "blocked"


def test_vfio_early_plans_the_early_binding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h")
    steps = plan(capsys, host, "--gpu", "01:00", "--binding", "vfio-early")["by_id"]
    assert steps["binding"]["status"] == "todo"
    assert steps["binding"]["command"] == f"vfiodesk host vfio-early 01:00 --apply --root {host.root}"
    assert "--binding vfiodesk" in steps["vm"]["command"]


def test_setup_yes_applies_the_iommu_then_resumes_after_the_reboot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(tmp_path / "before", iommu=False)
    first = run_cli(capsys, "setup", "--yes", "--gpu", "01:00", "--root", str(before.root),
                    "--connect", TEST_URI)
    assert first.status == 0, first.stderr
    assert "reboot now" in first.stdout
    grub = (before.root / "etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash intel_iommu=on"' in grub
    again = plan(capsys, before)
    assert again["next"] == "reboot" and again["by_id"]["iommu"]["status"] == "done"
    assert again["by_id"]["reboot"]["command"] == "reboot"

    # The same boot id with no groups after a "reboot": it did not take effect.
    still_off = _tree(tmp_path / "still-off", iommu=False, boot_id="boot-2")
    shutil.copytree(before.root / "var/lib/vfiodesk", still_off.root / "var/lib/vfiodesk")
    blocked = plan(capsys, still_off)["by_id"]["reboot"]
    assert blocked["status"] == "blocked" and "still off" in blocked["summary"]

    # The reboot took effect: the same disk (state, grub), a kernel with the IOMMU on.
    after = _tree(tmp_path / "after", boot_id="boot-2")
    shutil.copytree(before.root / "var/lib/vfiodesk", after.root / "var/lib/vfiodesk")
    resumed = plan(capsys, after)
    assert resumed["by_id"]["reboot"]["status"] == "done"
    assert resumed["by_id"]["gpu"]["status"] == "done"  # --gpu was remembered
    assert resumed["next"] == "hook"

    undone = run_cli(capsys, "setup", "undo", "--root", str(before.root), "--connect", TEST_URI)
    assert undone.status == 0, undone.stderr
    assert (before.root / "etc/default/grub").read_text() == \
        'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'
    assert plan(capsys, before)["next"] == "iommu"


def test_setup_yes_stops_where_an_answer_is_missing(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h")
    result = run_cli(capsys, "setup", "--yes", "--gpu", "01:00", "--root", str(host.root),
                     "--connect", TEST_URI)
    assert result.status == ExitStatus.HOST_NOT_READY, result.stdout + result.stderr
    assert (host.root / "etc/libvirt/hooks/qemu.d/vfiodesk").is_file()  # the hook step ran
    assert "blocked at vm" in result.stdout and "--iso" in result.stdout


def test_bad_answers_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = _tree(tmp_path / "h")
    profile = tmp_path / "p.toml"
    profile.write_text('gpu = "01:00"\ncolour = "blue"\n')
    result = run_cli(capsys, "setup", "--dry-run", "--profile", str(profile), "--root", str(host.root))
    assert result.status == ExitStatus.USAGE and "colour" in result.stderr
    result = run_cli(capsys, "setup", "--dry-run", "--gpu", "zz:00", "--root", str(host.root))
    assert result.status == ExitStatus.USAGE
    profile.write_text('os = "win7"\n')
    result = run_cli(capsys, "setup", "--dry-run", "--profile", str(profile), "--root", str(host.root))
    assert result.status == ExitStatus.USAGE and "win7" in result.stderr


@pytest.mark.parametrize(("profile", "message"), [
    ('colour = "blue"\n', "unknown key 'colour' in profile"),
    ('cpus = "four"\n', "profile key 'cpus' must be a whole number, not 'four'"),
    ('cpus = true\n', "profile key 'cpus' must be a whole number, not True"),
    ('memory = 8\n', "profile key 'memory' must be a string, not 8"),
    ('memory = "lots"\n', "lots"),
    ('memory = "100T"\n', "100T"),
    ('gpu = "zz:00"\n', "zz:00"),
    ('usb_controller = "00:14.9"\n', "00:14.9"),
    ('disk = "POOL/VOL,speed=9"\n', "disk option 'speed=9' is not size=... or format=..."),
    ('network = "bad net"\n', "'bad net' is not a libvirt network name"),
    ('domain-type = "xen"\n', "unknown domain type 'xen'"),
])
def test_a_bad_profile_gets_the_same_error_from_setup_and_vm_create(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], profile: str, message: str) -> None:
    """One loader and one validator: setup stops before its first step with vm create's words."""
    host = _tree(tmp_path / "h")
    path = tmp_path / "p.toml"
    path.write_text(profile)
    common = ("--profile", str(path), "--root", str(host.root), "--connect", TEST_URI)
    from_setup = run_cli(capsys, "setup", "--dry-run", *common)
    from_vm = run_cli(capsys, "vm", "create", "win10", "--print-xml", *common)
    assert from_setup.status == from_vm.status == ExitStatus.USAGE, from_setup.stderr + from_vm.stderr
    error = from_setup.stderr.splitlines()[0]
    assert message in error and error == from_vm.stderr.splitlines()[0]
    if "unknown key" not in message:  # the hint lists each command's own keys
        assert from_setup.stderr == from_vm.stderr


def test_profile_answers_and_relative_isos(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    host = _tree(tmp_path / "h")
    profile = tmp_path / "p.toml"
    profile.write_text('gpu = "01:00"\nmemory = "16G"\niso = "Win10.iso"\nbinding = "libvirt"\n'
                       'os = "win10"\n')
    monkeypatch.chdir(tmp_path)
    steps = plan(capsys, host, "--profile", str(profile), "--memory", "12G")["by_id"]
    command = steps["vm"]["command"]
    assert "--memory 12G" in command and f"--iso {tmp_path}/Win10.iso" in command
    assert "--binding libvirt" in command
    assert "--os win10" in command  # the seed's Windows 10: no TPM or Secure Boot asked of the VM


def test_setup_yes_defines_the_vm_on_a_real_libvirtd(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      libvirtd: str) -> None:
    host = _tree(tmp_path / "h")
    with_this_machines_firmware(host)  # a Windows 11 VM: its varstore is made from this OVMF
    name = f"vfiodesk-setup-{uuid.uuid4().hex[:8]}"
    common = ["--root", str(host.root), "--connect", libvirtd]
    images = qemu_readable_dir()
    try:
        result = run_cli(capsys, "setup", "--yes", "--name", name, "--gpu", "01:00", "--memory", "1G",
                         "--disk", f"path={images}/{name}.qcow2,size=64M,format=qcow2",
                         "--iso", "/isos/win10.iso", "--virtio-iso", "/isos/virtio-win.iso",
                         "--network", "", "--domain-type", "qemu", *common)
        assert result.status == 0, result.stdout + result.stderr
        assert "next: install Windows" in result.stdout and "vioscsi\\w10\\amd64" in result.stdout
        shown = subprocess.run(["virsh", "-c", libvirtd, "dumpxml", name], capture_output=True,
                               text=True, check=True).stdout
        assert "<hostdev" in shown
        later = run_cli(capsys, "setup", "--yes", "--windows-installed", "--json", *common)
        assert later.status == 0, later.stderr
        steps = {step["id"]: step for step in later.json()["steps"]}
        assert steps["post-install"]["status"] == "done" and steps["msi"]["status"] == "done"
        assert later.json()["next"] == "up"
        script = host.root / f"var/lib/vfiodesk/setup/{name}-enable-msi.ps1"
        assert "MSISupported" in script.read_text()
        assert (host.root / f"var/lib/vfiodesk/setup/{name}-synergy.conf").is_file()
        undone = run_cli(capsys, "setup", "undo", *common)
        assert undone.status == 0, undone.stderr
        assert not script.exists()
        assert not (host.root / "etc/libvirt/hooks/qemu.d/vfiodesk").exists()
        listed = subprocess.run(["virsh", "-c", libvirtd, "list", "--all", "--name"], capture_output=True,
                                text=True, check=True).stdout
        assert name not in listed.split()
    finally:
        virsh = ["virsh", "-c", libvirtd]
        subprocess.run([*virsh, "undefine", "--nvram", "--tpm", name], capture_output=True, check=False)
        Path(f"/var/lib/libvirt/qemu/nvram/{name}_VARS.fd").unlink(missing_ok=True)
        subprocess.run([*virsh, "pool-destroy", images.name], capture_output=True, check=False)
        subprocess.run([*virsh, "pool-undefine", images.name], capture_output=True, check=False)
        shutil.rmtree(images, ignore_errors=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interactive_setup_asks_and_stops_when_told(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    host = _tree(tmp_path / "h")
    # GPU (two candidates), USB controller, memory, two ISOs (later), binding (default), run? no.
    monkeypatch.setattr("sys.stdin", _Terminal("0000:01:00.0\n0000:00:14.0\n4G\n\n\n\nn\n"))
    result = run_cli(capsys, "setup", "--root", str(host.root), "--connect", TEST_URI)
    assert result.status == 0, result.stdout + result.stderr
    assert "Which GPU goes to the VM" in result.stdout and "vfio-early:" in result.stdout
    assert "Stopped; run vfiodesk setup again" in result.stdout
    assert not (host.root / "etc/libvirt/hooks/qemu.d/vfiodesk").exists()  # told not to
    steps = plan(capsys, host)["by_id"]  # the answers were kept
    assert "--gpu 01:00 --usb-controller 0000:00:14.0 --memory 4G" in steps["vm"]["command"]
    assert "--binding vfiodesk" in steps["vm"]["command"]  # the default for an NVIDIA card


def test_setup_without_a_terminal_or_yes_is_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "setup", "--root", str(_tree(tmp_path / "h").root), "--connect", TEST_URI)
    assert result.status == ExitStatus.USAGE and "--yes" in result.stderr
