"""The host-file editor: atomic writes, backups, journal, undo; failures leave originals untouched."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiodesk.errors import RefusedError, VfiodeskError
from vfiodesk.hostfiles.editor import apply_plan, undo_change
from vfiodesk.hostfiles.journal import read_changes
from vfiodesk.paths import HostPaths
from vfiodesk.plan.hostconfig.change import FileChange, HostPlan

GRUB = "etc/default/grub"
ORIGINAL = b'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
NEW = b'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on"\n'
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, chown)")


def make_root(base: Path, files: dict[str, bytes]) -> HostPaths:
    for relative, data in files.items():
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_bytes(data)
    return HostPaths(base)


def plan_of(*changes: FileChange) -> HostPlan:
    return HostPlan("test", changes, (("update-grub",),), (("update-grub",),))


def leftovers(base: Path) -> list[str]:
    return [str(path) for path in base.rglob("*.vfiodesk")]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB filesystem, to run out of space for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@given(st.one_of(st.none(), st.binary(max_size=300)), st.binary(max_size=300))
@settings(max_examples=60, deadline=None)
def test_apply_then_undo_restores_the_exact_bytes(old: bytes | None, new: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        host = make_root(Path(directory), {} if old is None else {GRUB: old})
        record = apply_plan(host, plan_of(FileChange(GRUB, old, new)))
        if old == new:
            assert record is not None and record.files == ()
        assert host(GRUB).read_bytes() == new
        undo_change(host, None)
        assert (host(GRUB).read_bytes() if host(GRUB).exists() else None) == old
        assert leftovers(Path(directory)) == []


def test_journal_records_file_backup_and_checksum(tmp_path: Path) -> None:
    host = make_root(tmp_path, {GRUB: ORIGINAL})
    record = apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    assert record is not None and record.id == "0001-test"
    [entry] = record.files
    assert entry.path == GRUB
    assert (tmp_path / "var/lib/vfiodesk/changes/0001-test" / str(entry.backup)).read_bytes() == ORIGINAL
    assert read_changes(host) == [record]
    assert record.undo_commands == (("update-grub",),)


@as_root
def test_mode_and_owner_are_kept(tmp_path: Path) -> None:
    host = make_root(tmp_path, {GRUB: ORIGINAL})
    os.chmod(host(GRUB), 0o640)
    os.chown(host(GRUB), 1234, 4321)
    apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    info = os.stat(host(GRUB))
    assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (0o640, 1234, 4321)


def test_read_only_file_is_refused_and_untouched(tmp_path: Path) -> None:
    host = make_root(tmp_path, {GRUB: ORIGINAL})
    os.chmod(host(GRUB), 0o444)
    with pytest.raises(VfiodeskError, match="read-only") as error:
        apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    assert "chmod u+w" in error.value.hint
    assert host(GRUB).read_bytes() == ORIGINAL
    assert read_changes(host) == []


def test_symlink_is_refused(tmp_path: Path) -> None:
    host = make_root(tmp_path, {"etc/default/grub.real": ORIGINAL})
    os.symlink("grub.real", host(GRUB))
    with pytest.raises(VfiodeskError, match="symbolic link"):
        apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    assert host("etc/default/grub.real").read_bytes() == ORIGINAL


def test_file_changed_since_planning_is_not_overwritten(tmp_path: Path) -> None:
    host = make_root(tmp_path, {GRUB: b"edited meanwhile\n"})
    with pytest.raises(VfiodeskError, match="changed while vfiodesk was planning"):
        apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    assert host(GRUB).read_bytes() == b"edited meanwhile\n"


def test_full_disk_mid_write_leaves_the_original(tiny_tmpfs: Path) -> None:
    host = make_root(tiny_tmpfs, {GRUB: ORIGINAL})
    huge = NEW + b"#" * 200_000
    with pytest.raises(VfiodeskError, match="No space left") as error:
        apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, huge)))
    assert "full" in error.value.hint
    assert host(GRUB).read_bytes() == ORIGINAL
    assert leftovers(tiny_tmpfs) == []
    assert read_changes(host) == []


def test_failure_on_the_second_file_puts_the_first_back(tiny_tmpfs: Path) -> None:
    other = "etc/modprobe.d/vfiodesk-vfio.conf"
    host = make_root(tiny_tmpfs, {GRUB: ORIGINAL})
    with pytest.raises(VfiodeskError, match="No space left"):
        apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW), FileChange(other, None, b"x" * 200_000)))
    assert host(GRUB).read_bytes() == ORIGINAL
    assert not host(other).exists()
    assert leftovers(tiny_tmpfs) == []
    assert read_changes(host) == []


def test_read_only_filesystem_is_a_clear_error(tiny_tmpfs: Path) -> None:
    host = make_root(tiny_tmpfs, {GRUB: ORIGINAL})
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(VfiodeskError) as error:
        apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    assert "read-only" in error.value.message + error.value.hint
    assert host(GRUB).read_bytes() == ORIGINAL


def test_undo_refuses_when_the_file_changed_since_and_restores_nothing(tmp_path: Path) -> None:
    other = "etc/kernel/cmdline"
    host = make_root(tmp_path, {GRUB: ORIGINAL, other: b"root=/dev/sda1\n"})
    apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW),
                             FileChange(other, b"root=/dev/sda1\n", b"root=/dev/sda1 iommu=pt\n")))
    host(GRUB).write_bytes(NEW + b"# the user's own edit\n")
    with pytest.raises(RefusedError, match="/etc/default/grub changed since vfiodesk wrote it") as error:
        undo_change(host, "1")
    assert "Nothing was restored" in error.value.message
    assert host(other).read_bytes() == b"root=/dev/sda1 iommu=pt\n"
    assert not read_changes(host)[0].undone


def test_undo_removes_files_vfiodesk_created_and_cannot_run_twice(tmp_path: Path) -> None:
    created = "etc/sysctl.d/60-vfiodesk-hugepages.conf"
    host = make_root(tmp_path, {})
    apply_plan(host, plan_of(FileChange(created, None, b"vm.nr_hugepages = 4096\n")))
    record = undo_change(host, "0001-test")
    assert record.undone and not host(created).exists()
    with pytest.raises(RefusedError, match="already undone"):
        undo_change(host, "0001-test")
    with pytest.raises(VfiodeskError, match="no vfiodesk change to undo"):
        undo_change(host, None)
