"""A PowerShell script that turns on message-signaled interrupts for the passed-through devices.

Windows keeps the switch per device instance under
HKLM\\SYSTEM\\CurrentControlSet\\Enum\\PCI\\VEN_xxxx&DEV_xxxx&SUBSYS_ssssvvvv&REV_rr\\<instance>\\
Device Parameters\\Interrupt Management\\MessageSignaledInterruptProperties, value MSISupported=1
(docs.microsoft.com, "Enabling message-signaled interrupts in the registry").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MsiDevice:
    vendor_id: int
    device_id: int
    subsystem_vendor_id: int | None
    subsystem_device_id: int | None
    label: str


def hardware_id(device: MsiDevice) -> str:
    """The Enum\\PCI key prefix: SUBSYS is the subsystem device ID then the subsystem vendor."""
    key = f"VEN_{device.vendor_id:04X}&DEV_{device.device_id:04X}"
    if device.subsystem_vendor_id is not None and device.subsystem_device_id is not None:
        key += f"&SUBSYS_{device.subsystem_device_id:04X}{device.subsystem_vendor_id:04X}"
    return key


def msi_script(devices: list[MsiDevice]) -> str:
    lines = [
        "# Enables MSI for the devices vfiodesk passed to this VM. Run as Administrator, then reboot.",
        "#Requires -RunAsAdministrator",
        '$ErrorActionPreference = "Stop"',
        "$found = 0",
    ]
    for device in devices:
        lines += [
            f"# {device.label}",
            'Get-ChildItem -Path "HKLM:\\SYSTEM\\CurrentControlSet\\Enum\\PCI" |',
            f'  Where-Object {{ $_.PSChildName -like "{hardware_id(device)}*" }} |',
            "  Get-ChildItem | ForEach-Object {",
            '    $key = Join-Path $_.PSPath "Device Parameters\\Interrupt Management\\'
            'MessageSignaledInterruptProperties"',
            "    New-Item -Path $key -Force | Out-Null",
            '    New-ItemProperty -Path $key -Name "MSISupported" -Value 1 -PropertyType DWord -Force '
            "| Out-Null",
            '    Write-Host "MSI on:" $_.PSChildName',
            "    $found++",
            "  }",
        ]
    lines += [
        f'if ($found -lt {len(devices)}) {{ Write-Warning "only $found of {len(devices)} devices found: '
        'are the drivers installed?" }',
        'Write-Host "Reboot Windows for MSI to take effect."',
    ]
    return "\r\n".join(lines) + "\r\n"
