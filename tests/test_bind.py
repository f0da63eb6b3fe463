"""The binding engine's plans, refusals, journal and rollback on fake trees.

A plain tree's files do not react like sysfs: those tests check decisions and the exact writes.
Trees driven by tests/fakekernel.py react (drivers appear with their modules), so release is
verified there; tests/test_lab_bind.py proves the effects on the lab's real kernel.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.fakekernel import FakeKernel, FakeModule, FakeModules, FakeRunner, driver_of
from vfiodesk.binding.engine import FAULT_ENV, bind_devices, release_devices
from vfiodesk.binding.journal import read_records
from vfiodesk.errors import ExitStatus, RefusedError, VfiodeskError
from vfiodesk.host.pci import scan_pci_devices
from vfiodesk.host.usage import HostUsage
from vfiodesk.model.pci import PciAddress, parse_pci_pattern
from vfiodesk.plan.bind import plan_bind


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    tree.file("sys/bus/pci/drivers/vfio-pci/.keep")  # vfio-pci loaded
    return tree


def plan(host: FakeHost, *patterns: str, usage: HostUsage | None = None, force: bool = False):  # type: ignore[no-untyped-def]
    return plan_bind(scan_pci_devices(host.paths), [parse_pci_pattern(p) for p in patterns],
                     usage or HostUsage(), force=force)


def test_slot_pattern_binds_every_function_and_leaves_the_root_port(host: FakeHost) -> None:
    result = plan(host, "01:00")
    assert [str(d.address) for d in result.to_bind] == ["0000:01:00.0", "0000:01:00.1"]
    assert str(result.groups[0].roles[0][0].address) == "0000:00:01.0"  # the bridge stays


def test_naming_one_function_still_takes_the_whole_card(host: FakeHost) -> None:
    assert [str(d.address) for d in plan(host, "01:00.0").to_bind] == ["0000:01:00.0", "0000:01:00.1"]


def test_stranger_in_the_group_is_refused_unless_forced(host: FakeHost) -> None:
    with pytest.raises(RefusedError, match=r"0000:03:00.0 \(IOMMU group 4\) shares the group"):
        plan(host, "02:00.0")
    forced = plan(host, "02:00.0", force=True)
    assert {str(d.address) for d in forced.to_bind} == {"0000:02:00.0", "0000:03:00.0"}


def test_host_critical_devices_are_refused(host: FakeHost) -> None:
    nic = PciAddress.parse("03:00.0")
    with pytest.raises(RefusedError, match="NIC of the default route"):
        plan(host, "02:00.0", "03:00.0", usage=HostUsage(default_route=frozenset({nic})))
    with pytest.raises(RefusedError, match="carries the root filesystem"):
        plan(host, "02:00.0", "03:00.0", usage=HostUsage(root_fs=frozenset({nic})))
    gpu = PciAddress.parse("01:00.0")
    with pytest.raises(RefusedError, match="in use by 812 Xorg"):
        plan(host, "01:00", usage=HostUsage(device_holders={gpu: ("812 Xorg",)}))


@pytest.mark.parametrize(("argument", "message"), [
    ("zz:00.0", "is not a PCI address"),
    ("09:00.0", "no PCI device 0000:09:00.0"),
    ("00:01.0", "is a bridge or root port"),
])
def test_bad_devices_are_clear_errors(host: FakeHost, capsys: pytest.CaptureFixture[str],
                                      argument: str, message: str) -> None:
    result = run_cli(capsys, "bind", argument, "--root", str(host.root))
    assert result.status != 0 and message in result.stderr
    assert not (host.root / "run/vfiodesk/devices").exists()


def test_iommu_off_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fakehost import desktop_host

    tree = desktop_host(tmp_path, iommu=False)
    result = run_cli(capsys, "bind", "01:00", "--root", str(tree.root))
    assert result.status == 1 and "has no IOMMU group: the IOMMU is off" in result.stderr


def test_dry_run_prints_exactly_the_writes_and_changes_nothing(
        host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.relative_to(host.root) for p in host.root.rglob("*"))
    result = run_cli(capsys, "bind", "01:00", "--dry-run", "--json", "--root", str(host.root))
    payload = result.json()
    assert payload["writes"] == [
        "echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override",
        "echo 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind",
        "echo 0000:01:00.0 > /sys/bus/pci/drivers_probe",
        "echo vfio-pci > /sys/bus/pci/devices/0000:01:00.1/driver_override",
        "echo 0000:01:00.1 > /sys/bus/pci/devices/0000:01:00.1/driver/unbind",
        "echo 0000:01:00.1 > /sys/bus/pci/drivers_probe",
    ]
    assert sorted(p.relative_to(host.root) for p in host.root.rglob("*")) == before


def test_bind_journals_originals_before_writing(host: FakeHost) -> None:
    report = bind_devices(host.paths, [parse_pci_pattern("01:00")])
    assert report.bound == ["0000:01:00.0", "0000:01:00.1"]
    records = read_records(host.paths)
    assert records["0000:01:00.0"].original_driver == "nouveau"
    assert records["0000:01:00.1"].original_driver == "snd_hda_intel"
    override = host.root / "sys/devices/pci0000:00/0000:01:00.0/driver_override"
    assert override.read_text() == "vfio-pci\n"


def test_failure_on_the_second_device_rolls_the_first_back(
        host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "fail:0000:01:00.1")
    with pytest.raises(VfiodeskError, match="injected fault"):
        bind_devices(host.paths, [parse_pci_pattern("01:00")])
    # Both overrides written back to their originals (empty = cleared), journal emptied.
    for function in ("0", "1"):
        path = host.root / f"sys/devices/pci0000:00/0000:01:00.{function}/driver_override"
        assert path.read_text() == "\n"
    assert read_records(host.paths) == {}


def test_boot_gpu_consoles_are_freed_and_nvidia_modules_unloaded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = ready_host(tmp_path)
    tree.file("sys/bus/pci/drivers/vfio-pci/.keep")
    tree.file("sys/class/vtconsole/vtcon1/name", "(M) frame buffer device\n")
    tree.file("sys/class/vtconsole/vtcon1/bind", "1\n")
    tree.file("sys/class/vtconsole/vtcon0/name", "(S) dummy device\n")
    tree.file("sys/class/vtconsole/vtcon0/bind", "0\n")
    tree.link("sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0",
              "../../../../devices/platform/efi-framebuffer.0")
    gpu = tree.root / "sys/devices/pci0000:00/0000:01:00.0"
    (gpu / "boot_vga").write_text("1\n")
    (gpu / "driver").unlink()
    (gpu / "driver").symlink_to("../../../bus/pci/drivers/nvidia")
    result = run_cli(capsys, "bind", "01:00", "--dry-run", "--json", "--root", str(tree.root))
    payload = result.json()
    assert payload["free_consoles"] == ["vtcon1"] and payload["unload_nvidia"] is True
    assert payload["free_framebuffers"] == ["efi-framebuffer/efi-framebuffer.0"]
    assert payload["writes"][:2] == [
        "echo 0 > /sys/class/vtconsole/vtcon1/bind",
        "echo efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/unbind"]
    assert "would run: modprobe -r nvidia_drm" in result.stderr
    order = [line.split()[-1] for line in result.stderr.splitlines() if "would run:" in line]
    assert order == ["nvidia-persistenced", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"]
    tree.file("proc/77/comm", "nvidia-persiste\n")
    tree.link("proc/77/fd/3", "/dev/nvidiactl")
    assert run_cli(capsys, "bind", "01:00", "--dry-run", "--root", str(tree.root)).status == 0
    tree.file("proc/90/comm", "blender\n")
    tree.link("proc/90/fd/5", "/dev/nvidia0")
    held = run_cli(capsys, "bind", "01:00", "--dry-run", "--root", str(tree.root))
    assert held.status == 4 and "/dev/nvidia* is held by 90 blender" in held.stderr


def test_nvidia_stays_loaded_when_the_host_keeps_an_nvidia_gpu(host: FakeHost) -> None:
    for address in ("0000:01:00.0", "0000:02:00.0"):
        link = host.root / f"sys/devices/pci0000:00/{address}/driver"
        link.unlink()
        link.symlink_to("../../../bus/pci/drivers/nvidia")
    result = plan(host, "01:00")
    assert result.unload_nvidia is False
    assert any("the NVIDIA modules stay loaded" in w for w in result.warnings)


def test_restore_and_unbind_on_an_empty_journal(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "restore", "--all", "--root", str(host.root))
    assert result.status == 0 and "nothing to restore" in result.stdout
    released = run_cli(capsys, "unbind", "01:00.0", "--root", str(host.root))
    assert "not on vfio-pci (nouveau); nothing to do" in released.stdout
    usage = run_cli(capsys, "restore", "--root", str(host.root))
    assert usage.status == ExitStatus.USAGE and "name devices or pass --all" in usage.stderr


def test_damaged_journal_is_named(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    host.file("run/vfiodesk/devices/0000:01:00.0.json", json.dumps({"address": "nonsense"}))
    result = run_cli(capsys, "restore", "--all", "--root", str(host.root))
    assert result.status == 1 and "0000:01:00.0.json is damaged" in result.stderr


def test_devices_shows_reset_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = ready_host(tmp_path)
    (tree.root / "sys/devices/pci0000:00/0000:02:00.0/reset_method").write_text("\n")
    payload = run_cli(capsys, "devices", "--json", "--root", str(tree.root)).json()
    amd = next(d for d in payload["devices"] if d["address"] == "0000:02:00.0")
    assert any("no reset method" in w for w in amd["reset_warnings"])
    assert any("Polaris GPU with the known reset bug" in w for w in amd["reset_warnings"])


def test_a_gpu_held_by_a_display_server_is_refused(host: FakeHost,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (host.root / "sys/devices/pci0000:00/0000:01:00.0/drm/card1").mkdir(parents=True)
    host.file("proc/812/comm", "Xorg\n")
    host.link("proc/812/fd/14", "/dev/dri/card1")
    host.file("proc/900/comm", "bash\n")
    host.link("proc/900/fd/0", "/dev/pts/0")
    result = run_cli(capsys, "bind", "01:00", "--root", str(host.root))
    assert result.status == ExitStatus.REFUSED
    assert "is in use by 812 Xorg" in result.stderr and "bash" not in result.stderr
    assert read_records(host.paths) == {}


def _nvidia_desktop(tmp_path: Path) -> tuple[FakeHost, FakeModules]:
    """The seed's host: the card on the nvidia driver, its stack loaded, HDMI audio on
    snd_hda_intel, vfio-pci loaded; drivers exist only while their modules are loaded."""
    tree = ready_host(tmp_path / "host")
    tree.file("sys/bus/pci/drivers/vfio-pci/.keep")
    gpu = tree.root / "sys/devices/pci0000:00/0000:01:00.0"
    (gpu / "driver").unlink()
    shutil.rmtree(tree.root / "sys/bus/pci/drivers/nouveau")
    modules = FakeModules(tree)
    modules.add(FakeModule("nvidia", "nvidia", ("0000:01:00.0",)), loaded=True)
    modules.add(FakeModule("nvidia_modeset", depends=("nvidia",)), loaded=True)
    modules.add(FakeModule("nvidia_drm", depends=("nvidia_modeset",)), loaded=True)
    modules.add(FakeModule("nvidia_uvm", depends=("nvidia",)), loaded=True)
    modules.add(FakeModule("snd_hda_intel", "snd_hda_intel", ("0000:00:1f.3", "0000:01:00.1")), loaded=True)
    return tree, modules


def test_nvidia_is_given_back_after_its_modules_are_loaded_again(tmp_path: Path) -> None:
    tree, modules = _nvidia_desktop(tmp_path)
    assert driver_of(tree, "0000:01:00.0") == "nvidia"
    runner = FakeRunner(tree.paths, modules=modules)
    bind_devices(tree.paths, [parse_pci_pattern("01:00")], writer=FakeKernel(tree.paths, modules=modules),
                 runner=runner)
    assert [driver_of(tree, a) for a in ("0000:01:00.0", "0000:01:00.1")] == ["vfio-pci", "vfio-pci"]
    assert not (tree.root / "sys/bus/pci/drivers/nvidia").exists()  # gone with its module
    assert read_records(tree.paths)["0000:01:00.0"].module == "nvidia"
    runner.ran.clear()
    report = release_devices(tree.paths, None, writer=FakeKernel(tree.paths, modules=modules),
                             runner=runner)
    assert runner.ran == ["modprobe nvidia", "modprobe nvidia_modeset", "modprobe nvidia_drm",
                          "modprobe nvidia_uvm", "systemctl start nvidia-persistenced"]
    assert [driver_of(tree, a) for a in ("0000:01:00.0", "0000:01:00.1")] == ["nvidia", "snd_hda_intel"]
    assert report.done == ["0000:01:00.0: back on nvidia", "0000:01:00.1: back on snd_hda_intel"]
    assert report.notices == [] and read_records(tree.paths) == {}


def test_a_driver_unloaded_while_on_vfio_is_loaded_again(tmp_path: Path) -> None:
    tree, modules = _nvidia_desktop(tmp_path)
    modules.add(FakeModule("nouveau", "nouveau", ("0000:01:00.0",)), loaded=False)
    for name in ("nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"):
        modules.unload(name)
    modules.load("nouveau")
    runner = FakeRunner(tree.paths, modules=modules)
    bind_devices(tree.paths, [parse_pci_pattern("01:00")], writer=FakeKernel(tree.paths, modules=modules),
                 runner=runner)
    runner.run(["modprobe", "-r", "snd_hda_intel"])  # meanwhile, the host drops its sound driver
    assert driver_of(tree, "0000:00:1f.3") is None
    report = release_devices(tree.paths, None, writer=FakeKernel(tree.paths, modules=modules),
                             runner=runner)
    assert runner.ran[-1] == "modprobe snd_hda_intel"
    assert [driver_of(tree, a) for a in ("0000:01:00.0", "0000:01:00.1", "0000:00:1f.3")] == \
        ["nouveau", "snd_hda_intel", "snd_hda_intel"]
    assert report.done[1] == "0000:01:00.1: back on snd_hda_intel"


def test_a_failed_module_load_keeps_the_journal_for_restore(tmp_path: Path) -> None:
    tree, modules = _nvidia_desktop(tmp_path)
    runner = FakeRunner(tree.paths, modules=modules)
    bind_devices(tree.paths, [parse_pci_pattern("01:00")], writer=FakeKernel(tree.paths, modules=modules),
                 runner=runner)
    nvidia = modules.known.pop("nvidia")  # say, a kernel update removed it
    with pytest.raises(VfiodeskError, match="modprobe nvidia failed") as failed:
        release_devices(tree.paths, None, writer=FakeKernel(tree.paths, modules=modules), runner=runner)
    assert "vfiodesk restore --all" in (failed.value.hint or "")
    assert set(read_records(tree.paths)) == {"0000:01:00.0", "0000:01:00.1"}
    modules.known["nvidia"] = nvidia
    release_devices(tree.paths, None, writer=FakeKernel(tree.paths, modules=modules), runner=runner)
    assert driver_of(tree, "0000:01:00.0") == "nvidia" and read_records(tree.paths) == {}


def _boot_gpu_with_efifb(tree: FakeHost) -> None:
    tree.file("sys/class/vtconsole/vtcon1/name", "(M) frame buffer device\n")
    tree.file("sys/class/vtconsole/vtcon1/bind", "1\n")
    tree.file("sys/devices/platform/efi-framebuffer.0/uevent", "DRIVER=efi-framebuffer\n")
    tree.link("sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0",
              "../../../../devices/platform/efi-framebuffer.0")
    (tree.root / "sys/devices/pci0000:00/0000:01:00.0/boot_vga").write_text("1\n")


def test_efifb_that_cannot_come_back_is_reported_and_the_release_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    tree, modules = _nvidia_desktop(tmp_path)
    _boot_gpu_with_efifb(tree)
    runner = FakeRunner(tree.paths, modules=modules)
    bind_devices(tree.paths, [parse_pci_pattern("01:00")], writer=FakeKernel(tree.paths, modules=modules),
                 runner=runner)
    assert (tree.root / "sys/class/vtconsole/vtcon1/bind").read_text() == "0\n"
    assert not (tree.root / "sys/devices/platform/efi-framebuffer.0").exists()  # vfio-pci took it
    monkeypatch.setattr("vfiodesk.cli.bind.SysfsWriter",
                        lambda host, dry_run: FakeKernel(host, dry_run, modules=modules))
    monkeypatch.setattr("vfiodesk.binding.engine.CommandRunner",
                        lambda host, dry_run: FakeRunner(host, dry_run, modules=modules))
    result = run_cli(capsys, "unbind", "01:00", "--root", str(tree.root))
    assert result.status == 0, result.stderr
    assert "0000:01:00.0: back on nvidia" in result.stdout
    assert ("the console framebuffer efi-framebuffer.0 could not be re-attached (writing "
            "'efi-framebuffer.0' to /sys/bus/platform/drivers/efi-framebuffer/bind failed: No such "
            "device); the devices are back, and the screen comes back when 0000:01:00.0's own driver "
            "(nvidia) takes the screen over, or after a reboot") in result.stderr
    assert (tree.root / "sys/class/vtconsole/vtcon1/bind").read_text() == "1\n"
    assert driver_of(tree, "0000:01:00.0") == "nvidia" and read_records(tree.paths) == {}


def test_unbind_dry_run_lists_the_writes_and_commands_in_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree, modules = _nvidia_desktop(tmp_path)
    _boot_gpu_with_efifb(tree)
    bind_devices(tree.paths, [parse_pci_pattern("01:00")], writer=FakeKernel(tree.paths, modules=modules),
                 runner=FakeRunner(tree.paths, modules=modules))
    before = {p: p.read_bytes() for p in tree.root.rglob("*") if p.is_file()}
    result = run_cli(capsys, "unbind", "01:00", "--dry-run", "--root", str(tree.root))
    assert result.status == 0, result.stderr
    device = "/sys/bus/pci/devices/0000:01:00"
    assert result.stdout.splitlines() == [
        "Would write and run, in this order:",
        f"  echo (empty) > {device}.0/driver_override",
        f"  echo 0000:01:00.0 > {device}.0/driver/unbind",
        f"  echo (empty) > {device}.1/driver_override",
        f"  echo 0000:01:00.1 > {device}.1/driver/unbind",
        "  echo efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/bind",
        "  modprobe nvidia", "  modprobe nvidia_modeset", "  modprobe nvidia_drm", "  modprobe nvidia_uvm",
        "  echo 0000:01:00.0 > /sys/bus/pci/drivers_probe",
        "  echo 0000:01:00.1 > /sys/bus/pci/drivers_probe",
        "  echo 1 > /sys/class/vtconsole/vtcon1/bind",
        "  systemctl start nvidia-persistenced",
        "0000:01:00.0: would go back to nvidia",
        "0000:01:00.1: would go back to snd_hda_intel",
    ]
    assert "back on" not in result.stdout + result.stderr
    assert {p: p.read_bytes() for p in tree.root.rglob("*") if p.is_file()} == before
    restore = run_cli(capsys, "restore", "--all", "--dry-run", "--root", str(tree.root))
    assert restore.stdout == result.stdout
