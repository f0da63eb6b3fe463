"""`vfiodesk lab`: rehearse passthrough in a throwaway kernel with an emulated IOMMU."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vfiodesk.cli.options import console, dry_run_option, emit_json, host_paths, json_option, root_option
from vfiodesk.errors import ExitStatus, VfiodeskError
from vfiodesk.lab.boot import LabResult, LabSpec, run_in_lab
from vfiodesk.lab.firmware import FIRMWARES, Firmware
from vfiodesk.lab.layout import IOMMU_KINDS

# Lines QEMU prints when it refuses its arguments (before the guest ever runs).
_QEMU_REFUSALS = ("qemu-system-x86_64: ", "Could not boot", "qemu: could not")


def lab_options(firmware: Firmware) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that shape the lab machine; ``firmware`` is the command's default."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(_lab_options(firmware)):
            function = option(function)
        return function
    return decorate


def _lab_options(firmware: Firmware) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    return [
        click.option("--iommu", type=click.Choice(IOMMU_KINDS), default="intel", show_default=True,
                     help="Emulated IOMMU: Intel VT-d or AMD-Vi."),
        click.option("--firmware", type=click.Choice(FIRMWARES), default=firmware, show_default=True,
                     help="OVMF (UEFI: a GOP framebuffer on the boot GPU, like a desktop) or "
                          "SeaBIOS (legacy VGA console)."),
        click.option("--kernel", type=click.Path(path_type=Path), default=None,
                     help="Kernel image (default: newest /boot/vmlinuz-* with vfio-pci)."),
        click.option("--cpus", type=int, default=2, show_default=True),
        click.option("--memory", default="1G", show_default=True),
        click.option("--cmdline", default="", help="Extra kernel parameters."),
        click.option("--qemu-args", default="", help="Extra raw QEMU arguments (devices, -smp...)."),
        click.option("--bare", is_flag=True, help="Leave the default devices out."),
        click.option("--numa", multiple=True, metavar="SPEC",
                     help="A NUMA node as virtme-ng takes it: 512M,cpus=0-1 (repeat per node)."),
        # TCG always works; KVM is faster but some hosts' KVM cannot run the lab (nested VMX).
        click.option("--accel", type=click.Choice(("tcg", "kvm")), default="tcg", show_default=True,
                     help="QEMU accelerator; kvm is opt-in."),
    ]


def spec_from(options: dict[str, Any]) -> LabSpec:
    return LabSpec(iommu=options["iommu"], firmware=options["firmware"], kernel=options["kernel"],
                   cpus=options["cpus"], memory=options["memory"], cmdline=options["cmdline"],
                   qemu_args=options["qemu_args"], bare=options["bare"], numa=tuple(options["numa"]),
                   accel=options["accel"])


@click.group()
def lab() -> None:
    """A throwaway kernel under QEMU (TCG) with an emulated IOMMU and a GPU-shaped device."""


def _boot(spec: LabSpec, command: list[str] | str, on_line: Callable[[str], None],
          timeout: float = 900) -> LabResult:
    """Boot with a status line until the guest speaks; say why when QEMU refuses to start."""
    from rich.console import Console

    if spec.accel == "tcg" and not os.path.exists("/dev/kvm"):
        click.echo("vfiodesk: no /dev/kvm here; the lab runs under TCG anyway (slower, works).",
                   err=True)
    status = (Console(stderr=True).status(f"booting the lab kernel ({spec.accel}, ~25 s)...")
              if sys.stderr.isatty() else None)
    started = False

    def forward(line: str) -> None:
        nonlocal started
        if not started and status is not None:
            status.stop()
        started = True
        on_line(line)

    if status is not None:
        status.start()
    try:
        result = run_in_lab(spec, command, on_line=forward, timeout=timeout)
        if result.returncode != 0 and not result.output.strip():
            # A death before the first line of output happens before the guest ran anything
            # (seen under TCG with OVMF, about one boot in three on a loaded host), so one
            # more boot changes nothing that the first could have touched.
            click.echo("vfiodesk: the lab machine stopped before printing anything; booting it "
                       "once more", err=True)
            result = run_in_lab(spec, command, on_line=forward, timeout=timeout)
    finally:
        if status is not None:
            status.stop()
    refusal = next((line for line in result.output.splitlines()
                    if line.startswith(_QEMU_REFUSALS)), None)
    if result.returncode != 0 and refusal is not None:
        raise VfiodeskError(f"QEMU refused to start the lab: {refusal}",
                            "check --qemu-args (qemu-system-x86_64 -device help lists devices)")
    if result.returncode != 0 and not result.output.strip():
        # The kernel boots quiet: a firmware or early-boot death shows as no output at all.
        raise VfiodeskError(f"the lab machine stopped (exit {result.returncode}) before printing anything",
                            "run it again; --cmdline loglevel=7 shows the lab kernel's log")
    return result


@lab.command(context_settings={"ignore_unknown_options": True})
@lab_options(firmware="bios")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], **options: Any) -> int:
    """Boot the lab and run COMMAND inside as root; exit with COMMAND's exit code.

    Example: vfiodesk lab run -- vfiodesk devices
    """
    result = _boot(spec_from(options), list(command), lambda line: click.echo(line))
    # The guest's sh says "exec: NAME: not found" and exits 127; a command's own 127 is not that.
    if result.returncode == 127 and f"exec: {command[0]}: not found" in result.output:
        click.echo(f"vfiodesk: error: {command[0]!r} was not found inside the lab", err=True)
    return result.returncode


@lab.command()
@lab_options(firmware="uefi")  # the story starts at a desktop's boot: efifb on the boot GPU
@json_option
def demo(as_json: bool, **options: Any) -> int:
    """Tell the passthrough story in the lab, step by step; exit 0 only if every step passed."""
    import json

    from vfiodesk.lab.demo import DEMO_CMDLINE, RESULT_PREFIX

    out = console()
    records: list[dict[str, Any]] = []

    def show(line: str) -> None:
        if line.startswith(RESULT_PREFIX):
            record = json.loads(line[len(RESULT_PREFIX):])
            records.append(record)
            if not as_json:
                out.print(f"  {'[green]pass[/]' if record['ok'] else '[bold red]FAIL[/]'} {record['detail']}")
        elif line.startswith("--- ") and not as_json:
            out.print(f"[bold]{line[4:]}[/]")

    spec = spec_from(options)
    spec = dataclasses.replace(spec, cmdline=f"{DEMO_CMDLINE} {spec.cmdline}".strip())
    # Two nested VMs and libvirtd under TCG: ~3 min alone, much longer on a busy machine.
    result = _boot(spec, [sys.executable, "-m", "vfiodesk.lab.demo", "--inside"], show, timeout=2400)
    passed = bool(records) and all(record["ok"] for record in records) and result.returncode == 0
    if as_json:
        emit_json({"passed": passed, "firmware": spec.firmware, "seconds": round(result.seconds, 1),
                   "steps": records, **({} if records else {"output": result.output[-2000:]})})
    else:
        _print_demo_table(records)
        if not records:
            out.print(result.output[-2000:])
        out.print("[green]Every step passed.[/]" if passed else "[bold red]Some steps failed.[/]")
    return int(ExitStatus.OK if passed else ExitStatus.ERROR)


def _print_demo_table(records: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="vfiodesk lab demo", title_justify="left")
    for column in ("step", "result", "detail"):
        table.add_column(column)
    for record in records:
        table.add_row(record["title"], "[green]pass[/]" if record["ok"] else "[bold red]FAIL[/]",
                      record["detail"])
    console().print(table)


# What the lab needs, per Debian/Ubuntu (the kernel package differs).
_LAB_PACKAGES = ["qemu-system-x86", "ovmf", "libvirt-daemon-system", "libvirt-clients", "pciutils",
                 "kmod", "busybox-static"]


@lab.command()
@dry_run_option
@root_option
def setup(dry_run: bool, root: str | None) -> None:
    """Install what the lab needs (Debian/Ubuntu); say what is missing elsewhere."""
    from vfiodesk.checks.packages import distro_family
    from vfiodesk.host.system import read_os_release
    from vfiodesk.runner import CommandRunner

    host = host_paths(root)
    os_release = read_os_release(host)
    if distro_family(os_release) != "debian":
        raise VfiodeskError(
            f"lab setup knows Debian and Ubuntu, not {os_release.get('ID', 'this system')}",
            "install QEMU (qemu-system-x86_64), a distribution kernel with vfio-pci in /boot, "
            "libvirt, and `pip install virtme-ng`")
    kernel = "linux-image-generic" if os_release.get("ID") == "ubuntu" else "linux-image-amd64"
    runner = CommandRunner(host, dry_run=dry_run, out=sys.stdout)
    runner.run(["apt-get", "update"])
    runner.run(["apt-get", "install", "-y", "--no-install-recommends", *_LAB_PACKAGES, kernel])
    runner.run([sys.executable, "-m", "pip", "install", "virtme-ng"])
    if runner.will_run:
        click.echo("the lab is ready: vfiodesk lab demo")
