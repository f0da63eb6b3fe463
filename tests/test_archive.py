"""Snapshot archives as --root: hostile archives are refused before anything is written, on this
interpreter (3.11.7, whose tarfile "data" filter the symlink chain below gets through)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import ready_host
from vfiodesk.errors import ExitStatus
from vfiodesk.host import archive as A

Build = Callable[[tarfile.TarFile], None]


def add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"",
        link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def path_max_chain(tar: tarfile.TarFile) -> None:
    """CVE-2025-4517: links to directories with 247-character names until the resolved path
    is beyond PATH_MAX, where os.path.realpath stops resolving (so the filter is satisfied),
    then a link of '../' * 16 and a file written through it."""
    component, steps, path = "d" * 247, "abcdefghijklmnop", ""
    for step in steps:
        add(tar, os.path.join(path, component), tarfile.DIRTYPE)
        add(tar, os.path.join(path, step), tarfile.SYMTYPE, link=component)
        path = os.path.join(path, component)
    chain = os.path.join(*steps, "l" * 254)
    add(tar, chain, tarfile.SYMTYPE, link="../" * len(steps))
    add(tar, "escape", tarfile.SYMTYPE, link=chain + "/../")
    add(tar, "escape/pwned", data=b"owned\n")


def dot_link_chain(tar: tarfile.TarFile) -> None:
    """Each link stays inside when read alone; '..' after links climbs out."""
    add(tar, "sys/here", tarfile.SYMTYPE, link=".")
    add(tar, "sys/up", tarfile.SYMTYPE, link="here/here/here/../../..")


def write_through_link(tar: tarfile.TarFile) -> None:
    add(tar, "etc", tarfile.SYMTYPE, link="sys")
    add(tar, "sys/x", data=b"1\n")
    add(tar, "etc/passwd", data=b"root::0:0::/:/bin/sh\n")


ESCAPES: dict[str, tuple[Build, str]] = {
    "symlink chain beyond PATH_MAX": (path_max_chain, "which is not a directory"),
    "'..' after links": (dot_link_chain, "leads out of the tree"),
    "file written through a link": (write_through_link, "which is not a directory"),
    "absolute name": (lambda t: add(t, "/tmp/vfiodesk-pwned", data=b"x"), "absolute name"),
    "'..' in a name": (lambda t: add(t, "sys/../../pwned", data=b"x"), "'..' in its name"),
    "link to an absolute path": (lambda t: add(t, "sys/l", tarfile.SYMTYPE, link="/etc"), "absolute path"),
    "link climbing out": (lambda t: add(t, "sys/l", tarfile.SYMTYPE, link="../../x"), "out of the tree"),
    "hard link out": (lambda t: add(t, "sys/h", tarfile.LNKTYPE, link="/etc/passwd"), "absolute name"),
    "hard link to nothing earlier": (lambda t: add(t, "sys/h", tarfile.LNKTYPE, link="etc/shadow"),
                                     "not a file earlier"),
    "character device": (lambda t: add(t, "dev/mem", tarfile.CHRTYPE), "character device"),
    "block device": (lambda t: add(t, "dev/sda", tarfile.BLKTYPE), "block device"),
    "FIFO": (lambda t: add(t, "proc/cmdline", tarfile.FIFOTYPE), "FIFO"),
    "link loop": (lambda t: (add(t, "a", tarfile.SYMTYPE, link="b"), add(t, "b", tarfile.SYMTYPE, link="a")),
                  "chain of more than 40 links"),
    "duplicate member": (lambda t: (add(t, "etc/x", data=b"1"), add(t, "etc/x", data=b"2")), "appears twice"),
}


def make_archive(path: Path, build: Build) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return path


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir extraction uses, inside tmp_path, so 'nothing outside it' can be checked."""
    scratch = tmp_path / "scratch" / "tmp"
    scratch.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def listing(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_hostile_archives_are_refused_and_nothing_is_written_anywhere(
        case: str, tmp_path: Path, sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build, why = ESCAPES[case]
    evil = make_archive(tmp_path / "evil.tar.gz", build)
    before = listing(tmp_path)
    result = run_cli(capsys, "devices", "--root", str(evil))
    assert result.status == ExitStatus.REFUSED, result.stderr
    assert "is unsafe" in result.stderr and why in result.stderr and "Traceback" not in result.stderr
    assert "hint: " in result.stderr
    assert listing(tmp_path) == before  # the extraction dir is gone too
    assert not Path("/tmp/vfiodesk-pwned").exists()


def test_the_interpreters_own_filter_is_not_what_stops_the_chain(tmp_path: Path) -> None:
    """Why the members are checked by hand: on interpreters without the CVE-2025-4517 fix the
    chain above writes outside; ours refuses it whatever the interpreter."""
    evil = make_archive(tmp_path / "evil.tar.gz", path_max_chain)
    (tmp_path / "dest").mkdir()
    with pytest.raises(Exception, match="is unsafe"):
        A.extract_archive(evil, tmp_path / "dest")
    assert listing(tmp_path / "dest") == set() and not (tmp_path / "pwned").exists()


def test_a_compression_bomb_stops_at_the_cap(tmp_path: Path, sandbox: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    size = A.MAX_EXPANDED_BYTES + 64 * 1024 * 1024
    with gzip.open(bomb, "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w|") as tar:
        info = tarfile.TarInfo("proc/cmdline")
        info.size = size
        tar.addfile(info, ZeroReader(size))
    assert bomb.stat().st_size < 2 * 1024 * 1024
    result = run_cli(capsys, "devices", "--root", str(bomb))
    assert result.status == ExitStatus.REFUSED
    assert "expands to more than 128 MiB" in result.stderr
    assert listing(sandbox) == set()


def test_a_huge_pax_header_is_refused_without_reading_it_into_memory(tmp_path: Path) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, A.MAX_EXPANDED_BYTES * 8
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as stream:
        stream.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        chunk = b"\0" * (1024 * 1024)
        for _ in range(A.MAX_EXPANDED_BYTES // len(chunk) + 8):
            stream.write(chunk)
    (tmp_path / "pax.tar.gz").write_bytes(raw.getvalue())
    (tmp_path / "dest").mkdir()
    with pytest.raises(Exception, match="expands to more than"):
        A.extract_archive(tmp_path / "pax.tar.gz", tmp_path / "dest")


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    many = tmp_path / "many.tar"
    headers = (tarfile.TarInfo(f"d/{number}").tobuf() for number in range(A.MAX_MEMBERS + 1))
    many.write_bytes(b"".join(headers) + tarfile.NUL * tarfile.RECORDSIZE)
    (tmp_path / "dest").mkdir()
    with pytest.raises(Exception, match=f"more than {A.MAX_MEMBERS} members"):
        A.extract_archive(many, tmp_path / "dest")


def test_inside_links_hard_links_and_a_real_snapshot_extract(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    def good(tar: tarfile.TarFile) -> None:
        add(tar, "sys/devices/pci0000:00/0000:01:00.0/vendor", data=b"0x10de\n")
        add(tar, "sys/bus/pci/devices/0000:01:00.0", tarfile.SYMTYPE,
            link="../../../devices/pci0000:00/0000:01:00.0")
        add(tar, "sys/copy", tarfile.LNKTYPE, link="sys/devices/pci0000:00/0000:01:00.0/vendor")
        add(tar, "sys/bus/pci/drivers_link", tarfile.SYMTYPE, link="drivers/vfio-pci")

    archive = make_archive(tmp_path / "good.tar.gz", good)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert A.extract_archive(archive, dest) == 4
    assert (dest / "sys/bus/pci/devices/0000:01:00.0/vendor").read_text() == "0x10de\n"
    assert (dest / "sys/copy").read_text() == "0x10de\n" and not (dest / "sys/copy").is_symlink()
    assert os.readlink(dest / "sys/bus/pci/drivers_link") == "drivers/vfio-pci"  # dangling is fine

    host = ready_host(tmp_path / "host")
    out = tmp_path / "host.tar.gz"
    assert run_cli(capsys, "snapshot", str(out), "--root", str(host.root)).status == 0
    def facts(root: Path) -> list[dict[str, object]]:  # names come from pci.ids, not captured
        devices = run_cli(capsys, "devices", "--json", "--root", str(root)).json()["devices"]
        return [{k: v for k, v in d.items() if not k.endswith("_name")} for d in devices]

    assert facts(out) == facts(host.root)


def test_not_an_archive_and_damaged_archives_are_clear_errors(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    result = run_cli(capsys, "devices", "--root", str(text))
    assert result.status == 1 and "neither a directory nor a snapshot archive" in result.stderr
    good = tmp_path / "good.tar.gz"
    make_archive(good, lambda t: [add(t, f"proc/{n}", data=os.urandom(4096)) for n in range(8)])
    for cut in (200, 4096 * 3 + 1000, len(good.read_bytes()) - 30):  # in a header, in data, at the end
        (tmp_path / "cut.tar.gz").write_bytes(good.read_bytes()[:cut])
        result = run_cli(capsys, "devices", "--root", str(tmp_path / "cut.tar.gz"))
        assert result.status == 1 and "damaged or truncated" in result.stderr, cut
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run_cli(capsys, "devices", "--root", str(fifo))  # must not block
    assert result.status == 1 and "neither a directory" in result.stderr


class ZeroReader(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        count = self.left if size < 0 else min(size, self.left)
        self.left -= count
        return b"\0" * count


def test_snapshot_never_follows_a_planted_partial_link(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path / "host")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out" / "host.tar.gz"
    out.parent.mkdir()
    (out.parent / "host.tar.gz.partial").symlink_to(victim)
    (out.parent / ".host.tar.gz.partial").symlink_to(victim)
    assert run_cli(capsys, "snapshot", str(out), "--root", str(host.root)).status == 0
    assert victim.read_text() == "precious\n"
    assert tarfile.is_tarfile(out) and oct(out.stat().st_mode)[-3:] == "600"
    assert sorted(p.name for p in out.parent.iterdir()) == [".host.tar.gz.partial", "host.tar.gz",
                                                            "host.tar.gz.partial"]


@pytest.mark.parametrize(("out", "message"), [("", "is not a file name"),
                                              ("missing-dir/host.tar.gz", "cannot write snapshot")])
def test_snapshot_bad_output_is_a_clear_error(out: str, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    host = ready_host(tmp_path / "host")
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    result = run_cli(capsys, "snapshot", out, "--root", str(host.root))
    assert result.status in (1, 2) and message in result.stderr and "hint:" in result.stderr
    assert listing(tmp_path) == before
