"""`vm create` and `vm tune`: golden XML, libvirt's schema, and a real libvirtd."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_pinning import Core, intel_4c8t, write_topology
from tests.test_varstore import VIRT_FW_VARS, virt_fw_subjects
from vfiodesk.errors import ExitStatus
from vfiodesk.host.cpu import read_cpu_topology
from vfiodesk.paths import HostPaths

GOLDEN = Path(__file__).parent / "data" / "golden"


def qemu_readable_dir() -> Path:
    """A directory libvirt's QEMU user can reach (pytest's tmp dirs are private to root)."""
    base = Path("/var/lib/libvirt/images")
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="vfiodesk-test-", dir=base))
    path.chmod(0o755)
    return path


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, intel_4c8t())
    tree.file("isos/win10.iso", "iso")
    tree.file("isos/virtio-win.iso", "iso")
    return tree


def validate(xml: str, tmp_path: Path) -> None:
    path = tmp_path / f"{uuid.uuid4().hex}.xml"
    path.write_text(xml)
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr + xml


def check_golden(name: str, xml: str, regenerate: bool) -> None:
    path = GOLDEN / name
    if regenerate:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(xml)
        return
    assert path.exists(), f"golden file {path} is missing; create it with --regenerate-golden"
    assert xml == path.read_text(), f"{name} changed; rerun with --regenerate-golden if intended"


CASES = {
    "vm-create-gpu-q35.xml": ["--gpu", "01:00", "--usb-controller", "00:14.0", "--cpus", "6",
                              "--memory", "16G", "--memory-current", "8G",
                              "--iso", "/isos/win10.iso", "--virtio-iso", "/isos/virtio-win.iso",
                              "--disk", "/dev/vg0/win10", "--domain-type", "kvm", "--os", "win10"],
    "vm-create-win11-gpu-q35.xml": ["--gpu", "01:00", "--cpus", "6", "--memory", "16G",
                                    "--iso", "/isos/win10.iso", "--virtio-iso", "/isos/virtio-win.iso",
                                    "--disk", "/dev/vg0/win11", "--domain-type", "kvm"],
    "vm-create-i440fx-macvtap.xml": ["--chipset", "i440fx", "--network", "macvtap:enp3s0", "--hugepages",
                                     "--hypervclock", "--cpus", "2", "--domain-type", "kvm", "--os", "win10"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_create_matches_golden_and_validates(case: str, host: FakeHost, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             regenerate_golden: bool) -> None:
    result = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root), *CASES[case])
    assert result.status == 0, result.stderr
    validate(result.stdout, tmp_path)
    check_golden(case, result.stdout, regenerate_golden)


def test_gpu_hostdevs_cover_the_group_and_metadata_records_them(host: FakeHost,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    xml = run_cli(capsys, "vm", "create", "w", "--print-xml", "--root", str(host.root), "--gpu", "01:00.0",
                  "--cpus", "2").stdout
    assert xml.count("<hostdev ") == 2 and 'function="0x1"' in xml
    assert 'vendor="10de" device="1b80" subsystem-vendor="1043" subsystem-device="8591"' in xml
    assert '<vendor_id state="on" value="vfiodesk0000"' in xml


def test_profile_sets_options_and_the_command_line_wins(host: FakeHost, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "win.toml"
    profile.write_text('memory = "4G"\ncpus = 2\nchipset = "i440fx"\nhugepages = true\nos = "win10"\n')
    xml = run_cli(capsys, "vm", "create", "w", "--profile", str(profile), "--cpus", "4", "--print-xml",
                  "--root", str(host.root)).stdout
    assert '<memory unit="KiB">4194304</memory>' in xml and 'machine="pc"' in xml
    assert '<vcpu placement="static">4</vcpu>' in xml and "<hugepages" in xml
    profile.write_text('memory = "4G"\nturbo = true\n')
    bad = run_cli(capsys, "vm", "create", "w", "--profile", str(profile), "--print-xml",
                  "--root", str(host.root))
    assert bad.status == ExitStatus.USAGE and "unknown key 'turbo'" in bad.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu", "09:00"], "no PCI device 0000:09:00"),
    (["--gpu", "02:00.0"], "shares the group but was not named"),
    (["--cpus", "64"], "more than this host can give"),
    (["--memory", "8 gigs"], "'8 gigs' is not a size"),
    (["--iso", "/isos/missing.iso"], "--iso /isos/missing.iso does not exist"),
    (["--disk", "pool-only"], "neither an absolute path nor POOL/VOL"),
    (["--disk", "default/v,size=10G,format=vmdk"], "is not raw or qcow2"),
    (["--network", "macvtap:not an iface"], "is not a network interface name"),
    (["--chipset", "i440fx"], "Windows 11 needs Secure Boot, which OVMF offers on q35 only"),
    (["--os", "win7"], "'win7' is not one of"),
])
def test_bad_input_is_refused(host: FakeHost, capsys: pytest.CaptureFixture[str], args: list[str],
                              message: str) -> None:
    result = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root), *args)
    assert result.status != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_name_and_unreachable_uri(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    assert "not a usable domain name" in run_cli(capsys, "vm", "create", "bad name", "--root",
                                                 str(host.root)).stderr
    result = run_cli(capsys, "vm", "create", "w", "--cpus", "2", "--root", str(host.root),
                     "--connect", "qemu+tcp://127.0.0.1:1/system")
    assert result.status == 1 and "cannot connect to qemu+tcp://127.0.0.1:1/system" in result.stderr


def this_machines_cpus(tree: FakeHost) -> None:
    """Rewrite the tree's CPUs as this machine's, so pins fit the libvirtd that starts the VM."""
    shutil.rmtree(tree.root / "sys/devices/system/cpu")
    topology = read_cpu_topology(HostPaths())
    write_topology(tree.root, [Core(tuple(core)) for core in topology.cores()])


def with_this_machines_firmware(tree: FakeHost) -> None:
    """The tree's OVMF, firmware descriptors and libvirt's varstore folder are this machine's,
    so the varstore vm create writes is the one the real libvirtd boots."""
    for relative in ("usr/share/OVMF", "usr/share/qemu", "var/lib/libvirt/qemu/nvram"):
        Path("/", relative).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tree.root / relative, ignore_errors=True)  # the tree's stand-in firmware
        (tree.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (tree.root / relative).symlink_to(Path("/", relative))


@pytest.mark.libvirt
def test_create_defines_and_starts_in_a_real_libvirtd(host: FakeHost, tmp_path: Path, libvirtd: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The default (Windows 11) VM under TCG: swtpm's TPM 2.0, Secure Boot OVMF, a varstore
    with Microsoft's 2011 and 2023 keys as the firmware maintainers' own tool reads it."""
    this_machines_cpus(host)
    with_this_machines_firmware(host)
    name, pool = f"vfiodesk-test-{uuid.uuid4().hex[:8]}", f"vfiodesk-pool-{uuid.uuid4().hex[:8]}"
    images = qemu_readable_dir()
    virsh = ["virsh", "-c", libvirtd]
    subprocess.run([*virsh, "pool-create-as", pool, "dir", "--target", str(images)], check=True,
                   capture_output=True)
    try:
        result = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                         "--domain-type", "qemu", "--memory", "512M",
                         "--disk", f"{pool}/{name}.qcow2,size=64M,format=qcow2", "--network", "default")
        assert result.status == 0, result.stderr
        xml = subprocess.run([*virsh, "dumpxml", name], capture_output=True, text=True, check=True).stdout
        validate(xml, tmp_path)
        assert "vfiodesk:vm" in xml and 'cache="none"' in xml.replace("'", '"')
        started = subprocess.run([*virsh, "start", name], capture_output=True, text=True, check=False)
        assert started.returncode == 0, started.stderr
        state = subprocess.run([*virsh, "domstate", name], capture_output=True, text=True, check=True)
        assert state.stdout.strip() == "running"
        live = subprocess.run([*virsh, "dumpxml", name], capture_output=True, text=True,
                              check=True).stdout.replace("'", '"')
        assert '<tpm model="tpm-crb">' in live and 'type="emulator" version="2.0"' in live
        assert 'secure="yes"' in live and "OVMF_CODE_4M.ms.fd" in live and '<smm state="on"/>' in live
        nvram = Path(f"/var/lib/libvirt/qemu/nvram/{name}_VARS.fd")
        printed = virt_fw_subjects(nvram)
        for subject in ("Microsoft Corporation KEK CA 2011", "Microsoft Corporation KEK 2K CA 2023",
                        "Microsoft Windows Production PCA 2011", "Windows UEFI CA 2023",
                        "Microsoft UEFI CA 2023", "Microsoft Option ROM UEFI CA 2023"):
            assert f"CN={subject}" in printed
        compact = subprocess.run([str(VIRT_FW_VARS), "-i", str(nvram), "-p"], capture_output=True, text=True,
                                 check=True).stdout
        assert re.search(r"^SecureBootEnable\s*: bool: ON$", compact, re.M), compact
        audited = run_cli(capsys, "vm", "audit", name, "--json", "--root", str(host.root),
                          "--connect", libvirtd)
        found = {f["id"]: f["status"] for f in audited.json()["findings"]}
        assert audited.status == 0 and "fail" not in found.values(), audited.stdout
        assert found["tpm"] == found["secure-boot"] == found["secure-boot-keys"] == found["hyperv"] == "pass"
        again = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                        "--domain-type", "qemu", "--disk", f"{pool}/other.qcow2,size=64M")
        assert again.status == ExitStatus.USAGE and "already exists" in again.stderr
        assert not (images / "other.qcow2").exists()
    finally:
        subprocess.run([*virsh, "destroy", name], capture_output=True, check=False)
        subprocess.run([*virsh, "undefine", name, "--nvram", "--tpm"], capture_output=True, check=False)
        subprocess.run([*virsh, "pool-destroy", pool], capture_output=True, check=False)
        shutil.rmtree(images, ignore_errors=True)


@pytest.mark.libvirt
def test_missing_network_leaves_no_domain_and_no_volume(host: FakeHost, tmp_path: Path, libvirtd: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    name, pool = f"vfiodesk-test-{uuid.uuid4().hex[:8]}", f"vfiodesk-pool-{uuid.uuid4().hex[:8]}"
    images = tmp_path / "images"
    images.mkdir()
    virsh = ["virsh", "-c", libvirtd]
    subprocess.run([*virsh, "pool-create-as", pool, "dir", "--target", str(images)], check=True,
                   capture_output=True)
    try:
        result = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                         "--domain-type", "qemu", "--cpus", "2", "--network", "no-such-net", "--os", "win10",
                         "--disk", f"{pool}/{name}.raw,size=16M")
        assert result.status == 1 and "no libvirt network 'no-such-net'" in result.stderr
        assert list(images.iterdir()) == []
        listed = subprocess.run([*virsh, "list", "--all", "--name"], capture_output=True, text=True,
                                check=True)
        assert name not in listed.stdout
    finally:
        subprocess.run([*virsh, "pool-destroy", pool], capture_output=True, check=False)


@pytest.mark.libvirt
def test_tune_keeps_a_virt_install_domain_and_is_idempotent(host: FakeHost, tmp_path: Path, libvirtd: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    made = subprocess.run(["virt-install", "--connect", libvirtd, "--name", "vt-made", "--memory", "2048",
                           "--vcpus", "4", "--os-variant", "win10", "--import", "--disk", "none",
                           "--virt-type", "qemu", "--print-xml"], capture_output=True, text=True, check=True)
    original = tmp_path / "made.xml"
    original.write_text(made.stdout.replace("</devices>", "<!-- a user's note -->\n</devices>"))
    first = run_cli(capsys, "vm", "tune", "--xml", str(original), "--root", str(host.root))
    assert first.status == 0, first.stderr
    validate(first.stdout, tmp_path)
    for kept in ("libosinfo:os", "qemu-xhci", "spicevmc", "a user's note", "suspend-to-mem"):
        assert kept in first.stdout
    assert "<vcpupin" in first.stdout and "<emulatorpin" in first.stdout
    tuned = tmp_path / "tuned.xml"
    tuned.write_text(first.stdout)
    second = run_cli(capsys, "vm", "tune", "--xml", str(tuned), "--root", str(host.root))
    assert second.stdout == first.stdout
    diff = run_cli(capsys, "vm", "tune", "--xml", str(tuned), "--diff", "--root", str(host.root))
    assert diff.stdout == ""
    cleaned = run_cli(capsys, "vm", "tune", "--xml", str(tuned), "--post-install", "--root", str(host.root))
    validate(cleaned.stdout, tmp_path)
    assert "<console" not in cleaned.stdout and 'type="tablet"' in cleaned.stdout


def test_create_refuses_the_hosts_own_display_unless_forced(host: FakeHost,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = ("vm", "create", "w", "--print-xml", "--cpus", "2", "--root", str(host.root), "--gpu", "00:02.0")
    refused = run_cli(capsys, *args)
    assert refused.status == ExitStatus.REFUSED
    assert "0000:00:02.0 is the host's own display (its boot GPU)" in refused.stderr
    assert "--force" in refused.stderr and refused.stdout == ""
    forced = run_cli(capsys, *args, "--force")
    assert forced.status == 0 and 'address="0000:00:02.0"' in forced.stdout


def test_tune_enrolls_the_2023_keys_in_the_varstore_and_keeps_the_old_one(
        host: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_cli(capsys, "vm", "create", "desk", "--print-xml", "--root", str(host.root), "--cpus", "2")
    domain = tmp_path / "desk.xml"
    domain.write_text(made.stdout)
    nvram = host.root / "var/lib/libvirt/qemu/nvram/desk_VARS.fd"
    nvram.parent.mkdir(parents=True)
    shutil.copy("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", nvram)  # what libvirt copies: 2011 keys only
    tune = ("vm", "tune", "--xml", str(domain), "--root", str(host.root), "--secure-boot-keys", "2023")
    shown = run_cli(capsys, *tune, "--diff")
    assert "would enroll Microsoft's 2023 keys" in shown.stderr and len(list(nvram.parent.iterdir())) == 1
    done = run_cli(capsys, *tune)
    assert done.status == 0 and "the old varstore is" in done.stderr, done.stderr
    backups = [p for p in nvram.parent.iterdir() if p.name.endswith(".bak")]
    template = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
    assert len(backups) == 1 and backups[0].read_bytes() == template.read_bytes()
    assert "CN=Windows UEFI CA 2023" in virt_fw_subjects(nvram)
    again = run_cli(capsys, *tune)
    assert "already; nothing written" in again.stderr and len(list(nvram.parent.iterdir())) == 2


def test_the_balloon_is_off_with_a_passed_gpu_unless_asked(host: FakeHost,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    create = ("vm", "create", "w", "--print-xml", "--root", str(host.root), "--cpus", "2")
    assert '<memballoon model="none"/>' in run_cli(capsys, *create, "--gpu", "01:00").stdout
    assert '<memballoon model="virtio"/>' in run_cli(capsys, *create).stdout
    target = run_cli(capsys, *create, "--gpu", "01:00", "--memory", "8G", "--memory-current", "4G")
    assert "saves no host memory" in target.stderr and '<memballoon model="virtio"/>' in target.stdout
    assert '<memballoon model="virtio"/>' in run_cli(capsys, *create, "--gpu", "01:00", "--balloon").stdout
