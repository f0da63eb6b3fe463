"""`vfiodesk devices`: PCI devices by IOMMU group, and what passing each group would take."""

from __future__ import annotations

from typing import Any

import click

from vfiodesk.checks.groups import GroupView, Role, classify_group, default_targets, find_host_display
from vfiodesk.checks.reset import reset_advice
from vfiodesk.cli.options import console, emit_json, host_paths, json_option, root_option
from vfiodesk.host.pci import group_devices, read_iommu_group_numbers, scan_pci_devices
from vfiodesk.host.pciids import PciNames, read_pci_names
from vfiodesk.model.pci import PciDevice


@click.command()
@json_option
@root_option
def devices(as_json: bool, root: str | None) -> None:
    """List PCI devices by IOMMU group, marking GPU functions, bridges and strangers."""
    host = host_paths(root)
    found = scan_pci_devices(host)
    iommu_enabled = bool(read_iommu_group_numbers(host))
    names = read_pci_names(host, {(d.vendor_id, d.device_id) for d in found})
    host_display = find_host_display(found)
    views = [classify_group(number, members,
                            default_targets(members, host_display) if number is not None else [],
                            host_display)
             for number, members in sorted(group_devices(found).items(),
                                           key=lambda item: (item[0] is None, item[0] or 0))]
    if as_json:
        emit_json({
            "iommu_enabled": iommu_enabled,
            "devices": [device_json(device, role, names) for view in views
                        for device, role in view.roles],
            "groups": [{"number": view.number, "clean": view.is_clean,
                        "devices": [str(device.address) for device, _ in view.roles]}
                       for view in views if view.number is not None],
        })
        return
    print_groups(views, names, iommu_enabled)


def device_json(device: PciDevice, role: Role | None, names: PciNames) -> dict[str, Any]:
    def hex_or_none(value: int | None, digits: int) -> str | None:
        return None if value is None else f"{value:0{digits}x}"

    known = device.identified
    return {
        "address": str(device.address),
        "vendor_id": f"{device.vendor_id:04x}" if known else None,
        "device_id": f"{device.device_id:04x}" if known else None,
        "subsystem_vendor_id": hex_or_none(device.subsystem_vendor_id, 4),
        "subsystem_device_id": hex_or_none(device.subsystem_device_id, 4),
        "class_code": f"{device.class_code:06x}" if known else None,
        "revision": hex_or_none(device.revision, 2),
        "vendor_name": names.vendor(device.vendor_id),
        "device_name": names.device(device.vendor_id, device.device_id),
        "driver": device.driver,
        "iommu_group": device.iommu_group,
        "boot_vga": device.boot_vga,
        "reset_methods": None if device.reset_methods is None else list(device.reset_methods),
        "numa_node": device.numa_node,
        "driver_override": device.driver_override,
        "role": None if device.iommu_group is None or role is None else role.value,
        "reset_warnings": reset_advice(device),
        "problems": list(device.problems),
    }


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
