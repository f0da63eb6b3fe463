"""The lab machine: QEMU arguments for the IOMMU and the default device layout.

The layout mirrors a passthrough desktop (../shared/lab/RECIPE.md): a GPU-shaped VGA + HDA
multifunction card on its own root port (one IOMMU group, like a GPU and its HDMI audio), an
xHCI controller alone on another root port, two "strangers" behind a PCIe-to-PCI bridge
(conventional PCI cannot isolate functions, so they share one group), and a NIC.
"""

from __future__ import annotations

from typing import Literal

IommuKind = Literal["intel", "amd"]
IOMMU_KINDS: tuple[IommuKind, ...] = ("intel", "amd")

# kernel-irqchip=split: the emulated IOMMU remaps interrupts (intremap) only with a split irqchip.
MACHINE_ARGS = ("-machine", "q35,kernel-irqchip=split")
IOMMU_DEVICE_ARGS: dict[IommuKind, tuple[str, ...]] = {
    # caching-mode=on lets vfio inside the guest work with the emulated VT-d.
    "intel": ("-device", "intel-iommu,intremap=on,caching-mode=on"),
    "amd": ("-device", "amd-iommu,intremap=on"),
}
# amd_iommu=on is a common mistake (the kernel logs "AMD-Vi: Unknown option"); AMD needs nothing.
IOMMU_KERNEL_ARGS: dict[IommuKind, tuple[str, ...]] = {"intel": ("intel_iommu=on",), "amd": ()}

DEFAULT_DEVICE_ARGS: tuple[str, ...] = (
    "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-device", "VGA,bus=rp1,addr=0.0,multifunction=on",
    "-device", "ich9-intel-hda,bus=rp1,addr=0.1",
    "-audiodev", "none,id=snd0",  # without a backend QEMU floods the log with ALSA errors
    "-device", "hda-duplex,audiodev=snd0",
    "-device", "pcie-root-port,id=rp2,chassis=2,slot=2",
    "-device", "qemu-xhci,bus=rp2",
    "-device", "pcie-root-port,id=rp3,chassis=3,slot=3",
    "-device", "pcie-pci-bridge,id=pcibr1,bus=rp3",
    "-device", "pci-serial,bus=pcibr1,addr=1.0",
    "-device", "pci-serial-2x,bus=pcibr1,addr=2.0",
    "-netdev", "user,id=net0",
    "-device", "e1000,netdev=net0",
)

# Where the default layout's devices land in the guest (bus numbers follow the root ports).
GPU_ADDRESS = "0000:01:00.0"
GPU_AUDIO_ADDRESS = "0000:01:00.1"
USB_ADDRESS = "0000:02:00.0"
STRANGER_ADDRESSES = ("0000:04:01.0", "0000:04:02.0")


def qemu_args(iommu: IommuKind, *, bare: bool, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """QEMU arguments for the lab machine."""
    devices = () if bare else DEFAULT_DEVICE_ARGS
    return (*MACHINE_ARGS, *IOMMU_DEVICE_ARGS[iommu], *devices, *extra)
