"""Boot-time binding: vfio-pci claims devices by ID before their usual drivers load.

vfio-pci's ``ids=`` option (drivers/vfio/pci/vfio_pci.c) makes it claim every device with those
IDs; ``softdep X pre: vfio-pci`` (modprobe.d(5)) loads it before driver X, also in the initramfs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vfiodesk import paths as P
from vfiodesk.errors import RefusedError, VfiodeskError
from vfiodesk.model.pci import PciDevice
from vfiodesk.plan.hostconfig.change import Argv, FileChange, HostPlan, decode, encode

MODPROBE_FILE = f"{P.ETC_MODPROBE_D}/vfiodesk-vfio.conf"
DRACUT_FILE = f"{P.ETC_DRACUT_CONF_D}/vfiodesk-vfio.conf"
MKINITCPIO_FILE = f"{P.ETC_MKINITCPIO_CONF_D}/vfiodesk-vfio.conf"
VFIO_MODULES = ("vfio_pci", "vfio", "vfio_iommu_type1")
REBUILD: Mapping[str, Argv] = {
    "initramfs-tools": ("update-initramfs", "-u", "-k", "all"),
    "dracut": ("dracut", "--force", "--regenerate-all"),
    "mkinitcpio": ("mkinitcpio", "-P"),
}
_MODULES_LINE_RE = re.compile(r"^MODULES=\((?P<inner>[^)]*)\)", re.MULTILINE)


@dataclass(frozen=True)
class InitramfsFacts:
    tool: str | None
    initramfs_tools_modules: bytes | None  # etc/initramfs-tools/modules
    mkinitcpio_conf: bytes | None
    mkinitcpio_dropins: bool  # etc/mkinitcpio.conf.d exists (mkinitcpio 36+)


def vfio_ids(selected: Sequence[PciDevice], devices: Sequence[PciDevice]) -> str:
    """``vendor:device,...`` for vfio-pci ids=; refused when a device we keep has the same IDs,
    since vfio-pci would take it too."""
    ids = sorted({device.ids for device in selected})
    twins = [device for device in devices if device not in selected and device.ids in ids]
    if twins:
        listed = ", ".join(f"{device.address} ({device.ids})" for device in twins)
        raise RefusedError(f"the host has other devices with the same IDs: {listed}; vfio-pci ids= "
                           "would take them at boot too",
                           "bind by address at runtime instead: vfiodesk bind (or the VM's hook)")
    return ",".join(ids)


# Drivers that claim a display function when it has none right now (it may be on vfio-pci).
_DISPLAY_DRIVERS: Mapping[int, tuple[str, ...]] = {
    0x10DE: ("nouveau", "nvidia"), 0x1002: ("amdgpu", "radeon"), 0x8086: ("i915",),
}


def softdep_modules(selected: Sequence[PciDevice], driver_modules: Mapping[str, str]) -> list[str]:
    """The modules vfio-pci must load before: each device's driver's module (driver_modules maps
    sysfs driver names to modules), or the usual GPU drivers for an unbound display function."""
    modules: list[str] = []
    for device in selected:
        if device.driver and device.driver != "vfio-pci":
            modules.append(driver_modules.get(device.driver, device.driver))
        elif device.is_display:
            modules += _DISPLAY_DRIVERS.get(device.vendor_id, ())
    return list(dict.fromkeys(modules))


def boot_gpu_warnings(selected: Sequence[PciDevice], encrypted: bool) -> tuple[str, ...]:
    boot = [device for device in selected if device.is_display and device.boot_vga]
    if not boot:
        return ()
    warning = (f"{boot[0].address} is the boot GPU: once vfio-pci takes it at boot, the early "
               "framebuffer and console on it go dark")
    if encrypted:
        warning += ("; the disk passphrase prompt (etc/crypttab) may then show on no screen. Keep "
                    "another GPU for the host's console, or bind at runtime instead")
    return (warning,)


def plan_modprobe(ids: str, modules: Sequence[str], builtin: frozenset[str], old: bytes | None) -> HostPlan:
    """The modprobe.d file: vfio-pci's IDs, loaded before each driver that would claim them."""
    lines = ["# vfiodesk host vfio-early: vfio-pci claims these devices at boot, before their",
             "# usual drivers (modprobe.d(5)). Remove with: vfiodesk host undo",
             f"options vfio-pci ids={ids}"]
    warnings = []
    for module in modules:
        if module.replace("-", "_") in builtin:
            warnings.append(f"{module} is built into the kernel and binds before vfio-pci loads: "
                            "boot-time binding cannot win for its devices; bind them at runtime")
        else:
            lines.append(f"softdep {module} pre: vfio-pci")
    change = FileChange(MODPROBE_FILE, old, encode("\n".join(lines) + "\n"))
    return HostPlan("vfio-early", (change,), warnings=tuple(warnings))


def plan_initramfs(facts: InitramfsFacts) -> HostPlan:
    """vfio-pci in the initramfs, so it is there when the GPU driver loads from it."""
    if facts.tool is None:
        return HostPlan("vfio-early", warnings=(
            "no initramfs tool found (initramfs-tools, dracut, mkinitcpio): if your GPU driver "
            "loads from the initramfs, add vfio_pci to it by hand",))
    if facts.tool == "initramfs-tools":
        change = _add_lines(P.ETC_INITRAMFS_TOOLS_MODULES, facts.initramfs_tools_modules)
    elif facts.tool == "dracut":
        change = FileChange(DRACUT_FILE, None, encode(
            "# vfiodesk host vfio-early: vfio-pci in the initramfs (dracut.conf(5))\n"
            f'force_drivers+=" {" ".join(VFIO_MODULES)} "\n'))
    elif facts.mkinitcpio_dropins:
        change = FileChange(MKINITCPIO_FILE, None, encode(
            "# vfiodesk host vfio-early: vfio-pci in the initramfs (mkinitcpio.conf(5))\n"
            f"MODULES+=({' '.join(VFIO_MODULES)})\n"))
    else:
        change = _mkinitcpio_modules(facts.mkinitcpio_conf)
    rebuild = REBUILD[facts.tool]
    return HostPlan("vfio-early", (change,), (rebuild,), (rebuild,),
                    notes=(f"initramfs: {facts.tool}, rebuilt with {' '.join(rebuild)}",))


def _add_lines(path: str, old: bytes | None) -> FileChange:
    text = decode(old or b"")
    present = {line.split("#", 1)[0].strip().replace("-", "_") for line in text.splitlines()}
    missing = [module for module in VFIO_MODULES if module not in present]
    if missing and text and not text.endswith("\n"):
        text += "\n"
    return FileChange(path, old, encode(text + "".join(f"{module}\n" for module in missing)))


def _mkinitcpio_modules(old: bytes | None) -> FileChange:
    text = decode(old or b"")
    match = _MODULES_LINE_RE.search(text)
    if match is None:
        raise VfiodeskError(f"/{P.ETC_MKINITCPIO_CONF} has no one-line MODULES=(...) to add vfio-pci to",
                            f"add {' '.join(VFIO_MODULES)} to MODULES by hand, first in the list")
    present = match["inner"].split()
    missing = [module for module in VFIO_MODULES if module not in present]
    inner = " ".join([*missing, *present])  # before the GPU drivers (Arch wiki: PCI passthrough)
    new = text[:match.start("inner")] + inner + text[match.end("inner"):] if missing else text
    return FileChange(P.ETC_MKINITCPIO_CONF, old, encode(new))
