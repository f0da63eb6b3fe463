"""The seed's VM choices as in-place edits of a domain document (pure, idempotent).

Each function owns a few elements (formatdomain.html sections named in comments) and leaves
everything else alone, so `vm tune` can run on a domain made in virt-manager or virt-install.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vfiodesk.domxml.document import DomainDocument, Element, set_attributes
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciAddress
from vfiodesk.model.sizes import KIB
from vfiodesk.plan.pinning import PinningPlan

HYPERV_VENDOR_ID = "vfiodesk0000"  # 12 chars max; NVIDIA's old drivers refused VMs with "Microsoft Hv"


@dataclass(frozen=True)
class Disk:
    path: str
    format: str = "raw"  # raw | qcow2


@dataclass(frozen=True)
class Network:
    kind: str  # "network" | "macvtap"
    name: str  # network name or host interface


def tune_cpu(doc: DomainDocument, plan: PinningPlan) -> None:
    """vcpu, cputune pins and cpu topology (formatdomain.html#cpu-tuning, #cpu-model-and-topology)."""
    vcpus = len(plan.vcpu_pins)
    doc.set_text("vcpu", str(vcpus), placement="static")
    doc.set_text("iothreads", "1")
    cputune = doc.child("cputune")
    for old in cputune.findall("vcpupin") + cputune.findall("emulatorpin") + cputune.findall("iothreadpin"):
        doc.remove(old)
    for vcpu, host in plan.vcpu_pins:
        doc.append(cputune, "vcpupin", {"vcpu": str(vcpu), "cpuset": str(host)})
    doc.append(cputune, "emulatorpin", {"cpuset": str(plan.emulator_cpus)})
    doc.append(cputune, "iothreadpin", {"iothread": "1", "cpuset": str(plan.iothread_cpus)})
    cpu = doc.child("cpu")
    # host-passthrough needs KVM; TCG (type qemu) takes every feature it emulates with "maximum".
    cpu.attrib.clear()
    cpu.attrib.update({"mode": "host-passthrough", "check": "none", "migratable": "on"}
                      if doc.domain_type == "kvm" else {"mode": "maximum", "check": "none"})
    for model in cpu.findall("model"):
        doc.remove(model)
    topology = doc.child("topology", cpu)
    topology.attrib.update({"sockets": str(plan.guest.sockets), "dies": str(plan.guest.dies),
                            "cores": str(plan.guest.cores), "threads": str(plan.guest.threads)})


def tune_memory(doc: DomainDocument, memory: int, current: int | None, hugepages: bool) -> None:
    """memory/currentMemory with a balloon; hugepages backing (formatdomain.html#memory-backing)."""
    doc.set_text("memory", str(memory // KIB), unit="KiB")
    doc.set_text("currentMemory", str((current or memory) // KIB), unit="KiB")
    backing = doc.root.find("memoryBacking")
    if hugepages:
        doc.child("hugepages", doc.child("memoryBacking"))
    elif backing is not None and backing.find("hugepages") is not None:
        doc.remove(backing.find("hugepages"))  # type: ignore[arg-type]
    balloon = doc.child("memballoon", doc.devices)
    balloon.attrib.update({"model": "virtio"})


def tune_features(doc: DomainDocument, *, hypervclock: bool) -> None:
    """Hyper-V enlightenments kept (with a vendor_id) and the KVM signature hidden: the seed
    removed <hyperv> for NVIDIA's error 43; hiding KVM + a vendor_id keeps the speed."""
    features = doc.child("features")
    doc.child("acpi", features)
    doc.child("apic", features)
    hyperv = doc.child("hyperv", features)
    hyperv.set("mode", "custom")
    for name, extra in (("relaxed", {}), ("vapic", {}), ("spinlocks", {"retries": "8191"}),
                        ("vendor_id", {"value": HYPERV_VENDOR_ID})):
        set_attributes(doc.child(name, hyperv), {"state": "on", **extra})
    if doc.domain_type == "kvm":
        doc.child("hidden", doc.child("kvm", features)).set("state", "on")
    doc.child("vmport", features).set("state", "off")
    clock = doc.child("clock")
    clock.set("offset", "localtime")
    for name, attributes in (("rtc", {"tickpolicy": "catchup"}), ("pit", {"tickpolicy": "delay"}),
                             ("hpet", {"present": "no"})):
        set_attributes(doc.child("timer", clock, name=name), attributes)
    if hypervclock:
        doc.child("timer", clock, name="hypervclock").set("present", "yes")


def tune_storage(doc: DomainDocument, disk: Disk | None, isos: Sequence[str]) -> None:
    """VirtIO SCSI with an I/O thread; the disk with cache=none, io=native, discard=unmap;
    ISOs as SATA CD-ROMs (Windows setup reads them without extra drivers)."""
    controller = doc.child("controller", doc.devices, type="scsi", model="virtio-scsi")
    controller.set("index", controller.get("index", "0"))
    doc.child("driver", controller).set("iothread", "1")
    if disk is not None:
        found = _disk_by_source(doc, disk.path)
        element = doc.append(doc.devices, "disk") if found is None else found
        element.attrib.update({"type": "block" if disk.path.startswith("/dev/") else "file",
                               "device": "disk"})
        doc.child("driver", element).attrib.update(
            {"name": "qemu", "type": disk.format, "cache": "none", "io": "native", "discard": "unmap"})
        doc.child("source", element).attrib.update(
            {"dev" if disk.path.startswith("/dev/") else "file": disk.path})
        doc.child("target", element).attrib.update({"dev": "sda", "bus": "scsi"})
    for index, iso in enumerate(isos):
        found = _disk_by_source(doc, iso)
        element = doc.append(doc.devices, "disk") if found is None else found
        element.attrib.update({"type": "file", "device": "cdrom"})
        doc.child("driver", element).attrib.update({"name": "qemu", "type": "raw"})
        doc.child("source", element).set("file", iso)
        doc.child("target", element).attrib.update({"dev": f"sd{chr(ord('b') + index)}", "bus": "sata"})
        doc.child("readonly", element)


def _disk_by_source(doc: DomainDocument, path: str) -> Element | None:
    for element in doc.iter_devices("disk"):
        source = element.find("source")
        if source is not None and path in (source.get("file"), source.get("dev")):
            return element
    return None


def tune_network(doc: DomainDocument, network: Network | None) -> None:
    """A virtio NIC on a libvirt network, or macvtap in bridge mode (formatdomain.html#direct-
    attachment-to-physical-interface); an existing NIC just gets the virtio model."""
    interfaces = list(doc.iter_devices("interface"))
    if network is None:
        for element in interfaces:
            doc.child("model", element).set("type", "virtio")
        return
    kind = "direct" if network.kind == "macvtap" else "network"
    same_kind = [i for i in interfaces if i.get("type") == kind]
    element = same_kind[0] if same_kind else doc.append(doc.devices, "interface", {"type": kind})
    if kind == "direct":
        doc.child("source", element).attrib.update({"dev": network.name, "mode": "bridge"})
    else:
        doc.child("source", element).attrib.update({"network": network.name})
    doc.child("model", element).set("type", "virtio")


def tune_display(doc: DomainDocument) -> None:
    """QXL with SPICE on localhost for the install, and a USB tablet for the pointer."""
    if not list(doc.iter_devices("video")):
        doc.child("model", doc.append(doc.devices, "video")).attrib.update({"type": "qxl"})
    if not list(doc.iter_devices("graphics")):
        graphics = doc.append(doc.devices, "graphics", {"type": "spice", "autoport": "yes"})
        doc.child("listen", graphics).attrib.update({"type": "address", "address": "127.0.0.1"})
    doc.child("input", doc.devices, type="tablet", bus="usb")


def tune_hostdevs(doc: DomainDocument, addresses: Sequence[PciAddress], *, managed: bool) -> None:
    """A PCI hostdev per function (formatdomain.html#pci-devices); managed='yes' lets libvirt
    bind them itself, 'no' leaves it to vfiodesk's hook."""
    for address in addresses:
        found = _hostdev(doc, address)
        element = doc.append(doc.devices, "hostdev", {"mode": "subsystem", "type": "pci"}) \
            if found is None else found
        element.set("managed", "yes" if managed else "no")
        source = doc.child("source", element)
        doc.child("address", source).attrib.update({
            "domain": f"0x{address.domain:04x}", "bus": f"0x{address.bus:02x}",
            "slot": f"0x{address.slot:02x}", "function": f"0x{address.function:x}"})


def pci_hostdevs(doc: DomainDocument) -> list[tuple[Element, PciAddress]]:
    """PCI hostdevs with their source addresses (odd values are input errors, not crashes)."""
    found = []
    for element in doc.iter_devices("hostdev"):
        source = element.find("source/address")
        if element.get("type") == "pci" and source is not None:
            found.append((element, PciAddress(*(_hex(source.get(key, "0"))
                                                for key in ("domain", "bus", "slot", "function")))))
    return found


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise InputError(f"hostdev address value {text[:20]!r} is not a number",
                         "fix the <hostdev> source address (virsh edit)") from None


def hostdev_addresses(doc: DomainDocument) -> list[PciAddress]:
    return [address for _, address in pci_hostdevs(doc)]


def _hostdev(doc: DomainDocument, address: PciAddress) -> Element | None:
    return next((element for element, found in pci_hostdevs(doc) if found == address), None)


def post_install(doc: DomainDocument) -> None:
    """The seed's cleanup after Windows is installed: one CD-ROM left (on SCSI), no serial
    console, no IDE controller; the tablet stays."""
    cdroms = [disk for disk in doc.iter_devices("disk") if disk.get("device") == "cdrom"]
    for extra in cdroms[1:]:
        doc.remove(extra)
    if cdroms:
        target = doc.child("target", cdroms[0])
        target.attrib.update({"dev": "sdz", "bus": "scsi"})
        address = cdroms[0].find("address")
        if address is not None:
            doc.remove(address)  # a SATA drive address does not fit the SCSI bus
        source = cdroms[0].find("source")
        if source is not None:
            doc.remove(source)  # an empty drive: nothing mounted
    for tag in ("serial", "console"):
        for element in list(doc.iter_devices(tag)):
            doc.remove(element)
    for controller in list(doc.iter_devices("controller")):
        if controller.get("type") == "ide":
            doc.remove(controller)
