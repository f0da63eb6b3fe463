"""virt-install's disk spelling (path=FILE,size=N,format=F), relative ISO paths, and disks on file
systems without direct I/O in vm create."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_pinning import intel_4c8t, write_topology
from tests.test_vm import qemu_readable_dir
from vfiodesk.errors import ExitStatus, InputError
from vfiodesk.host.system import read_direct_io_support
from vfiodesk.model.sizes import GIB
from vfiodesk.plan.vm import DiskSpec, parse_disk


def test_parse_virt_install_disk() -> None:
    assert parse_disk("path=/var/lib/libvirt/images/w.qcow2,size=80,format=qcow2") == DiskSpec(
        path="/var/lib/libvirt/images/w.qcow2", size=80 * GIB, format="qcow2", new=True)
    # Without size= it names an existing file, as a bare path does.
    assert parse_disk("path=/dev/vg0/win10") == DiskSpec(path="/dev/vg0/win10")
    for bad in ("path=w.qcow2,size=80", "path=/images/,size=80", "path=/w.img,size=80,bus=virtio",
                "path=/w.img,size=-1"):
        with pytest.raises(InputError):
            parse_disk(bad)


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, intel_4c8t())
    return tree


@pytest.mark.libvirt
def test_path_disk_defines_a_dir_pool_once_and_rolls_back(host: FakeHost, libvirtd: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    images = qemu_readable_dir()  # a unique directory: its pool gets its unique name
    pool = images.name
    virsh = ["virsh", "-c", libvirtd]
    names = [f"vfiodesk-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    common = ["--root", str(host.root), "--connect", libvirtd, "--domain-type", "qemu", "--memory", "256M",
              "--network", "", "--os", "win10"]
    try:
        first = run_cli(capsys, "vm", "create", names[0], *common,
                        "--disk", f"path={images}/a.qcow2,size=0.0625,format=qcow2")
        assert first.status == 0, first.stderr
        info = subprocess.run([*virsh, "pool-dumpxml", pool], capture_output=True, text=True, check=True)
        assert f"<path>{images}</path>" in info.stdout
        autostart = subprocess.run([*virsh, "pool-info", pool], capture_output=True, text=True, check=True)
        assert "Autostart:      yes" in autostart.stdout
        assert (images / "a.qcow2").read_bytes()[:4] == b"QFI\xfb"  # a qcow2 image
        xml = subprocess.run([*virsh, "dumpxml", names[0]], capture_output=True, text=True, check=True)
        assert f"{images}/a.qcow2" in xml.stdout
        # A second disk in the same directory goes through the same pool.
        pools_before = subprocess.run([*virsh, "pool-list", "--all", "--name"], capture_output=True,
                                      text=True, check=True).stdout
        failed = run_cli(capsys, "vm", "create", names[1], *common, "--network", "no-such-net-x",
                         "--disk", f"path={images}/b.qcow2,size=64M,format=qcow2")
        assert failed.status == ExitStatus.ERROR and "no-such-net-x" in failed.stderr
        assert not (images / "b.qcow2").exists()  # rolled back
        pools_after = subprocess.run([*virsh, "pool-list", "--all", "--name"], capture_output=True,
                                     text=True, check=True).stdout
        assert pools_after == pools_before
    finally:
        for name in names:
            subprocess.run([*virsh, "undefine", name, "--nvram"], capture_output=True, check=False)
        subprocess.run([*virsh, "pool-destroy", pool], capture_output=True, check=False)
        subprocess.run([*virsh, "pool-undefine", pool], capture_output=True, check=False)
        shutil.rmtree(images, ignore_errors=True)


@pytest.mark.libvirt
def test_a_new_directory_gets_a_pool_that_a_failure_takes_back(host: FakeHost, libvirtd: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    parent = qemu_readable_dir()
    images = parent / f"new-{uuid.uuid4().hex[:8]}"
    virsh = ["virsh", "-c", libvirtd]
    try:
        failed = run_cli(capsys, "vm", "create", f"vfiodesk-test-{uuid.uuid4().hex[:8]}", "--root",
                         str(host.root), "--connect", libvirtd, "--domain-type", "qemu",
                         "--network", "no-such-net-y", "--disk", f"path={images}/w.qcow2,size=64M",
                         "--os", "win10")
        assert failed.status == ExitStatus.ERROR
        pools = subprocess.run([*virsh, "pool-list", "--all", "--name"], capture_output=True, text=True,
                               check=True).stdout.split()
        assert images.name not in pools
    finally:
        subprocess.run([*virsh, "pool-destroy", images.name], capture_output=True, check=False)
        subprocess.run([*virsh, "pool-undefine", images.name], capture_output=True, check=False)
        shutil.rmtree(parent, ignore_errors=True)


def test_relative_isos_resolve_against_the_current_directory(tmp_path: Path, host: FakeHost,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "downloads"
    work.mkdir()
    (work / "Win10.iso").write_text("iso")
    (work / "virtio-win.iso").write_text("iso")
    monkeypatch.chdir(work)
    result = run_cli(capsys, "vm", "create", "win10", "--iso", "Win10.iso", "--virtio-iso", "virtio-win.iso",
                     "--print-xml", "--domain-type", "qemu")
    assert result.status == 0, result.stderr
    assert f"{work}/Win10.iso" in result.stdout and f"{work}/virtio-win.iso" in result.stdout
    missing = run_cli(capsys, "vm", "create", "win10", "--iso", "nope.iso", "--print-xml")
    assert missing.status == ExitStatus.USAGE and f"{work}/nope.iso does not exist" in missing.stderr


@contextlib.contextmanager
def ramfs_at(mount: Path) -> Iterator[Path]:
    """A real file system that refuses O_DIRECT in every kernel (tmpfs takes it from 6.6 on),
    mounted on the new directory ``mount`` (as root: the suite's libvirtd and lab need it too)."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_direct_io_probe_on_real_file_systems(tmp_path: Path) -> None:
    with ramfs_at(tmp_path / "ramfs") as ramfs:
        (ramfs / "w.raw").write_bytes(bytes(4096))
        assert read_direct_io_support(str(ramfs / "w.raw")) is False
    # The checkout's own file system (the disk the project lives on) takes O_DIRECT.
    assert read_direct_io_support(__file__) is True
    assert read_direct_io_support(str(tmp_path / "missing.raw")) is None
    # Not regular files: ext4 refuses O_DIRECT on them too, which says nothing of a disk there.
    os.mkfifo(tmp_path / "fifo")
    assert read_direct_io_support(str(tmp_path / "fifo")) is None
    assert read_direct_io_support(str(tmp_path)) is None


@pytest.mark.libvirt
def test_a_disk_on_a_file_system_without_direct_io_is_refused_before_anything_is_defined(
        tmp_path: Path, libvirtd: str, capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path / "host")
    write_topology(host.root, intel_4c8t())
    name = f"vfiodesk-test-{uuid.uuid4().hex[:8]}"
    with ramfs_at(host.root / "images") as images:
        try:
            (images / "w.raw").write_bytes(bytes(1 << 20))
            result = run_cli(capsys, "vm", "create", name, "--root", str(host.root), "--connect", libvirtd,
                             "--domain-type", "qemu", "--memory", "256M", "--network", "", "--os", "win10",
                             "--disk", "/images/w.raw")
            assert result.status == ExitStatus.USAGE, result.stderr
            assert "disk /images/w.raw is on a file system without direct I/O (O_DIRECT)" in result.stderr
            assert "hint: put the disk on ext4, xfs or btrfs" in result.stderr
            listed = subprocess.run(["virsh", "-c", libvirtd, "list", "--all", "--name"],
                                    capture_output=True, text=True, check=True).stdout.split()
            assert name not in listed and (images / "w.raw").stat().st_size == 1 << 20
        finally:
            subprocess.run(["virsh", "-c", libvirtd, "undefine", name], capture_output=True, check=False)
