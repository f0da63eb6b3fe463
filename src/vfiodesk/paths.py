"""Every absolute host path vfiodesk reads or writes, resolved under one root.

A root of ``/`` is the real host; any other directory is a fake tree, an extracted
snapshot, or a staging area, and every probe and writer treats them the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "VFIODESK_ROOT"

# Relative to the root, so that joining never escapes it.
SYS_PCI_DEVICES = "sys/bus/pci/devices"
SYS_PCI_DRIVERS = "sys/bus/pci/drivers"
SYS_PCI_DRIVERS_PROBE = "sys/bus/pci/drivers_probe"
SYS_PCI_RESCAN = "sys/bus/pci/rescan"
SYS_IOMMU_GROUPS = "sys/kernel/iommu_groups"
SYS_CPU = "sys/devices/system/cpu"
SYS_NODE = "sys/devices/system/node"
SYS_HUGEPAGES = "sys/kernel/mm/hugepages"
SYS_FIRMWARE_ACPI_TABLES = "sys/firmware/acpi/tables"
SYS_MODULE = "sys/module"
SYS_VTCONSOLE = "sys/class/vtconsole"
SYS_CLASS_BLOCK = "sys/class/block"
SYS_CLASS_NET = "sys/class/net"
SYS_PLATFORM_DRIVERS = "sys/bus/platform/drivers"
PROC = "proc"
PROC_CMDLINE = "proc/cmdline"
PROC_CPUINFO = "proc/cpuinfo"
PROC_MEMINFO = "proc/meminfo"
PROC_MODULES = "proc/modules"
PROC_MOUNTS = "proc/mounts"
PROC_SELF_MOUNTINFO = "proc/self/mountinfo"
PROC_NET_ROUTE = "proc/net/route"
PROC_SYS_KERNEL_OSRELEASE = "proc/sys/kernel/osrelease"
DEV_KVM = "dev/kvm"
DEV_VFIO = "dev/vfio"
DEV_KMSG = "dev/kmsg"
DEV_DRI = "dev/dri"
ETC_OS_RELEASE = "etc/os-release"
ETC_GROUP = "etc/group"
ETC_LIBVIRT_HOOKS = "etc/libvirt/hooks"
ETC_LIBVIRT_NETWORKS_AUTOSTART = "etc/libvirt/qemu/networks/autostart"
LIB_MODULES = "lib/modules"
RUN_VFIODESK = "run/vfiodesk"
RUN_LIBVIRT_QEMU = "run/libvirt/qemu"  # <domain>.pid of each running QEMU
VAR_LIB_VFIODESK = "var/lib/vfiodesk"
VAR_CACHE_LIBVIRT_QEMU_CAPS = "var/cache/libvirt/qemu/capabilities"  # libvirt's probe of each QEMU
PROC_BOOT_ID = "proc/sys/kernel/random/boot_id"  # changes at every boot
RUN_SYSTEMD_SYSTEM = "run/systemd/system"  # exists when systemd runs the host (sd_booted(3))
# Host configuration (vfiodesk host ...): boot loaders, initramfs, services.
SYS_FIRMWARE_EFI = "sys/firmware/efi"
ETC_DEFAULT_GRUB = "etc/default/grub"
ETC_DEFAULT_GRUB_D = "etc/default/grub.d"  # *.cfg, sourced after etc/default/grub
ETC_KERNEL_CMDLINE = "etc/kernel/cmdline"  # kernel-install(8)
LOADER_ENTRY_DIRS = ("boot/loader/entries", "efi/loader/entries", "boot/efi/loader/entries")
UKI_DIRS = ("boot/EFI/Linux", "efi/EFI/Linux", "boot/efi/EFI/Linux")
BOOT_EFI_EFI = "boot/efi/EFI"  # <distro>/grub.cfg on EFI systems
RUN_OSTREE_BOOTED = "run/ostree-booted"
ETC_KERNELSTUB_CONFIG = "etc/kernelstub/configuration"
ETC_MODPROBE_D = "etc/modprobe.d"
ETC_INITRAMFS_TOOLS_MODULES = "etc/initramfs-tools/modules"
ETC_DRACUT_CONF_D = "etc/dracut.conf.d"
ETC_MKINITCPIO_CONF = "etc/mkinitcpio.conf"
ETC_MKINITCPIO_CONF_D = "etc/mkinitcpio.conf.d"
ETC_CRYPTTAB = "etc/crypttab"
ETC_SYSCTL_D = "etc/sysctl.d"
ETC_NETWORKMANAGER = "etc/NetworkManager"
ETC_PULSE_DEFAULT_PA = "etc/pulse/default.pa"
ETC_PIPEWIRE_PULSE_D = "etc/pipewire/pipewire-pulse.conf.d"
ETC_LIBVIRT_QEMU_CONF = "etc/libvirt/qemu.conf"
ETC_PASSWD = "etc/passwd"
# QEMU firmware descriptors (docs/interop/firmware.json), searched in this order; libvirt reads
# the same folders to pick the firmware of <os firmware="efi">.
QEMU_FIRMWARE_DIRS = ("etc/qemu/firmware", "usr/share/qemu/firmware")
LIBVIRT_NVRAM = "var/lib/libvirt/qemu/nvram"  # libvirt's per-VM varstores: NAME_VARS.fd
# Where distributions put the OVMF (x86_64 UEFI) firmware for QEMU.
OVMF_CANDIDATES = (
    "usr/share/OVMF/OVMF_CODE_4M.fd",  # Debian 12+, Ubuntu 22.04+
    "usr/share/OVMF/OVMF_CODE.fd",  # older Debian/Ubuntu
    "usr/share/edk2/ovmf/OVMF_CODE.fd",  # Fedora
    "usr/share/edk2/x64/OVMF_CODE.4m.fd",  # Arch
    "usr/share/edk2-ovmf/x64/OVMF_CODE.fd",  # older Arch
    "usr/share/qemu/ovmf-x86_64-code.bin",  # openSUSE
)
QEMU_C_VIRTIOFSD = "usr/lib/qemu/virtiofsd"  # QEMU <= 7.2 ships its C virtio-fs daemon here
BIN_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin", "usr/local/sbin")
PCI_IDS_CANDIDATES = (
    "usr/share/hwdata/pci.ids",
    "usr/share/misc/pci.ids",
    "usr/share/pci.ids",
)


@dataclass(frozen=True)
class HostPaths:
    """Resolves host paths under ``root``."""

    root: Path = Path("/")

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> HostPaths:
        """The root given, else ``$VFIODESK_ROOT``, else ``/``."""
        chosen = root if root is not None else os.environ.get(ROOT_ENV) or "/"
        return cls(Path(chosen))

    @property
    def is_real_host(self) -> bool:
        """True when the root is the running system, where external commands may run."""
        return self.root.resolve() == Path("/")

    def __call__(self, relative: str, *parts: str) -> Path:
        return self.root.joinpath(relative, *parts)

    def pci_device(self, address: str) -> Path:
        return self(SYS_PCI_DEVICES, address)
