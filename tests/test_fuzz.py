"""Every command with random and bad arguments, on randomly corrupted host trees and files.

Properties: the exit code is one of the documented ones, no traceback (nor the CLI's "internal
error" line), each run finishes within a time bound, and nothing is written outside the
example's temporary directory. Every run names the tree with --root and VFIODESK_ROOT, and
libvirt with the in-process test:///default driver, so nothing reaches this machine's sysfs,
its boot configuration or its libvirtd. The `lab` commands (they boot QEMU) are left out.

Runs are bounded by the "ci" profile (a few minutes on 2 cores, the same examples every run);
HYPOTHESIS_PROFILE=random (40 new examples per command) or deep (300) look further.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cli import run_cli
from tests.fakehost import ready_host
from tests.fuzzkit import PROFILE, environment, real_host_state, time_bound
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.cli.main import cli

TIME_BOUND_S = 20  # one command on a small tree takes well under a second
EXIT_CODES = {0, 1, 2, 3, 4}
TEST_URI = "test:///default"  # libvirt's in-process test driver: no daemon is touched

# A command's path and the options it must always get (never fuzzed: they keep it in the tree).
SKIPPED = {("lab", "demo"), ("lab", "run")}  # they boot QEMU; lab setup --root stays in
FORCED = {("desktop", "monitor", "switch"): ["--dry-run"]}  # it has no --root: only print


def walk(command: click.Command,
         path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from walk(sub, (*path, name))
    else:
        yield path, command


COMMANDS = {path: command for path, command in walk(cli) if path not in SKIPPED}

# Host files the commands read, and what a damaged tree may hold instead.
GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n'
PROFILE_TOML = 'memory = "4G"\ncpus = 2\ngpu = "01:00"\n'
MONITORS_TOML = "[monitor.1]\nhost = 0x0f\nvm = 0x11\n"


@dataclass(frozen=True)
class Template:
    root: Path  # the tree
    files: Path  # the user's files
    corruptible: tuple[str, ...]  # tree entries (relative) a corruption may hit


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("fuzz-template")
    host = ready_host(base / "host")
    write_topology(host.root, intel_4c8t())
    host.file("etc/default/grub", GRUB)
    host.file("sys/bus/pci/drivers/vfio-pci/.keep")
    host.file("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    host.file("proc/sys/vm/nr_hugepages", "0\n")
    host.file("proc/meminfo", "MemTotal:       32768000 kB\n")
    files = base / "files"
    files.mkdir()
    xml = _domain_xml(host.root)
    (files / "dom.xml").write_text(xml)
    (files / "profile.toml").write_text(PROFILE_TOML)
    (files / "monitors.toml").write_text(MONITORS_TOML)
    write_user_files(files)
    corruptible = sorted(
        str(path.relative_to(host.root)) for path in host.root.rglob("*")
        if path.is_symlink() or path.is_file())
    return Template(host.root, files, tuple(corruptible))


def _domain_xml(root: Path) -> str:
    from vfiodesk.cli.main import main

    with contextlib.redirect_stdout(_Sink()) as sink:
        status = main(["vm", "create", "win10", "--print-xml", "--root", str(root), "--gpu", "01:00",
                       "--cpus", "2", "--binding", "vfiodesk", "--hugepages"])
    assert status == 0
    return sink.text


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# --- corruptions -------------------------------------------------------------------------

CORRUPTIONS = ("junk", "text", "empty", "huge", "utf16", "cpulist", "fifo", "devzero", "loop",
               "directory", "missing", "dangling")


def corrupt(path: Path, kind: str, junk: bytes, text: str) -> None:
    """Replace ``path`` (a file or a link in the tree) with what a damaged host could hold."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        os.symlink("/dev/zero", path)  # read-only use: a writer on it writes nothing anywhere
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "dangling":
        os.symlink("../../nowhere/at/all", path)
    elif kind == "directory":
        path.mkdir()
    elif kind != "missing":
        content = {"junk": junk, "text": text.encode("utf-8", "surrogatepass"), "empty": b"",
                   "huge": b"1" * (70 * 1024), "utf16": "0x10de\n".encode("utf-16"),
                   "cpulist": b"0-999999999\n"}[kind]
        path.write_bytes(content)


def write_user_files(out: Path) -> None:
    """Good and bad files to name on the command line; shared, only ever read."""
    (out / "utf16.xml").write_bytes((out / "dom.xml").read_text().encode("utf-16"))
    (out / "latin1.toml").write_bytes('memory = "4G" # caf\xe9\n'.encode("latin-1"))
    (out / "binary").write_bytes(bytes(range(256)) * 4)
    (out / "deep.xml").write_text("<domain>" + "<a>" * 100_000 + "</a>" * 100_000 + "</domain>")
    (out / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    (out / "huge.xml").write_bytes(b"<domain>" + b" " * (9 * 1024 * 1024) + b"</domain>")
    (out / "empty").write_bytes(b"")
    os.mkfifo(out / "fifo")
    (out / "adir").mkdir()


def output_paths(work: Path) -> list[Path]:
    """Where a command may be told to write: inside the example's directory only."""
    os.mkfifo(work / "out.fifo")
    (work / "existing.out").write_text("keep?\n")
    return [work / "written.out", work / "existing.out", work / "out.fifo", work,
            work / "no" / "such" / "dir" / "out.conf", Path("relative.out")]


# --- arguments ---------------------------------------------------------------------------

BAD_VALUES = ("", "0", "-1", "1", "2", "65536", "0-999999999", "1B", "1K", "1.5G", "99999T", "8G",
              "0x0", "1920x1080", "99999x99999", "01:00", "0000:01:00.0", "01:00.1", "zz:zz.z",
              "../../../etc/passwd", "/etc/passwd", "a\nsection: links", "host\n\tend", "default/w.img",
              "./w.img", "w.img", "default/w.img,size=0", "/w.img,size=1G", "x" * 300, "win10", "test",
              "macvtap:eth0", "1,2,3", "4-7", "7-4", "\u00e9", "\u0663", "--help")


OUTPUTS = ("out", "output")


def _value_for(param: click.Parameter, inputs: list[str], outputs: list[str]) -> st.SearchStrategy[str]:
    if isinstance(param.type, click.Choice):
        return st.one_of(st.sampled_from([str(c) for c in param.type.choices]), st.sampled_from(BAD_VALUES))
    if param.name in OUTPUTS:
        return st.sampled_from(outputs)
    if isinstance(param.type, click.Path) or param.name in ("keyboard", "mouse"):
        return st.sampled_from(inputs)
    return st.one_of(st.sampled_from(BAD_VALUES),
                     st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                             max_size=20))


@st.composite
def arguments(draw: st.DrawFn, command: click.Command, inputs: list[str], outputs: list[str]) -> list[str]:
    argv: list[str] = []
    for param in command.params:
        if param.name in ("root", "uri"):
            continue  # fixed below: the tree and the test driver, never fuzzed
        if isinstance(param, click.Argument):
            count = 1 if param.nargs == 1 else draw(st.integers(0, 3))
            if param.required or draw(st.booleans()):
                argv += [draw(_value_for(param, inputs, outputs)) for _ in range(count)]
            continue
        assert isinstance(param, click.Option)
        if not draw(st.booleans()):
            continue
        if param.is_flag:
            argv.append(draw(st.sampled_from(param.opts + param.secondary_opts)))
        else:
            argv += [param.opts[0], draw(_value_for(param, inputs, outputs))]
    return argv


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_survives_bad_arguments_and_damaged_trees(
        path: tuple[str, ...], template: Template, capsys: pytest.CaptureFixture[str]) -> None:
    command = COMMANDS[path]
    real_before = real_host_state()
    names = {param.name for param in command.params}
    inputs = [str(p) for p in sorted(template.files.iterdir())] + [
        str(template.files / "missing.xml"), "/dev/zero"]

    @settings(settings.get_profile(PROFILE))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        with tempfile.TemporaryDirectory(prefix="vfiodesk-fuzz-") as directory:
            work = Path(directory)
            root = work / "host"
            shutil.copytree(template.root, root, symlinks=True)
            outputs = [str(p) for p in output_paths(work)]
            hits = data.draw(st.lists(st.tuples(st.sampled_from(template.corruptible),
                                                st.sampled_from(CORRUPTIONS)), max_size=3), label="damage")
            for relative, kind in hits:
                corrupt(root / relative, kind, data.draw(st.binary(max_size=40)),
                        data.draw(st.text(max_size=20)))
            argv = [*path, *data.draw(arguments(command, inputs, outputs), label="argv"),
                    *FORCED.get(path, [])]
            if "root" in names:
                argv += ["--root", str(root)]
            if "uri" in names:
                argv += ["--connect", TEST_URI]
            with environment(VFIODESK_ROOT=str(root), LIBVIRT_DEFAULT_URI=TEST_URI, HOME=str(work),
                             XDG_CONFIG_HOME=str(work / ".config")), \
                    contextlib.chdir(work), time_bound(TIME_BOUND_S):
                result = run_cli(capsys, *argv)
            shown = f"vfiodesk {' '.join(argv)}\n{result.stderr[-2000:]}"
            assert result.status in EXIT_CODES, shown
            assert "Traceback" not in result.stderr and "internal error" not in result.stderr, shown
            if result.status == 2:
                assert "hint:" in result.stderr, shown

    run()
    assert real_host_state() == real_before
    sys.stdout.flush()
