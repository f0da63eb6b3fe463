"""A VM request (CLI options or a TOML profile), validated, and the domain it makes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vfiodesk.domxml import tune
from vfiodesk.domxml.document import DomainDocument
from vfiodesk.domxml.metadata import Binding, HugepagesMode, RecordedDevice, VmManagement
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciDevice, parse_pci_pattern
from vfiodesk.model.sizes import DISK_SIZE, GIB, VM_MEMORY, VM_MEMORY_CURRENT, parse_size
from vfiodesk.plan.guest import GuestFeatures
from vfiodesk.plan.pinning import PinningPlan
from vfiodesk.plan.profile import read_profile

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$")
# Pool and volume names as vfiodesk accepts them (libvirt forbids '/' in both).
_LIBVIRT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$")
VIRTIO_DRIVER_FOLDER = r"vioscsi\w10\amd64"


@dataclass(frozen=True)
class DiskSpec:
    path: str | None = None  # an existing file or block device (or, with new, the one to make)
    pool: str | None = None  # or a new volume POOL/VOL
    volume: str | None = None
    size: int = 60 * GIB
    format: str = "raw"
    new: bool = False  # path=...,size=...: a new volume in the pool of path's directory


@dataclass(frozen=True)
class VmRequest:
    name: str
    cpus: int | None = None
    memory: str = "8G"
    memory_current: str | None = None
    disk: str | None = None
    iso: str | None = None
    virtio_iso: str | None = None
    gpu: str | None = None
    usb_controller: str | None = None
    chipset: str = "q35"
    network: str | None = "default"
    hugepages: bool = False
    hypervclock: bool = True
    domain_type: str | None = None
    managed: bool = True  # hostdevs bound by libvirt; False: by vfiodesk's hook
    single_gpu: bool = False  # the GPU is the host's only one: the hook stops and restarts the desktop
    # win11: TPM 2.0 + Secure Boot with the 2023 keys; win10: the seed's choices; None (vm tune):
    # whatever the domain is.
    os: str | None = "win11"
    balloon: bool | None = None  # None: off for passthrough VMs (VFIO pins all RAM), on otherwise
    nested: bool = False  # hv-evmcs for Hyper-V/WSL2/VBS inside the guest (Intel only)

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise InputError(f"{self.name!r} is not a usable domain name",
                             "use letters, digits, '.', '_', '+', '-' (up to 63)")
        if self.chipset not in ("q35", "i440fx"):
            raise InputError(f"unknown chipset {self.chipset!r}", "use q35 or i440fx")
        if self.os not in (None, "win11", "win10"):
            raise InputError(f"unknown OS {self.os!r}", "use win11 or win10")
        if self.os == "win11" and self.chipset != "q35":
            # OVMF's Secure Boot builds need SMM, which QEMU gives q35 only (firmware descriptors
            # list pc-q35-* as their only machines).
            raise InputError("Windows 11 needs Secure Boot, which OVMF offers on q35 only",
                             "drop --chipset i440fx, or make a Windows 10 VM: --os win10")
        if self.domain_type not in (None, "kvm", "qemu"):
            raise InputError(f"unknown domain type {self.domain_type!r}", "use kvm or qemu")
        memory = parse_size(self.memory, default_unit="M", limits=VM_MEMORY)
        if self.memory_current and \
                parse_size(self.memory_current, default_unit="M", limits=VM_MEMORY_CURRENT) > memory:
            raise InputError("--memory-current is larger than --memory", "the balloon can only shrink")
        parse_disk(self.disk)
        for option, iso in (("--iso", self.iso), ("--virtio-iso", self.virtio_iso)):
            if iso:
                absolute_path(iso, option)
        parse_network(self.network)
        for pattern in (self.gpu, self.usb_controller):
            if pattern:
                parse_pci_pattern(pattern)
        if self.single_gpu and self.managed:
            raise InputError("--single-gpu needs the hook to bind the GPU, not libvirt",
                             "leave --binding libvirt out (--single-gpu implies --binding vfiodesk)")


def load_profile(path: Path, name: str) -> VmRequest:
    """A TOML profile whose keys are the options' names (memory = "8G", gpu = "01:00", ...)."""
    return VmRequest(name=name, **read_profile(path, VmRequest, leave_out=("name",)))


def merge(profile: VmRequest, overrides: dict[str, Any]) -> VmRequest:
    """Command-line options win over the profile's values."""
    return replace(profile, **{key: value for key, value in overrides.items() if value is not None})


def parse_disk(text: str | None) -> DiskSpec | None:
    """``PATH``, ``POOL/VOL,size=60G,format=raw|qcow2``, or virt-install's spelling
    ``path=/dir/vol.qcow2,size=80,format=qcow2`` (size in GiB unless it has a unit)."""
    if not text:
        return None
    head, *options = text.split(",")
    virt_install = head.startswith("path=")
    if virt_install:
        head = head.removeprefix("path=")
        if not head.startswith("/") or head.endswith("/"):
            raise InputError(f"disk path={head!r} is not an absolute file path",
                             "e.g. --disk path=/var/lib/libvirt/images/win10.qcow2,size=80,format=qcow2")
    settings: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("size", "format"):
            raise InputError(f"disk option {option!r} is not size=... or format=...",
                             "e.g. --disk default/win10.qcow2,size=60G,format=qcow2")
        settings[key] = value
    volume_format = settings.get("format", "raw")
    if volume_format not in ("raw", "qcow2"):
        raise InputError(f"disk format {volume_format!r} is not raw or qcow2",
                         "use format=raw or format=qcow2")
    size = parse_size(settings.get("size", "60G"), default_unit="G", limits=DISK_SIZE)
    if virt_install and "size" in settings:
        return DiskSpec(path=absolute_path(head, "--disk path="), size=size, format=volume_format, new=True)
    if head.startswith(("/", ".", "~")):
        if "size" in settings:
            raise InputError("size= applies to new volumes (POOL/VOL), not to an existing file",
                             "drop size=, or create the volume through a pool")
        return DiskSpec(path=absolute_path(head, "--disk"), format=volume_format)
    pool, sep, volume = head.partition("/")
    if not sep or not _LIBVIRT_NAME.match(pool) or not _LIBVIRT_NAME.match(volume):
        raise InputError(f"disk {head[:80]!r} is neither an absolute path nor POOL/VOL",
                         "e.g. --disk /var/lib/libvirt/images/win.img or --disk default/win.img,size=60G")
    return DiskSpec(pool=pool, volume=volume, size=size, format=volume_format)


def absolute_path(text: str, option: str) -> str:
    """A path written into the domain: absolute and printable, as libvirt resolves it (a
    relative path would be read from libvirtd's working directory, not the user's)."""
    if any(ord(char) < 0x20 or char == "\x7f" for char in text):
        raise InputError(f"{option} {text[:80]!r} holds control characters", "give a plain file path")
    if not text.startswith("/"):
        raise InputError(f"{option} {text[:80]} is not an absolute path",
                         f"give the full path, e.g. {option} {os.path.abspath(os.path.expanduser(text))}")
    return text


def parse_network(text: str | None) -> tune.Network | None:
    if not text:
        return None
    if text.startswith("macvtap:"):
        interface = text.removeprefix("macvtap:")
        if not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", interface):
            raise InputError(f"{interface!r} is not a network interface name", "e.g. macvtap:enp3s0")
        return tune.Network("macvtap", interface)
    if not re.match(r"^[A-Za-z0-9_.-]+$", text):
        raise InputError(f"{text!r} is not a libvirt network name", "e.g. default, or macvtap:enp3s0")
    return tune.Network("network", text)


def nvram_path(name: str) -> str:
    """Where libvirt keeps a VM's varstore (it picks the same name when <nvram> is absent)."""
    return f"/var/lib/libvirt/qemu/nvram/{name}_VARS.fd"


def new_domain(request: VmRequest, domain_type: str) -> DomainDocument:
    """The skeleton every created VM starts from: UEFI firmware chosen by libvirt from QEMU's
    firmware descriptors (formatdomain.html#bios-bootloader): for win11 one with Secure Boot
    and Microsoft's keys enrolled, and our own per-VM varstore that adds the 2023 keys."""
    doc = DomainDocument.create(domain_type)
    doc.append(doc.root, "name", text=request.name)
    os_element = doc.append(doc.root, "os", {"firmware": "efi"})
    machine = "q35" if request.chipset == "q35" else "pc"
    doc.append(os_element, "type", {"arch": "x86_64", "machine": machine}, "hvm")
    firmware = doc.append(os_element, "firmware")
    if request.os == "win11":
        doc.append(firmware, "feature", {"enabled": "yes", "name": "enrolled-keys"})
        doc.append(firmware, "feature", {"enabled": "yes", "name": "secure-boot"})
        doc.append(os_element, "nvram", text=nvram_path(request.name))
    else:
        # Windows 10 needs no Secure Boot; asking for it would also require SMM on q35.
        doc.append(firmware, "feature", {"enabled": "no", "name": "secure-boot"})
    doc.append(os_element, "boot", {"dev": "hd"})
    doc.append(os_element, "boot", {"dev": "cdrom"})
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        doc.append(doc.root, event, text=action)
    doc.append(doc.root, "devices")
    return doc


def plan_tuning(doc: DomainDocument, request: VmRequest, plan: PinningPlan, passed: list[PciDevice],
                disk_path: str | None, disk_format: str, features: GuestFeatures) -> DomainDocument:
    """Apply every tuning of the seed to a new domain ``doc``."""
    memory = parse_size(request.memory, default_unit="M", limits=VM_MEMORY)
    current = (parse_size(request.memory_current, default_unit="M", limits=VM_MEMORY_CURRENT)
               if request.memory_current else None)
    tune.tune_cpu(doc, plan, features)
    tune.tune_memory(doc, memory, current or memory, request.hugepages)
    # With a VFIO device QEMU pins every page of guest RAM at start (the IOMMU maps it all), so
    # a balloon cannot give memory back to the host: passthrough VMs get none unless asked
    # (--balloon, or a --memory-current target, which vm create warns about).
    default = not passed or current is not None
    tune.add_balloon(doc, request.balloon if request.balloon is not None else default)
    tune.tune_features(doc, features, hypervclock=request.hypervclock)
    if request.os == "win11":
        tune.tune_windows11(doc)
    if request.os is not None:
        tune.set_windows_version(doc, request.os)
    tune.tune_storage(doc, tune.Disk(disk_path, disk_format) if disk_path else None,
                      [iso for iso in (request.iso, request.virtio_iso) if iso])
    tune.tune_network(doc, parse_network(request.network))
    tune.tune_display(doc)
    tune.tune_hostdevs(doc, [device.address for device in passed], managed=request.managed)
    doc.set_management(VmManagement(
        binding="libvirt" if request.managed else "vfiodesk",
        hugepages="runtime" if request.hugepages else "none",
        devices=tuple(recorded_device(device) for device in passed),
        single_gpu=request.single_gpu))
    return doc


def recorded_device(device: PciDevice) -> RecordedDevice:
    """What drift detection compares at each start."""
    return RecordedDevice(device.address, device.vendor_id, device.device_id, device.subsystem_vendor_id,
                          device.subsystem_device_id, device.iommu_group)


@dataclass(frozen=True)
class TuneRequest:
    """`vm tune` options; None keeps what the domain has."""

    memory: str | None = None
    memory_current: str | None = None
    hugepages: bool | None = None
    binding: Binding | None = None
    isolate_cpus: bool | None = None
    post_install: bool = False
    display: str | None = None  # "gpu-only" | "emulated"
    single_gpu: bool | None = None

    def sizes(self) -> tuple[int | None, int | None]:
        memory = parse_size(self.memory, default_unit="M") if self.memory else None
        current = parse_size(self.memory_current, default_unit="M") if self.memory_current else None
        if memory is not None and current is not None and current > memory:
            raise InputError("--memory-current is larger than --memory", "the balloon can only shrink")
        return memory, current


def plan_retune(doc: DomainDocument, request: TuneRequest, plan: PinningPlan,
                recorded: tuple[RecordedDevice, ...] | None, features: GuestFeatures) -> list[str]:
    """The seed's tuning on an existing domain, keeping the user's choices; ``recorded``
    replaces the hardware record (None keeps it). Returns notes for the user."""
    memory, current = request.sizes()
    notes = [f"left alone: {note}" for note in tune.left_alone(doc)]
    tune.tune_cpu(doc, plan, features)
    notes += tune.tune_memory(doc, memory, current, request.hugepages)
    tune.tune_features(doc, features, hypervclock=True)
    if tune.windows_version(doc) == "win11":
        tune.tune_windows11(doc)
    else:
        tune.tune_secure_boot_smm(doc)
    tune.tune_storage(doc, None, [], controller=False)
    tune.tune_network(doc, None)
    tune.add_tablet(doc)
    if request.post_install:
        tune.post_install(doc)
    if request.display == "gpu-only":
        removed = tune.gpu_display_only(doc)
        if removed:
            notes.append(f"emulated display removed ({', '.join(removed)}); bring it back with "
                         f"vfiodesk vm tune {doc.name or 'NAME'} --emulated-display")
    elif request.display == "emulated":
        added = tune.emulated_display(doc)
        if added:
            notes.append(f"emulated display added: {', '.join(added)}")
    old = doc.management()
    single_gpu = request.single_gpu if request.single_gpu is not None else bool(old and old.single_gpu)
    if single_gpu and request.binding == "libvirt":
        raise InputError("--single-gpu needs the hook to bind the GPU, not libvirt",
                         "leave --binding libvirt out (--single-gpu implies --binding vfiodesk)")
    binding: Binding = "vfiodesk" if single_gpu else request.binding or (
        old.binding if old else "vfiodesk" if tune.infer_binding(doc) == "vfiodesk" else "libvirt")
    notes += tune.agree_managed(doc, binding == "libvirt")
    hugepages: HugepagesMode = ("runtime" if request.hugepages else "none") if request.hugepages is not None \
        else (old.hugepages if old else "none")
    isolate = request.isolate_cpus if request.isolate_cpus is not None else bool(old and old.isolate_cpus)
    doc.set_management(VmManagement(binding, hugepages, isolate,
                                    recorded if recorded is not None else (old.devices if old else ()),
                                    single_gpu))
    return notes


def check_single_gpu(passed: list[PciDevice]) -> None:
    """--single-gpu is the way to pass the host's boot GPU; for any other GPU it means nothing."""
    boot = [device for device in passed if device.is_display and device.boot_vga]
    if not boot:
        raise InputError("--single-gpu is for the host's boot GPU (the one showing its console), and "
                         "the VM is given no such GPU",
                         "pass the boot GPU with --gpu, or leave --single-gpu out for a second card")
