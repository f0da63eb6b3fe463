"""`vfiodesk bind`, `unbind`, `restore`: hand devices to vfio-pci and give them back."""

from __future__ import annotations

import click

from vfiodesk.binding.engine import BindReport, ReleaseReport, bind_devices, release_devices
from vfiodesk.binding.handoff import logged, read_state, release_single_gpu
from vfiodesk.binding.journal import read_records
from vfiodesk.binding.sysfs import SysfsWriter
from vfiodesk.checks.reset import reset_advice
from vfiodesk.cli.options import (
    console,
    dry_run_option,
    emit_json,
    host_paths,
    json_option,
    root_option,
)
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciAddress, PciPattern, parse_pci_pattern
from vfiodesk.plan.bind import VFIO_DRIVER

devices_argument = click.argument("devices", nargs=-1, metavar="DEVICE...")


def _patterns(devices: tuple[str, ...]) -> list[PciPattern]:
    if not devices:
        raise InputError("name at least one device", "e.g. vfiodesk bind 01:00 (every function of the card)")
    return [parse_pci_pattern(text) for text in devices]


@click.command()
@devices_argument
@click.option("--force", is_flag=True, help="Bind even what the safety rules refuse.")
@dry_run_option
@json_option
@root_option
def bind(devices: tuple[str, ...], force: bool, dry_run: bool, as_json: bool, root: str | None) -> None:
    """Bind DEVICE(s) and their IOMMU group mates to vfio-pci (01:00 = every function)."""
    host = host_paths(root)
    report = bind_devices(host, _patterns(devices), force=force, dry_run=dry_run)
    if as_json:
        emit_json(_report_json(report, dry_run))
        return
    _print_report(report, dry_run)


def _report_json(report: BindReport, dry_run: bool) -> dict[str, object]:
    return {
        "dry_run": dry_run,
        "bind": [str(d.address) for d in report.plan.to_bind],
        "already_bound": [str(d.address) for d in report.plan.already_bound],
        "free_consoles": list(report.plan.free_consoles),
        "free_framebuffers": list(report.plan.free_framebuffers),
        "unload_nvidia": report.plan.unload_nvidia,
        "warnings": list(report.plan.warnings) + [a for d in report.plan.devices for a in reset_advice(d)],
        "writes": report.writes,
        "commands": report.commands,
        "vfio_groups": report.vfio_groups,
    }


def _print_report(report: BindReport, dry_run: bool) -> None:
    out = console()
    plan = report.plan
    for view in plan.groups:
        out.print(f"[bold]IOMMU group {view.number}[/]")
        for device, role in view.roles:
            action = ("stays (bridge)" if device not in plan.devices else
                      "already on vfio-pci" if device in plan.already_bound else
                      f"{device.driver or 'no driver'} -> {VFIO_DRIVER}")
            out.print(f"  {device.address} {device.ids} {role.value:9} {action}")
    for warning in [*plan.warnings, *(a for d in plan.devices for a in reset_advice(d))]:
        out.print(f"[yellow]warning:[/] {warning}")
    if dry_run:
        out.print("[bold]Would write:[/]")
        for line in report.writes:
            out.print(f"  {line}", markup=False)
        return
    if not plan.to_bind:
        out.print("Nothing to do: every device is already on vfio-pci.")
        return
    out.print(f"[green]Bound[/] {', '.join(report.bound)}; {' '.join(report.vfio_groups)} ready. "
              "Give them back with: vfiodesk unbind " + " ".join(report.bound))


@click.command()
@devices_argument
@dry_run_option
@root_option
def unbind(devices: tuple[str, ...], dry_run: bool, root: str | None) -> None:
    """Give DEVICE(s) back to their original driver (or the kernel's default), verified."""
    host = host_paths(root)
    from vfiodesk.host.pci import scan_pci_devices
    from vfiodesk.plan.bind import select_devices

    chosen = select_devices(scan_pci_devices(host), _patterns(devices))
    journaled = read_records(host)
    addresses = [device.address for device in chosen if str(device.address) in journaled]
    writer = SysfsWriter(host, dry_run=dry_run)
    report = release_devices(host, addresses, writer=writer) if addresses else ReleaseReport()
    for device in chosen:
        if str(device.address) in journaled:
            continue
        if device.driver != VFIO_DRIVER:
            report.done.append(f"{device.address}: not on vfio-pci ({device.driver or 'no driver'}); "
                               "nothing to do")
            continue
        # Bound by someone else (early binding, another tool): hand it to the kernel's choice.
        writer.set_override(str(device.address), None)
        writer.unbind(str(device.address))
        writer.probe(str(device.address), None)
        report.done.append(f"{device.address}: would go to the kernel's choice of driver" if dry_run
                           else f"{device.address}: released to "
                                f"{writer.driver(str(device.address)) or 'no driver'}")
    _print_release(report, dry_run, "nothing to do")


@click.command()
@devices_argument
@click.option("--all", "everything", is_flag=True, help="Every device in the journal.")
@dry_run_option
@root_option
def restore(devices: tuple[str, ...], everything: bool, dry_run: bool, root: str | None) -> None:
    """Finish an interrupted bind or release from the journal (after a crash); with --all, also
    give a single-GPU VM's GPU and desktop back (from SSH when the screen is black)."""
    if bool(devices) == everything:
        raise InputError("name devices or pass --all", "e.g. vfiodesk restore --all")
    host = host_paths(root)
    handoff = read_state(host) if everything else None
    if handoff is not None:
        if dry_run:
            click.echo(f"would give {handoff.vm}'s GPU back and start the display manager")
        else:
            release_single_gpu(host, handoff.vm, logged(host, handoff.vm, click.echo))
    addresses = None if everything else [PciAddress.parse(text) for text in devices]
    report = release_devices(host, addresses, dry_run=dry_run)
    if handoff is not None and not dry_run and not report.done:
        report.done.append("the host display is back")
    _print_release(report, dry_run, "the journal is empty: nothing to restore")


def _print_release(report: ReleaseReport, dry_run: bool, empty: str) -> None:
    """A dry run lists the writes and commands in the order they would happen, then where each
    device would end up; a real run says where each device is."""
    if dry_run and report.steps:
        click.echo("Would write and run, in this order:")
        for line in report.steps:
            click.echo(f"  {line}")
    for line in report.done or [empty]:
        click.echo(line)
    for notice in report.notices:
        click.echo(f"vfiodesk: warning: {notice}", err=True)
