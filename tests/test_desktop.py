"""The desktop: MSI script, Synergy config, evdev/audio/Looking Glass edits, monitors, up/down."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.fakekernel import FakeRunner
from tests.test_pinning import intel_4c8t, write_topology
from tests.test_vm import this_machines_cpus, validate
from vfiodesk.desktop.monitor import listed_inputs
from vfiodesk.desktop.synergy import parse_config, server_config
from vfiodesk.domxml.desktop import looking_glass_size
from vfiodesk.errors import ExitStatus, InputError


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, intel_4c8t())
    return tree


@pytest.fixture
def domain(host: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    xml = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root), "--gpu", "01:00",
                  "--cpus", "2").stdout
    path = tmp_path / "win10.xml"
    path.write_text(xml)
    return path


def test_msi_script_names_exactly_the_passed_devices(host: FakeHost, domain: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    script = run_cli(capsys, "desktop", "msi", "--xml", str(domain), "--root", str(host.root)).stdout
    assert "VEN_10DE&DEV_1B80&SUBSYS_85911043" in script and "VEN_10DE&DEV_10F0&SUBSYS_85911043" in script
    assert script.count('-Name "MSISupported" -Value 1') == 2 and "VEN_8086" not in script
    assert script.count("{") == script.count("}") and "\r\n" in script
    assert "GP104 [GeForce GTX 1080]" in script


def test_synergy_config_parses_and_locks_the_cursor_with_alt_w() -> None:
    sections = parse_config(server_config("desk", "windows", "left", "192.168.100.10"))
    assert sections["links"] == {"desk": ["left = windows"], "windows": ["right = desk"]}
    assert sections["aliases"] == {"windows": ["192.168.100.10"]}
    assert sections["options"][""] == ["keystroke(Alt+w) = lockCursorToScreen(toggle)"]
    with pytest.raises(InputError, match="unknown side"):
        server_config("desk", "windows", "behind")


def test_input_command_writes_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synergy.conf"
    result = run_cli(capsys, "desktop", "input", "--xml", "unused.xml", "--mode", "inputleap",
                     "--host-screen", "desk", "--output", str(out))
    assert result.status == 0 and "input-leaps --config" in result.stdout
    assert parse_config(out.read_text())["links"]["desk"] == ["right = windows"]


def test_evdev_audio_and_looking_glass_edits_validate(host: FakeHost, domain: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    kbd, mouse = "/dev/input/by-id/usb-kbd-event-kbd", "/dev/input/by-id/usb-mouse-event-mouse"
    host.file(kbd.lstrip("/"))
    host.file(mouse.lstrip("/"))
    edited = run_cli(capsys, "desktop", "input", "--xml", str(domain), "--mode", "evdev", "--keyboard", kbd,
                     "--mouse", mouse, "--root", str(host.root))
    assert edited.status == 0 and 'grabToggle="ctrl-ctrl"' in edited.stdout
    validate(edited.stdout, tmp_path)
    for backend in ("pulseaudio", "none", "scream"):
        result = run_cli(capsys, "vm", "audio", "--xml", str(domain), "--backend", backend)
        assert result.status == 0, result.stderr
        validate(result.stdout, tmp_path)
        assert ('model="ich9"' in result.stdout) == (backend != "scream")
    glass = run_cli(capsys, "desktop", "looking-glass", "--xml", str(domain), "--resolution", "2560x1440")
    assert '<shmem name="looking-glass">' in glass.stdout and '<size unit="M">64</size>' in glass.stdout
    validate(glass.stdout, tmp_path)
    assert looking_glass_size(1920, 1080) == 32
    missing = run_cli(capsys, "desktop", "input", "--xml", str(domain), "--mode", "evdev", "--keyboard",
                      "/dev/input/by-id/nope", "--mouse", mouse, "--root", str(host.root))
    assert missing.status == ExitStatus.USAGE and "/dev/input/by-id/nope does not exist" in missing.stderr


STAND_IN = """#!/bin/sh
echo "$@" >> "{log}"
case "$*" in
  *"--display 2 capabilities"*) echo "DDC communication failed for monitor 2" >&2; exit 1 ;;
  *capabilities*) cat <<'END'
Model: TEST
   Feature: 10 (Brightness)
   Feature: 60 (Input Source)
      Values:
         0f: DisplayPort-1
         11: HDMI-1
   Feature: 62 (Audio)
END
  ;;
esac
"""


@pytest.fixture
def ddcutil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ddcutil that records its arguments and answers like a monitor."""
    bin_dir, log = tmp_path / "bin", tmp_path / "ddcutil.log"
    bin_dir.mkdir()
    (bin_dir / "ddcutil").write_text(STAND_IN.format(log=log))
    (bin_dir / "ddcutil").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def test_monitor_switch_sets_the_input_source(ddcutil: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "monitors.toml"
    config.write_text("[monitor.1]\nhost = 0x0f\nvm = 0x11\n")
    result = run_cli(capsys, "desktop", "monitor", "switch", "vm", "--config", str(config))
    assert result.status == 0, result.stderr
    assert ddcutil.read_text().splitlines() == ["--display 1 capabilities", "--display 1 setvcp 60 0x11"]


def test_monitor_refusals(ddcutil: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "monitors.toml"
    config.write_text("[monitor.1]\nhost = 0x0f\nvm = 0x12\n[monitor.2]\nhost = 0x0f\nvm = 0x11\n")
    switch = ("desktop", "monitor", "switch", "vm", "--config", str(config), "--monitor")
    unlisted = run_cli(capsys, *switch, "1")
    assert unlisted.status == ExitStatus.USAGE
    assert "does not list input 0x12 (it lists 0x0f, 0x11)" in unlisted.stderr
    silent = run_cli(capsys, *switch, "2")
    assert silent.status == 1 and "monitor 2 does not answer DDC/CI" in silent.stderr
    assert "setvcp" not in ddcutil.read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    absent = run_cli(capsys, *switch, "2")
    assert "ddcutil is not installed" in absent.stderr and "i2c-dev" in absent.stderr
    config.write_text("[monitor.1]\nhost = 'dp'\n")
    bad = run_cli(capsys, "desktop", "monitor", "switch", "vm", "--config", str(config))
    assert bad.status == ExitStatus.USAGE and "must hold host" in bad.stderr


def test_listed_inputs_reads_both_capability_layouts() -> None:
    one_line = "   Feature: 60 (Input source)\n      Values: 0f 11 12 (interpretation unavailable)\n"
    assert listed_inputs(one_line) == {0x0F, 0x11, 0x12}


@pytest.mark.libvirt
def test_up_and_down_on_a_real_libvirtd(host: FakeHost, libvirtd: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    this_machines_cpus(host)
    name = f"vfiodesk-up-{uuid.uuid4().hex[:8]}"
    made = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                   "--domain-type", "qemu", "--memory", "256M", "--network", "default", "--os", "win10")
    assert made.status == 0, made.stderr
    virsh = ["virsh", "-c", libvirtd]
    try:
        started = run_cli(capsys, "up", name, "--connect", libvirtd, "--root", str(host.root))
        assert started.status == 0, started.stderr
        state = subprocess.run([*virsh, "domstate", name], capture_output=True, text=True, check=True)
        assert state.stdout.strip() == "running"
        stopped = run_cli(capsys, "down", name, "--timeout", "1", "--connect", libvirtd, "--root",
                          str(host.root))
        assert stopped.status == 0 and "is off" in stopped.stdout
        state = subprocess.run([*virsh, "domstate", name], capture_output=True, text=True, check=True)
        assert state.stdout.strip() == "shut off"
    finally:
        subprocess.run([*virsh, "destroy", name], capture_output=True, check=False)
        subprocess.run([*virsh, "undefine", name, "--nvram"], capture_output=True, check=False)


@pytest.mark.libvirt
def test_up_refuses_while_prime_select_keeps_the_desktop_on_nvidia(
        host: FakeHost, libvirtd: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    this_machines_cpus(host)
    # An NVIDIA card at an address this machine does not have: the domain could never take
    # a real device, even if the refusal failed.
    host.pci("0000:7e:00.0", 0x10DE, 0x1B80, 0x030000, driver="nvidia", group=77, boot_vga=False)
    host.file("usr/bin/prime-select", "#!/bin/sh\n[ \"$1\" = query ] && echo nvidia\n").chmod(0o755)
    monkeypatch.setattr("vfiodesk.cli.desktop.CommandRunner", FakeRunner)
    name = f"vfiodesk-prime-{uuid.uuid4().hex[:8]}"
    made = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                   "--domain-type", "qemu", "--memory", "256M", "--network", "", "--gpu", "7e:00",
                   "--binding", "vfiodesk", "--os", "win10")
    assert made.status == 0, made.stderr
    try:
        refused = run_cli(capsys, "up", name, "--connect", libvirtd, "--root", str(host.root))
        assert refused.status == ExitStatus.REFUSED
        assert "prime-select query says nvidia: the host's desktop renders on 0000:7e:00.0" in refused.stderr
        assert "sudo prime-select on-demand (or intel)" in refused.stderr
        state = subprocess.run(["virsh", "-c", libvirtd, "domstate", name], capture_output=True, text=True,
                               check=True)
        assert state.stdout.strip() == "shut off"
    finally:
        subprocess.run(["virsh", "-c", libvirtd, "undefine", name, "--nvram"], capture_output=True,
                       check=False)


def barrier_reads(config: str, host_screen: str, tmp_path: Path) -> tuple[bool, str]:
    """Whether Barrier's server (Synergy's parser, kept by Input Leap) accepts the config: it
    reads the file first and quits on an error; a good file gets as far as opening the screen,
    which has no display here. Nothing listens: it stops there."""
    server = shutil.which("barriers") or shutil.which("input-leaps")
    assert server, "scripts/setup installs barrier (Synergy's server) for this test"
    path = tmp_path / "check.conf"
    path.write_text(config)
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    with subprocess.Popen([server, "--no-daemon", "--disable-crypto", "--name", host_screen,
                           "--address", "127.0.0.1:24899", "--config", str(path)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**env, "HOME": str(tmp_path)}) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if "cannot read configuration" in line:
                    return False, line
                if "unable to open screen" in line or "started server" in line:
                    return True, line
            return False, "the server quit without reading the file"
        finally:
            process.kill()


@pytest.mark.parametrize(("host_screen", "vm_screen", "side", "address"), [
    ("desk", "windows", "right", "192.168.100.10"), ("my-pc.lan", "win_10", "left", "win10.local"),
    ("a", "b", "up", None), ("host.", "vm", "down", "10.0.0.2"), ("x" * 63, "y", "right", "_gw")])
def test_synergy_server_reads_what_vfiodesk_writes(tmp_path: Path, host_screen: str, vm_screen: str,
                                                   side: str, address: str | None) -> None:
    accepted, said = barrier_reads(server_config(host_screen, vm_screen, side, address), host_screen,
                                   tmp_path)
    assert accepted, said


@pytest.mark.parametrize("name", ["a-", "a..b", "fe80::1", "-x", "host name", "a\nb", "caf\u00e9", ""])
def test_names_vfiodesk_refuses_are_names_synergy_refuses(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="is not a Synergy screen name"):
        server_config("desk", "windows", "right", name)
    if "\n" not in name and name:  # a newline cannot even be written as one alias line
        config = server_config("desk", "windows", "right", "ok").replace("\t\tok\n", f"\t\t{name}\n")
        accepted, said = barrier_reads(config, "desk", tmp_path)
        assert not accepted, said
