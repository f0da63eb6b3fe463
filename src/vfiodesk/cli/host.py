"""`vfiodesk host`: host configuration (kernel command line, early binding, hugepages, network,
audio, packages), previewed, applied atomically with backups, and undone."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import click

from vfiodesk import paths as P
from vfiodesk.cli.host_services import audio, network, packages
from vfiodesk.cli.hostplan import apply_option, execute
from vfiodesk.cli.options import host_paths, root_option
from vfiodesk.host.boot import read_boot_facts
from vfiodesk.host.configfiles import read_config
from vfiodesk.host.kernel import read_modules
from vfiodesk.host.pci import scan_pci_devices
from vfiodesk.host.services import (
    detect_initramfs_tool,
    has_encrypted_disks,
    read_driver_module,
    read_mem_total,
    read_nr_hugepages,
)
from vfiodesk.host.system import read_cpuinfo
from vfiodesk.host.usage import read_host_usage
from vfiodesk.hostfiles.editor import undo_change
from vfiodesk.hostfiles.journal import read_changes
from vfiodesk.model.pci import parse_pci_pattern
from vfiodesk.model.sizes import HUGEPAGES_SIZE, parse_size
from vfiodesk.plan.bind import plan_bind
from vfiodesk.plan.hostconfig import hugepages as huge
from vfiodesk.plan.hostconfig import vfio_early as early
from vfiodesk.plan.hostconfig.bootloader import LOADERS, detect_loader, plan_kernel_params
from vfiodesk.plan.hostconfig.change import HostPlan
from vfiodesk.plan.hostconfig.iommu import plan_iommu_params
from vfiodesk.plan.hostconfig.params import Want
from vfiodesk.runner import CommandRunner

boot_loader_option = click.option(
    "--boot-loader", type=click.Choice(["auto", *LOADERS]), default="auto", show_default=True,
    help="Where the kernel command line lives (auto: detected under the root).")


@click.group()
def host() -> None:
    """Configure the host for passthrough: preview by default, --apply to write (undoable)."""


def kernel_plan(hostp: P.HostPaths, boot_loader: str, wants: Sequence[Want], title: str) -> HostPlan:
    facts = read_boot_facts(hostp)
    loader = detect_loader(facts) if boot_loader == "auto" else boot_loader
    plan = plan_kernel_params(facts, loader, wants, title)
    detected = " (detected)" if boot_loader == "auto" else ""
    return replace(plan, notes=(f"boot loader: {loader}{detected}", *plan.notes))


@host.command()
@click.option("--igfx-off", is_flag=True,
              help="intel_iommu=on,igfx_off: keep the integrated GPU out of the IOMMU (Intel).")
@click.option("--passthrough-mode", is_flag=True,
              help="iommu=pt: host devices skip IOMMU translation (faster host I/O).")
@boot_loader_option
@apply_option
@root_option
def iommu(igfx_off: bool, passthrough_mode: bool, boot_loader: str, apply: bool, root: str | None) -> None:
    """Turn the IOMMU on in the kernel command line, where the boot loader takes it."""
    hostp = host_paths(root)
    wants = plan_iommu_params(read_cpuinfo(hostp), igfx_off=igfx_off, passthrough=passthrough_mode)
    plan = kernel_plan(hostp, boot_loader, wants.wants, "iommu")
    if execute(hostp, replace(plan, notes=(*wants.notes, *plan.notes)), apply):
        click.echo("After the reboot, `vfiodesk doctor` confirms the IOMMU is on.")


@host.command("vfio-early")
@click.argument("devices", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Take even what the safety rules refuse (as bind --force).")
@boot_loader_option
@apply_option
@root_option
def vfio_early(devices: tuple[str, ...], force: bool, boot_loader: str, apply: bool,
               root: str | None) -> None:
    """Give DEVICES to vfio-pci at boot (modprobe.d + initramfs, or vfio-pci.ids= when built in).

    The plan is bind's: the whole IOMMU group, every function of the card, the same refusals."""
    hostp = host_paths(root)
    found = scan_pci_devices(hostp)
    # Who holds a device now does not matter for the next boot; what it carries does.
    usage = replace(read_host_usage(hostp, []), device_holders={}, nvidia_holders=())
    bind_plan = plan_bind(found, [parse_pci_pattern(text) for text in devices], usage, force=force)
    selected = list(bind_plan.devices)
    ids = early.vfio_ids(selected, found)
    modules = read_modules(hostp)
    if "vfio_pci" in modules.builtin:
        plan = kernel_plan(hostp, boot_loader, (Want.value("vfio-pci.ids", ids),), "vfio-early")
        plan = replace(plan, notes=("vfio-pci is built into this kernel: its IDs go on the command line",
                                    *plan.notes))
    else:
        drivers = {device.driver: read_driver_module(hostp, device.driver)
                   for device in selected if device.driver}
        softdeps = early.softdep_modules(selected, drivers)
        plan = early.plan_modprobe(ids, softdeps, modules.builtin, None).merge(
            early.plan_initramfs(early.InitramfsFacts(
                detect_initramfs_tool(hostp), read_config(hostp, P.ETC_INITRAMFS_TOOLS_MODULES),
                read_config(hostp, P.ETC_MKINITCPIO_CONF), os.path.isdir(hostp(P.ETC_MKINITCPIO_CONF_D)))))
    warnings = (*bind_plan.warnings, *early.boot_gpu_warnings(selected, has_encrypted_disks(hostp)))
    execute(hostp, replace(plan, warnings=(*plan.warnings, *warnings)), apply)


@host.command()
@click.argument("size")
@click.option("--page-size", type=click.Choice(sorted(huge.PAGE_SIZES)), default="2M", show_default=True,
              help="2M pages via sysctl.d; 1G pages via the kernel command line.")
@boot_loader_option
@apply_option
@root_option
def hugepages(size: str, page_size: str, boot_loader: str, apply: bool, root: str | None) -> None:
    """Reserve SIZE (the VM's memory, e.g. 8G) as hugepages at every boot."""
    hostp = host_paths(root)
    pages = huge.page_count(parse_size(size, limits=HUGEPAGES_SIZE), page_size)
    statement = huge.memory_statement(pages, page_size, read_mem_total(hostp))
    if page_size == "2M":
        plan = huge.plan_sysctl(pages, statement, read_nr_hugepages(hostp))
    else:
        cpu = read_cpuinfo(hostp)
        wants = huge.gigantic_wants(pages, cpu.flags if cpu else frozenset())
        plan = kernel_plan(hostp, boot_loader, wants, "hugepages")
        plan = replace(plan, notes=(statement, *plan.notes))
    execute(hostp, plan, apply)


@host.command()
@click.argument("change", required=False)
@root_option
def undo(change: str | None, root: str | None) -> None:
    """Undo CHANGE (default: the latest), if its files still hold what vfiodesk wrote."""
    hostp = host_paths(root)
    record = undo_change(hostp, change)
    for entry in record.files:
        click.echo(f"{'restored' if entry.backup else 'removed'} /{entry.path}")
    runner = CommandRunner(hostp)
    for argv in record.undo_commands:
        result = runner.run(argv, check=False)
        if result.ran and result.returncode != 0:
            click.echo(f"warning: {' '.join(argv)} failed: {result.stderr.strip()}")
    click.echo(f"Change {record.id} undone.")


@host.command()
@root_option
def history(root: str | None) -> None:
    """List the host changes vfiodesk made (the undo journal)."""
    records = read_changes(host_paths(root))
    if not records:
        click.echo("No host changes recorded.")
    for record in records:
        state = "undone" if record.undone else "applied"
        files = ", ".join(f"/{entry.path}" for entry in record.files) or "commands only"
        click.echo(f"{record.id}  {record.created}  {state}  {files}")


host.add_command(network)
host.add_command(audio)
host.add_command(packages)
