"""Single-GPU hosts on fake trees: vm create/tune --single-gpu, the hook's hand-off as one
transaction, the holders it names, the watchdog, restore --all. The kernel's side (drivers
really moving, the console, a desktop stand-in) is proven by the single-GPU steps of
`vfiodesk lab demo` (vfiodesk.lab.steps.single_gpu)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost
from tests.test_hook import runnable
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.binding import handoff, watchdog
from vfiodesk.binding.display import gpu_device_nodes, wait_for_holders
from vfiodesk.binding.journal import read_records
from vfiodesk.domxml.document import DomainDocument
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciAddress

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
PAIR = [PciAddress.parse(GPU), PciAddress.parse(AUDIO)]


def single_gpu_host(root: Path) -> FakeHost:
    """One AMD card that the firmware boots on, with its HDMI audio, a console and efifb on it."""
    host = FakeHost(root)
    host.pci("0000:00:00.0", 0x1022, 0x1480, 0x060000, group=0)
    host.pci("0000:00:01.1", 0x1022, 0x1483, 0x060400, driver="pcieport", group=1)
    host.pci(GPU, 0x1002, 0x73BF, 0x030000, driver="amdgpu", group=1, boot_vga=True)
    host.pci(AUDIO, 0x1002, 0xAB28, 0x040300, driver="snd_hda_intel", group=1)
    real = "sys/devices/pci0000:00"
    for name in ("card0", "renderD128"):
        host.file(f"{real}/{GPU}/drm/{name}/dev", "226:0\n")
    host.file(f"{real}/{AUDIO}/sound/card1/id", "HDMI\n")
    host.file("sys/class/vtconsole/vtcon1/name", "(M) frame buffer device\n")
    host.file("sys/class/vtconsole/vtcon1/bind", "1\n")
    host.file("sys/bus/pci/drivers/vfio-pci/.keep")
    host.file("proc/cmdline", "root=/dev/nvme0n1p2 ro amd_iommu=on\n")
    host.file("dev/kvm")
    write_topology(host.root, intel_4c8t())
    return host


def hold(host: FakeHost, pid: int, comm: str, node: str) -> None:
    """A process with ``node`` open, as proc/PID/fd shows it."""
    host.file(f"proc/{pid}/comm", comm + "\n")
    host.link(f"proc/{pid}/fd/5", node)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return single_gpu_host(tmp_path / "host")


def create_xml(host: FakeHost, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    result = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root),
                     "--gpu", "01:00", "--cpus", "2", *extra)
    assert result.status == 0, result.stderr
    return result.stdout


def test_create_single_gpu_records_it_and_lets_the_hook_bind(host: FakeHost,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    doc = DomainDocument.parse(create_xml(host, capsys, "--single-gpu").encode())
    management = doc.management()
    assert management is not None and management.single_gpu and management.binding == "vfiodesk"
    assert {e.get("managed") for e in doc.iter_devices("hostdev")} == {"no"}
    refused = run_cli(capsys, "vm", "create", "w", "--print-xml", "--root", str(host.root), "--gpu", "01:00")
    assert refused.status == 4 and "--single-gpu to hand the host's only GPU over" in refused.stderr
    forced = create_xml(host, capsys, "--force")
    plain = DomainDocument.parse(forced.encode()).management()
    assert plain is not None and not plain.single_gpu and "single-gpu" not in forced  # not written


def test_single_gpu_is_refused_with_libvirt_binding_or_another_gpu(
        host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    clash = run_cli(capsys, "vm", "create", "w", "--print-xml", "--root", str(host.root),
                    "--gpu", "01:00", "--single-gpu", "--binding", "libvirt")
    assert clash.status == 2 and "--single-gpu needs the hook to bind" in clash.stderr
    (host.root / "sys/devices/pci0000:00" / GPU / "boot_vga").write_text("0\n")
    other = run_cli(capsys, "vm", "create", "w", "--print-xml", "--root", str(host.root),
                    "--gpu", "01:00", "--single-gpu")
    assert other.status == 2 and "is for the host's boot GPU" in other.stderr


def test_tune_single_gpu_marks_an_existing_vm_and_keeps_it(host: FakeHost, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    xml = tmp_path / "win10.xml"
    xml.write_text(create_xml(host, capsys, "--binding", "libvirt", "--force"))
    tuned = run_cli(capsys, "vm", "tune", "--xml", str(xml), "--single-gpu", "--root", str(host.root))
    assert tuned.status == 0, tuned.stderr
    doc = DomainDocument.parse(tuned.stdout.encode())
    management = doc.management()
    assert management is not None and management.single_gpu and management.binding == "vfiodesk"
    assert {e.get("managed") for e in doc.iter_devices("hostdev")} == {"no"}
    xml.write_text(tuned.stdout)
    again = run_cli(capsys, "vm", "tune", "--xml", str(xml), "--root", str(host.root))
    assert again.stdout == tuned.stdout  # a plain tune keeps the single-GPU mark


@pytest.mark.parametrize(("manage", "message"), [
    ('single-gpu="maybe"', "single-gpu='maybe' is not one of yes, no"),
    ('binding="libvirt" single-gpu="yes"', "single-gpu=yes needs binding=vfiodesk"),
])
def test_bad_single_gpu_metadata_is_refused(manage: str, message: str) -> None:
    xml = (f"<domain><metadata><v:vm xmlns:v='https://vfiodesk.dev/xmlns/domain/1'><v:manage {manage}/>"
           "</v:vm></metadata></domain>")
    with pytest.raises(InputError, match=message):
        DomainDocument.parse(xml.encode()).management()


def test_gpu_nodes_are_drm_sound_and_nvidia(host: FakeHost) -> None:
    assert gpu_device_nodes(host.paths, PAIR) == {
        "/dev/dri/card0", "/dev/dri/renderD128",
        "/dev/snd/controlC1", "/dev/snd/pcmC1D*", "/dev/snd/hwC1D*"}
    host.pci("0000:0a:00.0", 0x10DE, 0x2484, 0x030000, driver="nvidia", group=9)
    assert gpu_device_nodes(host.paths, [PciAddress.parse("0000:0a:00.0")]) == {"/dev/nvidia*"}


def test_holders_are_named_by_pid_and_command(host: FakeHost) -> None:
    hold(host, 812, "gnome-shell", "/dev/dri/renderD128")
    hold(host, 930, "pipewire", "/dev/snd/pcmC1D3p")
    hold(host, 931, "pipewire", "/dev/snd/pcmC10D0p")  # another card: not a holder
    nodes = gpu_device_nodes(host.paths, PAIR)
    assert wait_for_holders(host.paths, nodes, timeout=0) == ("812 gnome-shell", "930 pipewire")


def hook(host: FakeHost, operation: str, xml: str, sub: str = "begin",
         vm: str = "win10") -> subprocess.CompletedProcess[str]:
    """The hook as libvirt calls it, on the tree (commands are printed, not run)."""
    script = host.root / "etc/libvirt/hooks/qemu.d/vfiodesk"
    return subprocess.run([str(script), vm, operation, sub, "-"], input=xml, capture_output=True,
                          text=True, env={**os.environ, "VFIODESK_ROOT": str(host.root)}, check=False)


def log_of(host: FakeHost) -> str:
    path = host.root / "run/vfiodesk/handoff.log"
    return path.read_text() if path.exists() else ""


@pytest.fixture
def installed(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> str:
    assert run_cli(capsys, "hook", "install", "--root", str(host.root)).status == 0
    runnable(host.root)
    return create_xml(host, capsys, "--single-gpu")


def test_hook_hand_off_is_journaled_step_by_step(host: FakeHost, installed: str) -> None:
    prepared = hook(host, "prepare", installed)
    assert prepared.returncode == 0, prepared.stderr
    order = [line for line in prepared.stderr.splitlines() if "would run: systemctl" in line]
    assert order[:2] == ["would run: systemctl is-active --quiet display-manager.service",
                         "would run: systemctl stop display-manager.service"]
    assert set(read_records(host.paths)) == {GPU, AUDIO}
    assert read_records(host.paths)[GPU].consoles == ("vtcon1",)
    state = handoff.read_state(host.paths)
    assert state is not None and state.phase == "prepared" and state.display_manager_was_active
    log = log_of(host)
    for step in ("stopping display-manager.service", "waiting until nothing holds /dev/dri/card0",
                 "would start the watchdog", "echo 0 > /sys/class/vtconsole/vtcon1/bind",
                 f"echo {GPU} > /sys/bus/pci/drivers_probe", "bound 0000:01:00.0, 0000:01:00.1 to vfio-pci"):
        assert step in log, step
    host.file("run/libvirt/qemu/win10.pid", "4321\n")
    assert hook(host, "started", installed).returncode == 0
    started = handoff.read_state(host.paths)
    assert started is not None and (started.phase, started.qemu_pid) == ("started", 4321)
    assert started.daemon_pid == os.getpid()  # the process that ran the hook, as libvirtd does
    released = hook(host, "release", installed, "end")
    assert released.returncode == 0
    assert "would run: systemctl start display-manager.service" in released.stderr
    assert handoff.read_state(host.paths) is None and read_records(host.paths) == {}
    assert "echo 1 > /sys/class/vtconsole/vtcon1/bind" in log_of(host)


def test_a_holder_refuses_the_start_and_the_desktop_comes_back(host: FakeHost, installed: str) -> None:
    hold(host, 4242, "obs", "/dev/dri/card0")
    prepared = hook(host, "prepare", installed)
    assert prepared.returncode == 1
    assert "the GPU is still held by 4242 obs" in prepared.stderr
    assert "would run: systemctl start display-manager.service" in prepared.stderr
    assert handoff.read_state(host.paths) is None and read_records(host.paths) == {}
    assert "prepare failed" in log_of(host)


def test_a_second_single_gpu_vm_is_refused_while_one_runs(host: FakeHost, installed: str) -> None:
    assert hook(host, "prepare", installed).returncode == 0
    other = installed.replace("<name>win10</name>", "<name>other</name>")
    again = hook(host, "prepare", other, vm="other")
    assert again.returncode == 1 and "already handed to win10" in again.stderr
    assert hook(host, "release", other, "end", vm="other").returncode == 0
    state = handoff.read_state(host.paths)  # the running one's hand-off is untouched by both
    assert state is not None and state.vm == "win10" and set(read_records(host.paths)) == {GPU, AUDIO}


def test_restore_all_gives_the_display_back_from_ssh(host: FakeHost, installed: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert hook(host, "prepare", installed).returncode == 0
    dry = run_cli(capsys, "restore", "--all", "--dry-run", "--root", str(host.root))
    assert "would give win10's GPU back" in dry.stdout and handoff.read_state(host.paths) is not None
    done = run_cli(capsys, "restore", "--all", "--root", str(host.root))
    assert done.status == 0 and "starting display-manager.service" in done.stdout
    assert handoff.read_state(host.paths) is None and read_records(host.paths) == {}


def write_state(host: FakeHost, phase: str, pid: int | None = None) -> None:
    handoff.write_state(host.paths, handoff.HandoffState("win10", (GPU, AUDIO), True, phase, pid))


def test_watchdog_restores_a_vm_that_never_started(host: FakeHost) -> None:
    write_state(host, "prepared")
    said: list[str] = []
    reason = watchdog.watch(host.paths, "win10", said.append, bound=0.0, sleep=lambda _: None)
    assert "did not reach started within 0 s" in reason and handoff.read_state(host.paths) is None
    assert any("giving the host its display back" in line for line in said)


def test_watchdog_gives_a_slowly_starting_qemu_longer(host: FakeHost) -> None:
    write_state(host, "prepared")
    status = host.file("run/libvirt/qemu/win10.xml", "<domstatus/>")  # libvirt still starts it
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:
            status.unlink()
            host.file("run/libvirt/qemu/win10.pid", "4321\n")
            host.file("proc/4321/stat", "4321 (qemu-system-x86) R 1 4321 4321 0 -1\n")
        if len(polls) == 4:
            (host.root / "proc/4321/stat").unlink()  # QEMU gave up before `started`

    reason = watchdog.watch(host.paths, "win10", lambda _: None, bound=0.0, starting_bound=600.0,
                            sleep=sleep)
    assert len(polls) == 4 and "did not reach started within 0 s" in reason
    assert handoff.read_state(host.paths) is None


def test_watchdog_restores_when_qemu_died_without_a_release(host: FakeHost) -> None:
    write_state(host, "started", 4321)
    host.file("proc/4321/stat", "4321 (qemu-system-x86) Z 1 4321 4321 0 -1\n")  # a zombie is gone
    reason = watchdog.watch(host.paths, "win10", lambda _: None, grace=0.0, sleep=lambda _: None)
    assert "QEMU (pid 4321) exited and no release followed" in reason
    assert handoff.read_state(host.paths) is None


def test_watchdog_waits_for_the_release_of_a_daemon_that_lives(host: FakeHost) -> None:
    """A destroy on a loaded host: QEMU is gone, libvirtd still tears the domain down; its
    release, not the watchdog, gives the display back (the lab saw the watchdog win the race)."""
    handoff.write_state(host.paths, handoff.HandoffState("win10", (GPU, AUDIO), True, "started", 4321,
                                                         daemon_pid=77))
    host.file("proc/77/stat", "77 (libvirtd) S 1 77 77 0 -1\n")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:
            write_state(host, "releasing", 4321)

    reason = watchdog.watch(host.paths, "win10", lambda _: None, grace=0.0, teardown_bound=600.0,
                            sleep=sleep)
    assert reason == "a release began; nothing to do" and len(polls) == 3
    (host.root / "proc/77/stat").unlink()  # the daemon died with QEMU: nobody will release
    write_state(host, "started", 4321)
    reason = watchdog.watch(host.paths, "win10", lambda _: None, grace=0.0, teardown_bound=600.0,
                            sleep=sleep)
    assert "exited and no release followed" in reason and handoff.read_state(host.paths) is None


def test_watchdog_leaves_a_running_vm_and_ends_with_its_release(host: FakeHost) -> None:
    write_state(host, "started", 4321)
    host.file("proc/4321/stat", "4321 (qemu-system-x86) S 1 4321 4321 0 -1\n")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:  # libvirt's release begins
            write_state(host, "releasing", 4321)

    reason = watchdog.watch(host.paths, "win10", lambda _: None, bound=0.0, grace=0.0, sleep=sleep)
    assert reason == "a release began; nothing to do" and len(polls) == 3
    state = handoff.read_state(host.paths)
    assert state is not None and state.phase == "releasing"  # the release's to finish, not ours


def test_watchdog_runs_outside_libvirt_under_systemd(host: FakeHost) -> None:
    from vfiodesk.paths import HostPaths

    argv = handoff.watchdog_argv(HostPaths(Path("/")), "win10")
    assert argv[-3:] == ["--root", "/", "win10"] and "vfiodesk.binding.watchdog" in argv
    assert (argv[:2] == ["systemd-run", "--no-block"]) == os.path.isdir("/run/systemd/system")
    host.file("run/systemd/system/.keep")  # a tree is never the running system: no systemd-run
    assert handoff.watchdog_argv(host.paths, "win10")[1:3] == ["-m", "vfiodesk.binding.watchdog"]


def test_damaged_state_is_a_clear_error(host: FakeHost) -> None:
    host.file("run/vfiodesk/single-gpu.json", json.dumps({"vm": "win10"}))
    with pytest.raises(Exception, match=r"hand-off state .* is damaged"):
        handoff.read_state(host.paths)


def test_doctor_warns_and_names_the_single_gpu_path(host: FakeHost,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_doctor import checks_of

    check = checks_of(run_cli(capsys, "doctor", "--json", "--root", str(host.root)).json())["gpu-candidate"]
    assert check["status"] == "warn" and "single-GPU path" in check["summary"]
    assert "vfiodesk vm create NAME --gpu 01:00 --single-gpu" in check["hint"]
