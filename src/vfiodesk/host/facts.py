"""Everything `doctor` looks at, read once; a probe that fails is recorded, not fatal."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from vfiodesk import paths as P
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.kernel import ModuleState, read_cmdline, read_iommu_log, read_modules
from vfiodesk.host.pci import read_iommu_group_numbers, scan_pci_devices
from vfiodesk.host.system import (
    CpuInfo,
    find_ovmf,
    find_program,
    read_acpi_tables,
    read_cpuinfo,
    read_group_members,
    read_os_release,
)
from vfiodesk.model.cmdline import KernelCmdline
from vfiodesk.model.pci import PciDevice

T = TypeVar("T")

PROGRAMS = ("qemu-system-x86_64", "libvirtd", "virtqemud", "virsh", "virt-manager", "virt-install", "swtpm",
            "swtpm_setup")


@dataclass
class HostFacts:
    cpu: CpuInfo | None = None
    kvm_device: bool = False
    acpi_tables: frozenset[str] | None = None
    iommu_groups: list[int] = field(default_factory=list)
    iommu_log: list[str] | None = None
    cmdline: KernelCmdline | None = None
    modules: ModuleState | None = None
    devices: list[PciDevice] | None = None
    programs: dict[str, str | None] = field(default_factory=dict)
    ovmf: list[str] = field(default_factory=list)
    os_release: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    libvirt_group: frozenset[str] | None = None
    prime_profile: str | None = None  # `prime-select query`'s answer; None without nvidia-prime
    errors: dict[str, str] = field(default_factory=dict)  # probe name -> why it failed


def read_host_facts(host: P.HostPaths, *, user: str | None = None) -> HostFacts:
    facts = HostFacts()

    def probe(name: str, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except VfiodeskError as exc:
            facts.errors[name] = exc.message
        except OSError as exc:
            facts.errors[name] = f"{exc.filename or name}: {exc.strerror}"
        return default

    facts.cpu = probe("cpu", lambda: read_cpuinfo(host), None)
    facts.kvm_device = os.path.exists(host(P.DEV_KVM))
    facts.acpi_tables = probe("acpi", lambda: read_acpi_tables(host), None)
    facts.iommu_groups = probe("iommu_groups", lambda: read_iommu_group_numbers(host), [])
    facts.iommu_log = probe("kernel_log", lambda: read_iommu_log(host), None)
    facts.cmdline = probe("cmdline", lambda: read_cmdline(host), None)
    facts.modules = probe("modules", lambda: read_modules(host), None)
    facts.devices = probe("devices", lambda: scan_pci_devices(host), None)
    facts.programs = {name: find_program(host, name) for name in PROGRAMS}
    facts.ovmf = probe("ovmf", lambda: find_ovmf(host), [])
    facts.os_release = probe("os_release", lambda: read_os_release(host), {})
    facts.user = user
    facts.libvirt_group = probe("groups", lambda: read_group_members(host, "libvirt"), None)
    return facts
