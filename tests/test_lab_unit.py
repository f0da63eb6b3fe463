"""The lab's command building and kernel discovery, without booting."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import run_cli
from vfiodesk.errors import InputError, VfiodeskError
from vfiodesk.lab.boot import LAB_CACHE_ENV, LabSpec, build_vng_argv, with_lab_cache
from vfiodesk.lab.demo import in_the_lab, load_steps
from vfiodesk.lab.firmware import find_uefi_firmware
from vfiodesk.lab.kernel import check_lab_kernel, find_lab_kernel
from vfiodesk.lab.steps.common import copy_newer_probes, no_network_autostart
from vfiodesk.lab.virtiofs import daemon_argv, mount_points_under
from vfiodesk.paths import HostPaths


def make_kernel(boot: Path, modules: Path, release: str, *, vfio: bool) -> Path:
    image = boot / f"vmlinuz-{release}"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"kernel")
    (modules / release).mkdir(parents=True)
    dep = "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n" if vfio else ""
    (modules / release / "modules.dep").write_text(dep + "kernel/fs/ext4/ext4.ko:\n")
    return image


def test_newest_kernel_with_vfio_pci_is_chosen(tmp_path: Path) -> None:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    make_kernel(boot, modules, "6.1.0-9-amd64", vfio=True)
    wanted = make_kernel(boot, modules, "6.1.0-56-amd64", vfio=True)
    make_kernel(boot, modules, "6.12.0-1-custom", vfio=False)
    assert find_lab_kernel(boot, modules) == wanted


def test_no_kernel_with_vfio_is_a_clear_error(tmp_path: Path) -> None:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    image = make_kernel(boot, modules, "6.12.0-1-custom", vfio=False)
    with pytest.raises(VfiodeskError, match="has vfio-pci among its modules"):
        find_lab_kernel(boot, modules)
    with pytest.raises(VfiodeskError, match="no vfio-pci module"):
        check_lab_kernel(image, modules)
    with pytest.raises(VfiodeskError, match="no kernel image"):
        find_lab_kernel(tmp_path / "empty", modules)


def test_argv_has_the_iommu_the_layout_and_never_kvm_by_default(tmp_path: Path) -> None:
    argv = build_vng_argv(LabSpec(iommu="amd", cmdline="iommu=pt", qemu_args="-device foo,bar=1"),
                          Path("/boot/vmlinuz-x"), tmp_path / "guest.sh")
    assert "--disable-kvm" in argv
    qemu = next(arg for arg in argv if arg.startswith("--qemu-opts="))
    assert "amd-iommu,intremap=on" in qemu and "VGA,bus=rp1,addr=0.0,multifunction=on" in qemu
    assert qemu.endswith("-device foo,bar=1")
    assert argv[argv.index("--append") + 1] == "iommu=pt"
    bare = build_vng_argv(LabSpec(bare=True), Path("/k"), tmp_path / "g.sh")
    bare_qemu = next(arg for arg in bare if arg.startswith("--qemu-opts="))
    assert "VGA" not in bare_qemu and "intel-iommu" in bare_qemu
    assert bare[bare.index("--append") + 1] == "intel_iommu=on"


@pytest.mark.parametrize(("spec", "message"), [
    (LabSpec(iommu="via"), "unknown IOMMU"),  # type: ignore[arg-type]
    (LabSpec(qemu_args="-device 'unclosed"), "cannot be split"),
    (LabSpec(memory="12 bananas"), "is not a size"),
    (LabSpec(memory="64M"), "too small"),
    (LabSpec(cpus=0), "out of range"),
])
def test_bad_lab_specs_are_refused(spec: LabSpec, message: str) -> None:
    with pytest.raises(InputError, match=message):
        spec.validate()


def test_cli_refuses_an_unknown_iommu(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "lab", "run", "--iommu", "via", "--", "true")
    assert result.status == 2 and "'via' is not one of 'intel', 'amd'" in result.stderr


def test_cli_refuses_a_kernel_without_vfio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "lab", "run", "--kernel", str(tmp_path / "vmlinuz-nope"), "--", "true")
    assert result.status == 1 and "does not exist" in result.stderr


def test_lab_setup_dry_run_prints_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=ubuntu\nID_LIKE=debian\n")
    result = run_cli(capsys, "lab", "setup", "--root", str(tmp_path))
    assert "would run: apt-get update" in result.stdout
    assert "linux-image-generic" in result.stdout and result.status == 0
    (tmp_path / "etc/os-release").write_text("ID=fedora\n")
    refused = run_cli(capsys, "lab", "setup", "--root", str(tmp_path))
    assert refused.status == 1 and "knows Debian and Ubuntu" in refused.stderr


def test_kvm_is_opt_in_and_only_built_here(tmp_path: Path) -> None:
    # Never booted: KVM crashed CI machines; the argv is all this checks.
    argv = build_vng_argv(LabSpec(accel="kvm"), Path("/k"), tmp_path / "g.sh")
    assert "--disable-kvm" not in argv
    with pytest.raises(InputError, match="unknown accelerator"):
        LabSpec(accel="hvf").validate()


def test_missing_qemu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no qemu-system-x86_64 anywhere
    result = run_cli(capsys, "lab", "run", "--", "true")
    assert result.status == 1
    assert "qemu-system-x86_64 is not installed" in result.stderr
    assert "vfiodesk lab setup" in result.stderr


def test_demo_steps_tell_the_story_in_order_and_stay_out_of_real_hosts(tmp_path: Path) -> None:
    names = [item.name for item in load_steps()]
    assert names[:2] == ["doctor", "devices"] and len(names) == len(set(names))
    # A desktop's boot first (efifb, then the GPU's driver), then the everyday binding.
    story = ["efifb", "efifb-bind", "efifb-unbind", "gpu-driver", "display-server", "bind", "unbind",
             "module-reload", "vm-create"]
    assert [name for name in names if name in story] == story
    single_gpu = ["single-gpu-create", "single-gpu-start", "single-gpu-stop", "single-gpu-qemu-fails",
                  "single-gpu-prepare-fails", "single-gpu-holder",  # one VM start; failures fail early
                  "single-gpu-daemon-killed", "single-gpu-restore"]  # last: they kill libvirtd
    assert [name for name in names if name.startswith("single-gpu-")] == single_gpu
    assert names.index("vm-stop") < names.index("single-gpu-create")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on\n")
    assert not in_the_lab(cmdline)
    cmdline.write_text("virtme_hostname=virtme-ng console=ttyS0 intel_iommu=on\n")
    assert in_the_lab(cmdline)
    refused = subprocess.run([sys.executable, "-m", "vfiodesk.lab.demo", "--inside"],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "only inside the lab" in refused.stderr


SHARE, ETC = "usr/share/qemu/firmware", "etc/qemu/firmware"


def write_descriptor(root: Path, folder: str, name: str, *, features: list[str], code: str,
                     template: str | None, machines: tuple[str, ...] = ("pc-q35-*",)) -> None:
    """A QEMU firmware descriptor (docs/interop/firmware.json), shaped like Debian's; ``code``
    and ``template`` are paths as the host under ``root`` sees them."""
    mapping: dict[str, object] = (
        {"device": "memory", "filename": code} if template is None else
        {"device": "flash", "executable": {"filename": code, "format": "raw"},
         "nvram-template": {"filename": template, "format": "raw"}})
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / name).write_text(json.dumps({
        "description": name, "interface-types": ["uefi"], "mapping": mapping,
        "targets": [{"architecture": "x86_64", "machines": list(machines)}], "features": features}))


def test_uefi_firmware_is_the_plain_build_from_the_descriptors(tmp_path: Path) -> None:
    code, template, secure = (f"/usr/share/OVMF/{name}" for name in ("CODE,4M.fd", "VARS.fd", "SECURE.fd"))
    for image in (code, template, secure):
        (tmp_path / image.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / image.lstrip("/")).write_bytes(b"fd")
    write_descriptor(tmp_path, SHARE, "40-secure.json", features=["secure-boot", "requires-smm"],
                     code=secure, template=template)
    write_descriptor(tmp_path, SHARE, "50-i440fx-only.json", features=[], code=secure, template=template,
                     machines=("pc-i440fx-*",))
    write_descriptor(tmp_path, SHARE, "60-plain.json", features=["acpi-s3"], code=code, template=template)
    (tmp_path / SHARE / "10-broken.json").write_text("{not json")
    firmware = find_uefi_firmware(HostPaths(tmp_path))
    assert (firmware.code, firmware.vars_template) == (tmp_path / code[1:], tmp_path / template[1:])
    # Code read-only; the varstore a snapshot (never written back); QEMU's commas doubled.
    assert firmware.qemu_args() == (
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={tmp_path}/usr/share/OVMF/CODE,,4M.fd",
        "-drive", f"if=pflash,format=raw,unit=1,snapshot=on,file={tmp_path}{template}")
    # /etc overrides a descriptor of the same name; a one-image build is mapped with -bios.
    write_descriptor(tmp_path, ETC, "60-plain.json", features=[], code=secure, template=None)
    assert find_uefi_firmware(HostPaths(tmp_path)).qemu_args() == ("-bios", f"{tmp_path}{secure}")


def test_missing_uefi_firmware_is_a_clear_error(tmp_path: Path) -> None:
    write_descriptor(tmp_path, SHARE, "60-gone.json", features=[], code="/gone.fd", template="/gone-vars.fd")
    with pytest.raises(VfiodeskError, match="no UEFI firmware") as caught:
        find_uefi_firmware(HostPaths(tmp_path))
    assert f"skipped /{SHARE}/60-gone.json: /gone.fd does not exist" in caught.value.message
    assert caught.value.hint is not None and "apt-get install ovmf" in caught.value.hint
    with pytest.raises(InputError, match="unknown firmware"):
        LabSpec(firmware="coreboot").validate()  # type: ignore[arg-type]


def test_uefi_boot_puts_ovmf_in_the_qemu_arguments(tmp_path: Path) -> None:
    uefi = build_vng_argv(LabSpec(firmware="uefi", qemu_args="-device foo"), Path("/k"), tmp_path / "g")
    qemu = next(arg for arg in uefi if arg.startswith("--qemu-opts="))
    assert "if=pflash" in qemu and "snapshot=on" in qemu and qemu.endswith("-device foo")
    bios = build_vng_argv(LabSpec(firmware="bios"), Path("/k"), tmp_path / "g")
    assert not any("pflash" in arg or "-bios" in arg for arg in bios)


def test_lab_run_boots_bios_and_the_demo_uefi_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    for command, default in (("run", "bios"), ("demo", "uefi")):
        shown = run_cli(capsys, "lab", command, "--help")
        assert f"[default: {default}]" in " ".join(shown.stdout.split()), shown.stdout


def test_the_lab_cache_is_writable_in_the_guest_and_named_there(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "vfiodesk" / "lab"
    spec = with_lab_cache(LabSpec(env={"A": "1"}), cache)
    assert cache.is_dir() and spec.env == {LAB_CACHE_ENV: str(cache), "A": "1"}
    kernel = tmp_path / "vmlinuz"
    assert f"--rwdir={cache}" in build_vng_argv(spec, kernel, tmp_path / "guest.sh")


def test_libvirt_probes_cross_boots_newest_wins_whole(tmp_path: Path) -> None:
    host, guest = tmp_path / "host", tmp_path / "guest"
    host.mkdir()
    (host / "a.xml").write_text("host a")
    (host / "notes.txt").write_text("not libvirt's")
    copy_newer_probes(str(host), str(guest))
    assert sorted(p.name for p in guest.iterdir()) == ["a.xml"]
    assert (guest / "a.xml").read_text() == "host a"
    # libvirt probed again in the guest (the copy was stale): the newer probe goes back.
    (guest / "a.xml").write_text("guest a")
    os.utime(guest / "a.xml", (time.time() + 10, time.time() + 10))
    (host / "b.xml").write_text("host b")
    copy_newer_probes(str(guest), str(host))
    copy_newer_probes(str(host), str(guest))
    assert (host / "a.xml").read_text() == "guest a" and (guest / "b.xml").read_text() == "host b"
    assert not [p for p in (*host.iterdir(), *guest.iterdir()) if p.name.endswith(".partial")]
    copy_newer_probes(None, str(guest))  # no cache named: nothing to do
    copy_newer_probes(str(tmp_path / "missing"), str(guest))


def test_mount_points_under_a_view_are_found_with_the_kernels_escapes() -> None:
    mountinfo = ("22 1 0:21 / / rw - ext4 /dev/vda rw\n"
                 "40 22 0:5 / /tmp/view rw - ext4 /dev/vda rw\n"
                 "41 40 0:6 / /tmp/view/proc rw - proc proc rw\n"
                 "42 40 0:7 / /tmp/view/my\\040disk rw - ext4 /dev/vdb rw\n"
                 "43 22 0:8 / /tmp/viewer rw - tmpfs tmpfs rw\n")
    assert mount_points_under(mountinfo, "/tmp/view") == [
        "/tmp/view", "/tmp/view/proc", "/tmp/view/my disk"]


def test_virtme_ngs_options_become_the_c_daemons() -> None:
    argv = daemon_argv(Path("/usr/lib/qemu/virtiofsd"), "/tmp/s", "/tmp/view", "never")
    assert argv == ["/usr/lib/qemu/virtiofsd", "--socket-path=/tmp/s", "-o", "source=/tmp/view",
                    "-o", "cache=none", "-o", "sandbox=chroot"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root")
def test_the_read_only_view_cannot_be_written_and_stays_in_its_namespace(tmp_path: Path) -> None:
    """The view the guest's root is served from: every mount in it read-only (tmp_path's too),
    and nothing of it is seen from this namespace."""
    child = ("import os, sys\n"
             "from vfiodesk.lab.virtiofs import enter_read_only_view\n"
             "view = enter_read_only_view('/')\n"
             "target = view + sys.argv[1] + '/written'\n"
             "try:\n    open(target, 'x')\nexcept OSError as exc:\n    print(exc.errno)\n"
             "else:\n    print('wrote', target)\n")
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True,
                          text=True, check=False)
    assert done.stdout.strip() == str(errno.EROFS), done.stdout + done.stderr
    assert not (tmp_path / "written").exists()
    assert "vfiodesk-lab-root" not in Path("/proc/self/mountinfo").read_text()


def test_the_guests_libvirtd_autostarts_no_network(tmp_path: Path) -> None:
    autostart = tmp_path / "autostart"
    autostart.mkdir()
    (autostart / "default.xml").symlink_to(tmp_path / "default.xml")
    (tmp_path / "default.xml").write_text("<network/>")
    no_network_autostart(str(autostart))
    no_network_autostart(str(tmp_path / "missing"))
    assert list(autostart.iterdir()) == [] and (tmp_path / "default.xml").exists()
