"""Fake host trees built from plain data, shaped like the kernel's sysfs (links and all)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from vfiodesk.paths import HostPaths


def config_space(vendor: int, device: int, cls: int, revision: int, subsystem: tuple[int, int]) -> bytes:
    """The first 64 bytes of a type-0 PCI config header, so lspci can read fake trees too."""
    header = bytearray(64)
    struct.pack_into("<HH", header, 0x00, vendor, device)
    header[0x08] = revision
    header[0x09:0x0C] = bytes(((cls >> 0) & 0xFF, (cls >> 8) & 0xFF, (cls >> 16) & 0xFF))
    struct.pack_into("<HH", header, 0x2C, *subsystem)
    return bytes(header)


@dataclass
class FakeHost:
    """Writes a tree under ``root`` that the probes cannot tell from a real host."""

    root: Path
    groups: set[int] = field(default_factory=set)

    @property
    def paths(self) -> HostPaths:
        return HostPaths(self.root)

    def file(self, relative: str, content: str | bytes = "") -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def link(self, relative: str, target: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)

    def pci(self, address: str, vendor: int, device: int, cls: int, *, driver: str | None = None,
            group: int | None = None, boot_vga: bool | None = None,
            reset_method: str | None = "flr bus", subsystem: tuple[int, int] = (0, 0),
            numa_node: int = -1, revision: int = 0xA1) -> None:
        """One PCI function, with the driver and iommu_group links sysfs has."""
        real = f"sys/devices/pci{address[:4]}:00/{address}"
        attributes = {
            "vendor": f"0x{vendor:04x}", "device": f"0x{device:04x}", "class": f"0x{cls:06x}",
            "subsystem_vendor": f"0x{subsystem[0]:04x}", "subsystem_device": f"0x{subsystem[1]:04x}",
            "revision": f"0x{revision:02x}", "numa_node": str(numa_node),
            "driver_override": "(null)",
        }
        if boot_vga is not None:
            attributes["boot_vga"] = "1" if boot_vga else "0"
        if reset_method is not None:
            attributes["reset_method"] = reset_method
        for name, value in attributes.items():
            self.file(f"{real}/{name}", value + "\n")
        self.file(f"{real}/config", config_space(vendor, device, cls, revision, subsystem))
        self.link(f"sys/bus/pci/devices/{address}", f"../../../devices/pci{address[:4]}:00/{address}")
        if driver is not None:
            (self.root / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
            self.link(f"{real}/driver", f"../../../bus/pci/drivers/{driver}")
        if group is not None:
            self.groups.add(group)
            self.link(f"{real}/iommu_group", f"../../../kernel/iommu_groups/{group}")
            self.link(f"sys/kernel/iommu_groups/{group}/devices/{address}",
                      f"../../../../devices/pci{address[:4]}:00/{address}")


def desktop_host(root: Path, *, iommu: bool = True) -> FakeHost:
    """A typical passthrough desktop: iGPU for the host, NVIDIA card + HDMI audio, a USB
    controller alone, and a chipset group with a stranger next to a second card."""
    host = FakeHost(root)

    def group(number: int) -> int | None:
        return number if iommu else None

    host.pci("0000:00:00.0", 0x8086, 0x3E30, 0x060000, group=group(0))
    host.pci("0000:00:01.0", 0x8086, 0x1901, 0x060400, driver="pcieport", group=group(1))
    host.pci("0000:00:02.0", 0x8086, 0x3E92, 0x030000, driver="i915", group=group(2), boot_vga=True)
    host.pci("0000:00:14.0", 0x8086, 0xA36D, 0x0C0330, driver="xhci_hcd", group=group(3))
    host.pci("0000:00:1c.0", 0x8086, 0xA33C, 0x060400, driver="pcieport", group=group(4))
    host.pci("0000:00:1f.0", 0x8086, 0xA305, 0x060100, group=group(5))
    host.pci("0000:00:1f.3", 0x8086, 0xA348, 0x040300, driver="snd_hda_intel", group=group(5))
    host.pci("0000:01:00.0", 0x10DE, 0x1B80, 0x030000, driver="nouveau", group=group(1),
             boot_vga=False, subsystem=(0x1043, 0x8591))
    host.pci("0000:01:00.1", 0x10DE, 0x10F0, 0x040300, driver="snd_hda_intel", group=group(1),
             subsystem=(0x1043, 0x8591))
    host.pci("0000:02:00.0", 0x1002, 0x67DF, 0x030000, driver="amdgpu", group=group(4))
    host.pci("0000:03:00.0", 0x10EC, 0x8168, 0x020000, driver="r8169", group=group(4))
    host.file("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet intel_iommu=on\n")
    host.file("usr/share/misc/pci.ids", PCI_IDS_SAMPLE)
    return host


PCI_IDS_SAMPLE = """\
# sample of pci.ids
10de  NVIDIA Corporation
\t10f0  GP104 High Definition Audio Controller
\t1b80  GP104 [GeForce GTX 1080]
\t\t1043 8591  ROG STRIX GTX 1080
8086  Intel Corporation
\t3e92  CoffeeLake-S GT2 [UHD Graphics 630]
C 03  Display controller
\t00  VGA compatible controller
"""


def ready_host(root: Path, *, vendor: str = "GenuineIntel", cmdline: str | None = None,
               iommu: bool = True) -> FakeHost:
    """``desktop_host`` plus everything doctor wants: CPU flags, firmware table, kvm, vfio
    modules, QEMU, OVMF, libvirt, virt-manager, swtpm, a user in the libvirt group. Without
    ``iommu``: booted without the IOMMU (no groups, no DMAR line, no intel_iommu=on)."""
    host = desktop_host(root, iommu=iommu)
    flag = "vmx" if vendor == "GenuineIntel" else "svm"
    host.file("proc/cpuinfo", f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: Test CPU\n"
                              f"flags\t\t: fpu {flag} sse2\n\nprocessor\t: 1\n")
    host.file("sys/firmware/acpi/tables/DMAR" if flag == "vmx" else "sys/firmware/acpi/tables/IVRS")
    host.file("dev/kvm")
    host.file("proc/sys/kernel/osrelease", "6.1.0-test\n")
    host.file("proc/modules", "kvm_intel 380928 0 - Live 0x0\n")
    host.file("lib/modules/6.1.0-test/modules.dep",
              "kernel/drivers/vfio/vfio.ko.xz:\nkernel/drivers/vfio/vfio_iommu_type1.ko.xz: "
              "kernel/drivers/vfio/vfio.ko.xz\nkernel/drivers/vfio/pci/vfio-pci.ko.xz: "
              "kernel/drivers/vfio/vfio.ko.xz\n")
    host.file("lib/modules/6.1.0-test/modules.builtin", "")
    if cmdline is None:
        cmdline = ("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet "
                   + ("intel_iommu=on iommu=pt" if flag == "vmx" else "iommu=pt")) if iommu else \
            "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"
    host.file("proc/cmdline", cmdline + "\n")
    host.file("dev/kmsg", ("6,1,0,-;DMAR: IOMMU enabled\n" if iommu else "")
              + "6,2,0,-;Run /init as init process\n")
    for program in ("usr/bin/qemu-system-x86_64", "usr/sbin/libvirtd", "usr/bin/virt-manager",
                    "usr/bin/swtpm", "usr/bin/swtpm_setup"):
        host.file(program)
    host.file("usr/share/OVMF/OVMF_CODE_4M.fd")
    host.file("etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    host.file("etc/group", "root:x:0:\nlibvirt:x:120:alice\n")
    return host
