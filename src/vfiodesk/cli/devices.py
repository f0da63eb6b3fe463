"""`vfiodesk devices`: PCI devices by IOMMU group, and what passing each group would take."""

from __future__ import annotations

import click

from vfiodesk.checks.groups import GroupView, Role
from vfiodesk.checks.reset import reset_advice
from vfiodesk.cli.devices_listing import listing_json, scan_listing
from vfiodesk.cli.options import console, emit_json, host_paths, json_option, root_option
from vfiodesk.host.pciids import PciNames


@click.command()
@json_option
@root_option
def devices(as_json: bool, root: str | None) -> None:
    """List PCI devices by IOMMU group, marking GPU functions, bridges and strangers."""
    listing = scan_listing(host_paths(root))
    if as_json:
        emit_json(listing_json(listing))
        return
    print_groups(listing.views, listing.names, listing.iommu_enabled)


_ROLE_STYLE = {Role.TARGET: "bold green", Role.COMPANION: "green", Role.HOST_DISPLAY: "cyan",
               Role.BRIDGE: "dim", Role.STRANGER: "yellow"}
_ROLE_LABEL = {Role.TARGET: "pass", Role.COMPANION: "same card", Role.HOST_DISPLAY: "host display",
               Role.BRIDGE: "bridge, stays", Role.STRANGER: "stranger"}


def print_groups(views: list[GroupView], names: PciNames, iommu_enabled: bool) -> None:
    from rich.table import Table

    out = console()
    if not iommu_enabled:
        out.print("[bold red]The IOMMU is off:[/] the kernel made no IOMMU groups, so no device "
                  "can be passed through. Run `vfiodesk doctor` for the fix.")
    if names.source is None:
        out.print("[dim]No pci.ids found (install hwdata or pciutils): showing IDs only.[/]")
    for view in views:
        if view.number is None:
            title = "No IOMMU group"
        else:
            keeps = not any(role is Role.TARGET for _, role in view.roles) and \
                any(role is Role.HOST_DISPLAY for _, role in view.roles)
            verdict = ("[cyan]the host's own display, stays[/]" if keeps else "[green]clean[/]"
                       if view.is_clean else f"[yellow]shared with {len(view.strangers)} stranger(s)[/]")
            title = f"IOMMU group {view.number}: {verdict}"
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for column in ("address", "ids", "class", "name", "driver", "role"):
            table.add_column(column)
        for device, role in view.roles:
            name = names.device(device.vendor_id, device.device_id) or ""
            vendor = names.vendor(device.vendor_id) or ""
            label = _ROLE_LABEL[role] if view.number is not None else ""
            if device.boot_vga:
                label += " (boot VGA)"
            if reset_advice(device):
                label += " [yellow](reset!)[/]"
            if device.problems:
                label += " [bold red](junk in sysfs!)[/]"
            ids, code = ((device.ids, f"{device.class_code:06x}") if device.identified
                         else ("[red]unreadable[/]", "?"))
            table.add_row(str(device.address), ids, code, f"{vendor} {name}".strip(),
                          device.driver or "-", f"[{_ROLE_STYLE[role]}]{label}[/]")
        out.print(table)
        for device, _ in view.roles:
            for problem in device.problems:
                out.print(f"  [bold red]junk:[/] {problem}")
            for advice in reset_advice(device):
                out.print(f"  [yellow]reset:[/] {advice}")
        out.print()
