"""`vfiodesk host ...` end to end on fake trees: previews write nothing, --apply writes the tree
and prints the commands (never runs them under --root), undo puts everything back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.fakekernel import FakeRunner
from vfiodesk.errors import ExitStatus

GRUB = 'GRUB_DEFAULT=0\n# keep me\nGRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=on"\nGRUB_CMDLINE_LINUX=""\n'


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake = ready_host(tmp_path / "host")
    fake.file("etc/default/grub", GRUB)
    fake.file("usr/sbin/update-grub")
    fake.file("usr/sbin/update-initramfs")
    fake.file("etc/initramfs-tools/modules", "# List of modules\n")
    fake.file("proc/meminfo", "MemTotal:       33554432 kB\nMemFree:        1000 kB\n")
    fake.file("proc/sys/vm/nr_hugepages", "0\n")
    fake.file("etc/passwd", "root:x:0:0::/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/sh\n"
                            "bob:x:1000:1000::/home/bob:/bin/bash\n")
    return fake


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*")
            if path.is_file() and not path.is_symlink()}


def test_iommu_preview_shows_diff_and_command_and_writes_nothing(capsys: pytest.CaptureFixture[str],
                                                                   host: FakeHost) -> None:
    before = tree_bytes(host.root)
    result = run_cli(capsys, "host", "iommu", "--passthrough-mode", "--root", str(host.root))
    assert result.status == 0, result.stderr
    assert '+GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on iommu=pt"' in result.stdout
    assert "removed amd_iommu=on" in result.stdout
    assert "  update-grub" in result.stdout and "Nothing was written" in result.stdout
    assert tree_bytes(host.root) == before


def test_iommu_apply_history_and_undo(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    root = str(host.root)
    result = run_cli(capsys, "host", "iommu", "--igfx-off", "--apply", "--root", root)
    assert result.status == 0, result.stderr
    assert "would run: update-grub" in result.stderr
    assert (host.root / "etc/default/grub").read_text() == GRUB.replace(
        "quiet amd_iommu=on", "quiet intel_iommu=on,igfx_off")
    assert "0001-iommu" in run_cli(capsys, "host", "history", "--root", root).stdout
    again = run_cli(capsys, "host", "iommu", "--igfx-off", "--apply", "--root", root)
    assert "Nothing to change" in again.stdout
    undone = run_cli(capsys, "host", "undo", "--root", root)
    assert undone.status == 0 and "restored /etc/default/grub" in undone.stdout
    assert (host.root / "etc/default/grub").read_text() == GRUB


def test_a_failed_update_grub_puts_the_file_back_so_running_again_works(
        capsys: pytest.CaptureFixture[str], host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    # Left written, the second run found "Nothing to change" and update-grub never ran.
    monkeypatch.setattr("vfiodesk.cli.hostplan.CommandRunner", FakeRunner)
    root = str(host.root)
    update_grub = host.file("usr/bin/update-grub", "#!/bin/sh\necho 'grub-probe: no disk' >&2; exit 1\n")
    update_grub.chmod(0o755)
    failed = run_cli(capsys, "host", "iommu", "--apply", "--root", root)
    assert failed.status == 1 and "update-grub failed (exit 1): grub-probe" in failed.stderr
    assert "nothing was changed (change 0001-iommu was taken back)" in failed.stderr
    assert (host.root / "etc/default/grub").read_text() == GRUB
    host.file("usr/bin/update-grub", "#!/bin/sh\nexit 0\n")
    again = run_cli(capsys, "host", "iommu", "--apply", "--root", root)
    assert again.status == 0 and "ran: update-grub" in again.stdout, again.stderr
    assert "quiet intel_iommu=on" in (host.root / "etc/default/grub").read_text()


def test_iommu_errors_leave_the_file_untouched(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    root = str(host.root)
    host.file("etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet $(cat /etc/extra)"\n')
    result = run_cli(capsys, "host", "iommu", "--apply", "--root", root)
    assert result.status == 1 and "cannot follow" in result.stderr and "hint:" in result.stderr
    assert "$(cat /etc/extra)" in (host.root / "etc/default/grub").read_text()
    (host.root / "etc/default/grub").unlink()
    result = run_cli(capsys, "host", "iommu", "--root", root)
    assert result.status == 1 and "cannot tell which boot loader" in result.stderr
    assert run_cli(capsys, "host", "iommu", "--boot-loader", "lilo", "--root", root).status == 2


def test_igfx_off_on_amd_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    amd = ready_host(tmp_path / "amd", vendor="AuthenticAMD")
    result = run_cli(capsys, "host", "iommu", "--igfx-off", "--root", str(amd.root))
    assert result.status == 2 and "Intel option" in result.stderr


def test_vfio_early_writes_modprobe_and_initramfs(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    result = run_cli(capsys, "host", "vfio-early", "01:00", "--apply", "--root", str(host.root))
    assert result.status == 0, result.stderr
    modprobe = (host.root / "etc/modprobe.d/vfiodesk-vfio.conf").read_text()
    assert "options vfio-pci ids=10de:10f0,10de:1b80\n" in modprobe
    assert "softdep nouveau pre: vfio-pci\nsoftdep snd_hda_intel pre: vfio-pci\n" in modprobe
    assert (host.root / "etc/initramfs-tools/modules").read_text() == (
        "# List of modules\nvfio_pci\nvfio\nvfio_iommu_type1\n")
    assert "would run: update-initramfs -u -k all" in result.stderr
    assert run_cli(capsys, "host", "undo", "--root", str(host.root)).status == 0
    assert not (host.root / "etc/modprobe.d/vfiodesk-vfio.conf").exists()
    assert (host.root / "etc/initramfs-tools/modules").read_text() == "# List of modules\n"


def test_vfio_early_refuses_twin_ids(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    host.pci("0000:05:00.0", 0x10DE, 0x1B80, 0x030000, driver="nouveau", group=9)
    result = run_cli(capsys, "host", "vfio-early", "01:00", "--root", str(host.root))
    assert result.status == 4 and "0000:05:00.0" in result.stderr
    assert not (host.root / "etc/modprobe.d").exists()


def test_vfio_early_builtin_goes_on_the_command_line_and_warns_about_boot_gpu(
        capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    host.file("lib/modules/6.1.0-test/modules.builtin", "kernel/drivers/vfio/pci/vfio-pci.ko\n")
    host.file("etc/crypttab", "root_crypt UUID=1234 none luks\n")
    result = run_cli(capsys, "host", "vfio-early", "00:02.0", "--root", str(host.root))
    assert result.status == 0, result.stderr
    assert '+GRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=on vfio-pci.ids=8086:3e92"' in result.stdout
    assert "boot GPU" in result.stdout and "passphrase" in result.stdout


def test_hugepages_2m_and_1g(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    root = str(host.root)
    result = run_cli(capsys, "host", "hugepages", "8G", "--apply", "--root", root)
    assert result.status == 0, result.stderr
    assert "vm.nr_hugepages = 4096\n" in (host.root / "etc/sysctl.d/60-vfiodesk-hugepages.conf").read_text()
    assert "4096 pages of 2MiB = 8GiB" in result.stdout and "it keeps 24GiB of 32GiB" in result.stdout
    assert run_cli(capsys, "host", "hugepages", "1G", "--page-size", "1G", "--root", root).status == 4
    host.file("proc/cpuinfo", "vendor_id\t: GenuineIntel\nflags\t\t: vmx pdpe1gb\n")
    result = run_cli(capsys, "host", "hugepages", "8G", "--page-size", "1G", "--root", root)
    assert 'amd_iommu=on default_hugepagesz=1G hugepagesz=1G hugepages=8"' in result.stdout
    result = run_cli(capsys, "host", "hugepages", "31G", "--root", root)
    assert result.status == 4 and "would leave the host" in result.stderr
    assert run_cli(capsys, "host", "hugepages", "lots", "--root", root).status == 2


def test_network_writes_valid_isolated_network(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    host.file("sys/class/net/eno1/address", "00:11:22:33:44:55\n")
    (host.root / "etc/NetworkManager").mkdir(parents=True)
    host.file("proc/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                                "eno1\t00C8A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")
    result = run_cli(capsys, "host", "network", "--macvtap", "eno1", "--apply", "--root", str(host.root))
    assert result.status == 0, result.stderr
    nm = (host.root / "etc/NetworkManager/conf.d/vfiodesk-macvtap.conf").read_text()
    assert "[keyfile]\nunmanaged-devices+=interface-name:macvtap*\n" in nm
    xml = host.root / "var/lib/vfiodesk/networks/vfiodesk-host.xml"
    assert "192.168.201.1" in xml.read_text() and "<forward" not in xml.read_text()  # 200/24 is taken
    if shutil.which("virt-xml-validate"):
        subprocess.run(["virt-xml-validate", str(xml), "network"], check=True, capture_output=True)
    assert "would run: virsh -c qemu:///system net-define /var/lib/vfiodesk/networks/vfiodesk-host.xml" \
        in result.stderr
    assert run_cli(capsys, "host", "network", "--macvtap", "nope0", "--root", str(host.root)).status == 2


def test_audio_pulseaudio_and_qemu_conf(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    host.file("usr/bin/pulseaudio")
    host.file("etc/pulse/default.pa", ".include /etc/pulse/default.pa.d\n"
                                      "#load-module module-native-protocol-tcp\n"
                                      "load-module module-x11-bell\n")
    conf = ("# Master configuration file\n#vnc_allow_host_audio = 0\n#user = \"root\"\n"
            'security_driver = "none"\n')
    host.file("etc/libvirt/qemu.conf", conf)
    result = run_cli(capsys, "host", "audio", "--user", "bob", "--apply", "--root", str(host.root))
    assert result.status == 0, result.stderr
    assert (host.root / "etc/pulse/default.pa").read_text() == (
        ".include /etc/pulse/default.pa.d\nload-module module-native-protocol-tcp auth-ip-acl=127.0.0.1\n"
        "load-module module-x11-bell\n")
    assert (host.root / "etc/libvirt/qemu.conf").read_text() == (
        "# Master configuration file\n#vnc_allow_host_audio = 0\nvnc_allow_host_audio = 1\n"
        '#user = "root"\nuser = "bob"\nsecurity_driver = "none"\n')
    assert "would run: systemctl restart libvirtd" in result.stderr
    assert run_cli(capsys, "host", "audio", "--user", "mallory", "--root", str(host.root)).status == 2


def test_audio_pipewire_dropin(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    host.file("usr/bin/pipewire-pulse")
    host.file("etc/libvirt/qemu.conf", "vnc_allow_host_audio = 0\n")
    result = run_cli(capsys, "host", "audio", "--apply", "--root", str(host.root))
    assert result.status == 0, result.stderr
    dropin = (host.root / "etc/pipewire/pipewire-pulse.conf.d/vfiodesk-tcp.conf").read_text()
    assert "module-native-protocol-tcp listen=127.0.0.1 port=4713" in dropin
    assert (host.root / "etc/libvirt/qemu.conf").read_text() == "vnc_allow_host_audio = 1\n"


def test_packages_prints_install_and_group_commands(capsys: pytest.CaptureFixture[str],
                                                    host: FakeHost) -> None:
    result = run_cli(capsys, "host", "packages", "--user", "bob", "--apply", "--root", str(host.root))
    assert result.status == 0, result.stderr
    assert ("would run: apt-get install -y qemu-system-x86 ovmf libvirt-daemon-system swtpm-tools "
            "virt-manager") in result.stderr
    assert "would run: usermod -aG libvirt bob" in result.stderr
    member = run_cli(capsys, "host", "packages", "--user", "alice", "--root", str(host.root))
    assert "apt-get install" in member.stdout and "usermod" not in member.stdout


def test_vfio_early_plans_like_bind(capsys: pytest.CaptureFixture[str], host: FakeHost) -> None:
    """One function names the whole card; a group bind refuses is refused here too."""
    result = run_cli(capsys, "host", "vfio-early", "01:00.0", "--apply", "--root", str(host.root))
    assert result.status == 0, result.stderr
    modprobe = (host.root / "etc/modprobe.d/vfiodesk-vfio.conf").read_text()
    assert "options vfio-pci ids=10de:10f0,10de:1b80\n" in modprobe  # the HDMI audio too
    run_cli(capsys, "host", "undo", "--root", str(host.root))
    refused = run_cli(capsys, "host", "vfio-early", "02:00.0", "--root", str(host.root))
    bind = run_cli(capsys, "bind", "02:00.0", "--dry-run", "--root", str(host.root))
    assert refused.status == bind.status == ExitStatus.REFUSED
    assert "0000:03:00.0 (IOMMU group 4) shares the group but was not named" in refused.stderr
    assert not (host.root / "etc/modprobe.d/vfiodesk-vfio.conf").exists()
    forced = run_cli(capsys, "host", "vfio-early", "02:00.0", "--force", "--root", str(host.root))
    assert forced.status == 0 and "ids=1002:67df,10ec:8168" in forced.stdout
    bridge = run_cli(capsys, "host", "vfio-early", "00:01.0", "--root", str(host.root))
    assert bridge.status == ExitStatus.USAGE and "is a bridge or root port" in bridge.stderr
