"""--root isolates everything: this host's libvirt is used for another root only with an
explicit --connect, and the commands that read the host or run programs take --root."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.errors import ExitStatus


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, intel_4c8t())
    return tree


@pytest.mark.parametrize("command", [
    ("vm", "tune", "win10", "--hugepages"),
    ("vm", "create", "win10", "--gpu", "01:00", "--cpus", "2"),
    ("vm", "audit", "win10"),
    ("desktop", "msi", "win10"),
    ("desktop", "looking-glass", "win10"),
    ("vm", "audio", "win10", "--backend", "none"),
    ("up", "win10"),
    ("down", "win10"),
])
def test_libvirt_is_not_this_hosts_for_another_root(host: FakeHost, command: tuple[str, ...],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, *command, "--root", str(host.root))
    assert result.status == ExitStatus.USAGE, result.stderr
    assert f"--root {host.root} is not this host" in result.stderr
    assert "hint: name the libvirt to use with --connect URI" in result.stderr


def test_an_explicit_connect_is_used(host: FakeHost, libvirtd: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "vm", "tune", "vfiodesk-no-such-domain", "--hugepages", "--root", str(host.root),
                     "--connect", libvirtd)
    assert result.status == 1 and "no domain 'vfiodesk-no-such-domain'" in result.stderr
    assert "is not this host" not in result.stderr


@pytest.mark.parametrize("command", [
    ("vm", "audio", "--backend", "none"),
    ("desktop", "looking-glass"),
    ("vm", "tune", "--hugepages"),
    ("down",),
])
def test_with_connect_under_a_root_the_named_libvirt_answers(host: FakeHost, command: tuple[str, ...],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    name = "vfiodesk-no-such-domain"
    result = run_cli(capsys, *command[:2], name, *command[2:], "--root", str(host.root),
                     "--connect", "test:///default")
    assert result.status == 1 and f"no domain {name!r}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_printing_xml_needs_no_libvirt(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "vm", "create", "win10", "--gpu", "01:00", "--cpus", "2", "--print-xml",
                     "--root", str(host.root))
    assert result.status == 0 and "<domain" in result.stdout


def test_monitor_switch_takes_root_and_only_prints_there(host: FakeHost, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "monitors.toml"
    config.write_text("[monitor.1]\nhost = 0x0f\nvm = 0x11\n")
    result = run_cli(capsys, "desktop", "monitor", "switch", "vm", "--config", str(config),
                     "--root", str(host.root))
    assert result.status == 0, result.stderr
    assert "would run: ddcutil --display 1 setvcp 60 0x11" in result.stderr
    assert "monitor 1: would switch to input 0x11 (vm)" in result.stdout


def test_every_command_that_uses_libvirt_takes_root() -> None:
    """--connect and --root come together, so VFIODESK_ROOT or --root never reaches this host's
    libvirt by a command that forgot the guard."""
    from tests.test_fuzz import COMMANDS

    def options(command: click.Command) -> set[str]:
        return {name for param in command.params for name in getattr(param, "opts", ())}

    lacking = [" ".join(path) for path, command in COMMANDS.items()
               if "--connect" in options(command) and "--root" not in options(command)]
    assert lacking == []
    assert ("vm", "audio") in COMMANDS and ("desktop", "looking-glass") in COMMANDS
