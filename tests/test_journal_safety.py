"""Journals are input too: `host undo`, `restore` and the hook's release act only on paths inside
their root and names the kernel could have given; anything else is a clear error, nothing
written, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_hook import runnable
from tests.test_hostfiles import GRUB, NEW, ORIGINAL, make_root, plan_of
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.hostfiles.editor import apply_plan
from vfiodesk.plan.hostconfig.change import FileChange

CHANGE = "var/lib/vfiodesk/changes/0001-test/change.json"


def listing(top: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(top.rglob("*")):
        key = str(path.relative_to(top))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
    return found


@pytest.fixture
def applied(tmp_path: Path) -> Path:
    """A root with one applied change to /etc/default/grub, and a victim beside the root."""
    root = tmp_path / "root"
    host = make_root(root, {GRUB: ORIGINAL})
    apply_plan(host, plan_of(FileChange(GRUB, ORIGINAL, NEW)))
    (tmp_path / "victim").write_bytes(NEW)  # same bytes as vfiodesk wrote, so undo would match
    return root


def tamper(root: Path, edit: Any) -> None:
    path = root / CHANGE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["files"][0].update(path="../victim"), "not a path inside the root"),
    (lambda r: r["files"][0].update(path="/etc/passwd"), "not a path inside the root"),
    (lambda r: r["files"][0].update(backup="../../../../victim"), "not a backup file name"),
    (lambda r: r["files"][0].update(path=["etc"]), "is damaged"),
    (lambda r: r.update(undo_commands=["rm -rf /"]), "is damaged"),
    (lambda r: r.update(undo_commands=[[]]), "is not a list of arguments"),
    (lambda r: r.update(id="0002-other"), "is not its directory's name"),
    (lambda r: r.update(undone="no"), "undone must be true or false"),
    (lambda r: r.pop("files"), "is damaged"),
])
def test_host_undo_refuses_a_tampered_journal(applied: Path, edit: Any, message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    tamper(applied, edit)
    before = listing(applied.parent)
    result = run_cli(capsys, "host", "undo", "--root", str(applied))
    assert result.status == 1 and message in result.stderr, result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert listing(applied.parent) == before


@pytest.mark.parametrize("content", [b"", b"\xff\xfe{", b"[1, 2]", b"{", b'{"id": 1}', b"null"])
def test_host_undo_on_malformed_json_is_a_clear_error(applied: Path, content: bytes,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (applied / CHANGE).write_bytes(content)
    result = run_cli(capsys, "host", "undo", "--root", str(applied))
    assert result.status == 1 and "is damaged" in result.stderr and "Traceback" not in result.stderr


def test_host_undo_never_writes_through_a_directory_link_out_of_the_root(
        applied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = applied.parent / "outside"
    (outside / "default").mkdir(parents=True)
    (outside / "default/grub").write_bytes(NEW)
    os.rename(applied / "etc", applied.parent / "moved-etc")
    (applied / "etc").symlink_to(outside)
    before = listing(applied.parent)
    result = run_cli(capsys, "host", "undo", "--root", str(applied))
    assert result.status == 1 and "a link out of the root" in result.stderr
    assert listing(applied.parent) == before


def test_host_undo_refuses_a_backup_that_is_a_link_or_a_fifo(applied: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    backup = applied / "var/lib/vfiodesk/changes/0001-test/0.orig"
    backup.unlink()
    backup.symlink_to("/etc/shadow")
    result = run_cli(capsys, "host", "undo", "--root", str(applied))
    assert result.status == 1 and "is unusable (cannot read it: it is a symbolic link)" in result.stderr
    assert (applied / GRUB).read_bytes() == NEW
    backup.unlink()
    os.mkfifo(backup)
    result = run_cli(capsys, "host", "undo", "--root", str(applied))  # must not block
    assert result.status == 1 and "it is not a regular file" in result.stderr


def test_a_planted_lock_link_is_not_followed(applied: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = applied.parent / "victim"
    (applied / "var/lib/vfiodesk/changes/.lock").unlink()
    (applied / "var/lib/vfiodesk/changes/.lock").symlink_to(victim)
    result = run_cli(capsys, "host", "undo", "--root", str(applied))
    assert result.status == 1 and "cannot write" in result.stderr
    assert victim.read_bytes() == NEW


@pytest.fixture
def bound(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    tree.file("sys/bus/pci/drivers/vfio-pci/.keep")
    tree.file("run/vfiodesk/lock")  # taking the lock is not a change
    write_topology(tree.root, intel_4c8t())
    return tree


GOOD_RECORD = {"address": "0000:01:00.0", "original_driver": "nouveau", "original_override": None,
               "owner": "cli", "consoles": [], "nvidia_unloaded": False, "framebuffers": []}


@pytest.mark.parametrize(("change", "message"), [
    ({"consoles": ["../../../../../tmp/x"]}, "is not a vtcon name"),
    ({"consoles": "vtcon0"}, "is not a vtcon name"),
    ({"framebuffers": ["../../../devices/x/efi-framebuffer.0"]}, "is not DRIVER/DEVICE"),
    ({"framebuffers": ["efi-framebuffer/../../x"]}, "is not DRIVER/DEVICE"),
    ({"original_driver": "../../../../tmp"}, "is not a driver name"),
    ({"original_override": ".."}, "is not a driver name"),
    ({"owner": 5}, "is not a VM name"),
    ({"address": "0000:02:00.0"}, "names '0000:02:00.0'"),
])
def test_restore_refuses_names_that_are_not_the_kernels(bound: FakeHost, change: dict[str, Any],
                                                        message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bound.file("run/vfiodesk/devices/0000:01:00.0.json", json.dumps({**GOOD_RECORD, **change}))
    before = listing(bound.root.parent)
    result = run_cli(capsys, "restore", "--all", "--root", str(bound.root))
    assert result.status == 1 and "is damaged" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert listing(bound.root.parent) == before


@pytest.mark.parametrize("content", [b"[]", b"\xff", b"", b'"text"', b"{}"])
def test_restore_on_a_malformed_entry_is_a_clear_error(bound: FakeHost, content: bytes,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bound.file("run/vfiodesk/devices/0000:01:00.0.json", content)
    result = run_cli(capsys, "restore", "--all", "--root", str(bound.root))
    assert result.status == 1 and "is damaged" in result.stderr and "Traceback" not in result.stderr


def test_hook_release_never_writes_where_a_tampered_state_file_points(
        bound: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "hook", "install", "--root", str(bound.root)).status == 0
    script = runnable(bound.root)
    created = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(bound.root),
                      "--gpu", "01:00", "--cpus", "2", "--binding", "vfiodesk")
    assert created.status == 0, created.stderr
    xml = created.stdout
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = {"hugepages": {"path": str(victim), "before": 0}, "isolated": "0-3"}
    bound.file("run/vfiodesk/vm-win10.json", json.dumps(state))
    done = subprocess.run([str(script), "win10", "release", "end", "-"], input=xml, text=True,
                          capture_output=True, env={**os.environ, "VFIODESK_ROOT": str(bound.root)},
                          check=False)
    assert done.returncode == 0 and "state file" in done.stderr and "is damaged" in done.stderr
    assert victim.read_text() == "precious\n"
