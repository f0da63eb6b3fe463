"""The seed's VM choices as in-place edits of a domain document (pure, idempotent).

Each function owns a few elements (formatdomain.html sections named in comments) and leaves
everything else alone, so `vm tune` can run on a domain made in virt-manager, virt-install
or by hand. On an existing domain an edit adds what is missing and keeps what the user chose
(a vendor_id, a clock offset, a NIC model, hugepages); only an option overrides a choice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vfiodesk.domxml.document import DomainDocument, Element, set_attributes
from vfiodesk.domxml.hostdevs import pci_hostdevs
from vfiodesk.errors import InputError, RefusedError
from vfiodesk.model.pci import PciAddress
from vfiodesk.plan.guest import EVMCS, TIMERS, GuestFeatures
from vfiodesk.plan.pinning import PinningPlan

LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"  # what virt-install/virt-manager write
_WIN_NAME = re.compile(r"win(?:dows)?[-_ ]?(1[01])(?!\d)", re.IGNORECASE)
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
_TOP_ORDER = ("name", "uuid", "title", "description", "metadata", "memory", "currentMemory",
              "memoryBacking", "vcpu", "iothreads", "cputune")


@dataclass(frozen=True)
class Disk:
    path: str
    format: str = "raw"  # raw | qcow2


@dataclass(frozen=True)
class Network:
    kind: str  # "network" | "macvtap"
    name: str  # network name or host interface


def _after(tag: str) -> tuple[str, ...]:
    """Top-level tags a new ``tag`` goes after, in libvirt's own output order."""
    return _TOP_ORDER[:_TOP_ORDER.index(tag)]


def _count(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def tune_cpu(doc: DomainDocument, plan: PinningPlan, features: GuestFeatures) -> None:
    """vcpu, cputune pins, cpu topology and features (formatdomain.html#cpu-tuning,
    #cpu-model-and-topology). Pins are edited in place, so the user's other <cputune> settings
    stay; a feature or cache element the user wrote stays as written."""
    vcpus = len(plan.vcpu_pins)
    vcpu = doc.set_text("vcpu", str(vcpus), after=_after("vcpu"))
    if vcpu.get("placement") is None:
        vcpu.set("placement", "static")
    iothreads = doc.child("iothreads", after=_after("iothreads"))
    if not _count(iothreads.text):
        iothreads.text = "1"
    # Threads are numbered 1..N unless <iothreadids> names them (formatdomain.html#iothreads-allocation).
    thread_ids = [str(e.get("id")) for e in doc.root.findall("iothreadids/iothread") if e.get("id")] \
        or [str(i) for i in range(1, (_count(iothreads.text) or 1) + 1)]
    cputune = doc.child("cputune", after=_after("cputune"))
    pins = [("vcpupin", "vcpu", str(vcpu_id), str(host)) for vcpu_id, host in plan.vcpu_pins]
    pins.append(("emulatorpin", "", "", str(plan.emulator_cpus)))
    pins += [("iothreadpin", "iothread", i, str(plan.iothread_cpus)) for i in thread_ids]
    wanted = {(tag, key, value) for tag, key, value, _ in pins}
    for tag, key in (("vcpupin", "vcpu"), ("iothreadpin", "iothread")):
        for old in cputune.findall(tag):
            if (tag, key, old.get(key)) not in wanted:
                doc.remove(old)
    order = ("vcpupin", "emulatorpin", "iothreadpin")
    for tag, key, value, cpuset in pins:
        match = {key: value} if key else {}
        pin = doc.child(tag, cputune, after=order[:order.index(tag) + 1], **match)
        if pin.get("cpuset") != cpuset:
            pin.set("cpuset", cpuset)
    cpu = doc.child("cpu", after=("features",))
    # host-passthrough needs KVM; TCG (type qemu) takes every feature it emulates with "maximum".
    mode = "host-passthrough" if doc.domain_type == "kvm" else "maximum"
    if cpu.get("mode") != mode:
        for attribute in ("match", "migratable"):  # match is for custom models only
            if attribute in cpu.attrib:
                del cpu.attrib[attribute]
        set_attributes(cpu, {"mode": mode, "check": "none"})
        for model in cpu.findall("model"):
            doc.remove(model)
    topology = doc.child("topology", cpu)
    wanted_topology = {"sockets": str(plan.guest.sockets), "cores": str(plan.guest.cores),
                       "threads": str(plan.guest.threads)}
    if topology.get("dies") is not None or plan.guest.dies != 1:
        wanted_topology["dies"] = str(plan.guest.dies)
    set_attributes(topology, wanted_topology)
    if features.cache_passthrough and cpu.find("cache") is None:
        doc.child("cache", cpu, after=("topology",)).set("mode", "passthrough")
    for name, _why in features.cpu_features:
        if cpu.find(f"feature[@name='{name}']") is None:
            doc.append(cpu, "feature", {"policy": "require", "name": name})
    # QEMU's migratable=on drops unmigratable features such as invtsc; a VM with a VFIO device
    # cannot migrate anyway.
    if cpu.find("feature[@name='invtsc'][@policy='require']") is not None and cpu.get("migratable") == "on":
        cpu.set("migratable", "off")


# --- memory (formatdomain.html#memory-allocation) ---------------------------------------------

def _unit_scale(unit: str) -> int | None:
    """Bytes per ``unit`` as libvirt reads it (virScaleInteger: case-insensitive, KB = 1000,
    k = KiB = 1024), or None for a unit libvirt does not know."""
    lower = unit.strip().lower()
    if lower in ("b", "byte", "bytes"):
        return 1
    powers = "kmgtpe"
    if not lower or lower[0] not in powers or lower[1:] not in ("", "ib", "b"):
        return None
    base = 1000 if lower[1:] == "b" else 1024
    return int(base ** (powers.index(lower[0]) + 1))


def read_size(element: Element) -> int:
    """Bytes in <memory>, <currentMemory> and the like (unit default KiB)."""
    unit = element.get("unit", "KiB")
    scale = _unit_scale(unit)
    number = _count(element.text)
    if scale is None or number is None:
        raise InputError(f"<{element.tag}> says {element.text!r} {unit!r}, not a size libvirt reads",
                         "fix it (virsh edit): a whole number and a unit such as KiB, MiB or GiB")
    return number * scale


def write_size(element: Element, size: int) -> str | None:
    """Write ``size`` in the element's own unit; a note when that unit cannot hold it exactly."""
    if element.text is None and element.get("unit") is None:
        element.set("unit", "KiB")  # a new element says its unit
    unit = element.get("unit", "KiB")
    scale = _unit_scale(unit) or 1024
    note = None
    if size % scale:
        note = f"<{element.tag}>: {size} bytes is not a whole number of {unit}; written in KiB"
        unit, scale = "KiB", 1024
        element.set("unit", unit)
    if element.text is None or _count(element.text) != size // scale:
        element.text = str(size // scale)
    return note


def tune_memory(doc: DomainDocument, memory: int | None, current: int | None,
                hugepages: bool | None) -> list[str]:
    """<memory> with ``memory``, <currentMemory> with ``current`` (each only when given), and
    hugepages backing added (True), removed (False) or left as it is (None)."""
    notes = []
    if memory is not None:
        notes.append(write_size(doc.child("memory", after=_after("memory")), memory))
    if current is not None:
        notes.append(write_size(doc.child("currentMemory", after=_after("currentMemory")), current))
    found_memory, found_current = doc.root.find("memory"), doc.root.find("currentMemory")
    if found_memory is not None and found_current is not None and \
            read_size(found_current) > read_size(found_memory):
        raise InputError("<currentMemory> would be larger than <memory>",
                         "give --memory-current too, at most --memory")
    backing = doc.root.find("memoryBacking")
    if hugepages:
        doc.child("hugepages", doc.child("memoryBacking", after=_after("memoryBacking")))
    elif hugepages is False and backing is not None:
        for element in backing.findall("hugepages"):
            doc.remove(element)
        if not [child for child in backing if isinstance(child.tag, str)]:
            doc.remove(backing)
    return [note for note in notes if note]


def add_balloon(doc: DomainDocument, balloon: bool = True) -> None:
    """A virtio balloon on a new VM (libvirt adds the same when none is written), or an explicit
    model='none'."""
    if not list(doc.iter_devices("memballoon")):
        doc.append(doc.devices, "memballoon", {"model": "virtio" if balloon else "none"})


# --- features and clock (formatdomain.html#hypervisor-features, #time-keeping) ----------------

def tune_features(doc: DomainDocument, features: GuestFeatures, *, hypervclock: bool) -> None:
    """The Hyper-V enlightenments of ``features`` (plan/guest.py says why each), the KVM signature
    hidden and the Windows timers. The seed removed <hyperv> for NVIDIA's error 43; hiding KVM
    and a vendor_id keeps the speed. Only what is missing is added: a user's state, retries,
    vendor_id and timers stay."""
    root_features = doc.child("features", after=(*_after("cputune"), "cputune", "os"))
    doc.child("acpi", root_features)
    doc.child("apic", root_features)
    hyperv = root_features.find("hyperv")
    if hyperv is None:
        hyperv = doc.append(root_features, "hyperv", {"mode": "custom"})
    if hyperv.get("mode") != "passthrough":  # passthrough already has every one the host offers
        for wanted in features.enlightenments:
            if wanted.name == "stimer" and not hypervclock:
                continue  # hv-stimer needs hv-time (hyperv.rst)
            element = doc.child(wanted.name, hyperv)
            if element.get("state") == "off":
                continue  # the user's choice
            set_attributes(element, {key: value for key, value in (("state", "on"), *wanted.attributes)
                                     if not element.get(key)})
            if wanted.direct and element.find("direct") is None:
                doc.append(element, "direct", {"state": "on"})
        evmcs = hyperv.find(EVMCS.name)
        if features.amd_host and evmcs is not None and evmcs.get("state", "on") == "on":
            evmcs.set("state", "off")  # QEMU refuses hv-evmcs without Intel VMX: it would not start
    if doc.domain_type == "kvm":
        hidden = doc.child("hidden", doc.child("kvm", root_features))
        if hidden.get("state") is None:
            hidden.set("state", "on")
    vmport = doc.child("vmport", root_features)
    if vmport.get("state") is None:
        vmport.set("state", "off")
    clock = doc.root.find("clock")
    if clock is None:
        clock = doc.append(doc.root, "clock", {"offset": "localtime"}, index=_index_after(doc, "cpu"))
    for name, attributes, _why in TIMERS:
        if (name != "hypervclock" or hypervclock) and not clock.findall(f"timer[@name='{name}']"):
            doc.append(clock, "timer", {"name": name, **dict(attributes)})


def tune_windows11(doc: DomainDocument) -> None:
    """What Windows 11 requires of the VM: an emulated TPM 2.0 (swtpm) on the CRB interface
    (formatdomain.html#tpm-device) unless it has a TPM, and SMM for Secure Boot firmware."""
    if not list(doc.iter_devices("tpm")):
        tpm = doc.append(doc.devices, "tpm", {"model": "tpm-crb"})
        doc.append(tpm, "backend", {"type": "emulator", "version": "2.0"})
    tune_secure_boot_smm(doc)


def tune_secure_boot_smm(doc: DomainDocument) -> None:
    """Secure Boot OVMF keeps its variables in SMM: libvirt refuses to start it on q35 without
    <smm state='on'/> (formatdomain.html#hypervisor-features)."""
    loader = doc.root.find("os/loader")
    feature = doc.root.find("os/firmware/feature[@name='secure-boot']")
    if (feature is not None and feature.get("enabled") == "yes") or \
            (loader is not None and loader.get("secure") == "yes"):
        smm = doc.child("smm", doc.child("features", after=(*_after("cputune"), "cputune", "os")))
        if smm.get("state") != "on":
            smm.set("state", "on")


def windows_version(doc: DomainDocument) -> str | None:
    """win11/win10 from libosinfo's metadata (virt-install, virt-manager, vm create), else the name."""
    for element in doc.root.iter(f"{{{LIBOSINFO_NS}}}os"):
        os_id = element.get("id", "")
        for version in ("11", "10"):
            if os_id.rstrip("/").endswith(f"/win/{version}"):
                return f"win{version}"
    found = _WIN_NAME.search(doc.name)
    return f"win{found.group(1)}" if found else None


def set_windows_version(doc: DomainDocument, version: str) -> None:
    """libosinfo's OS id in the metadata, as virt-install writes it (vm audit reads it back)."""
    holder = doc.child("metadata", after=("description", "title", "uuid", "name"))
    if holder.find(f"{{{LIBOSINFO_NS}}}libosinfo") is None:
        from lxml import etree

        element = etree.Element(f"{{{LIBOSINFO_NS}}}libosinfo", nsmap={"libosinfo": LIBOSINFO_NS})
        etree.SubElement(element, f"{{{LIBOSINFO_NS}}}os", {"id": f"http://microsoft.com/win/{version[3:]}"})
        doc.adopt(holder, element)


def _index_after(doc: DomainDocument, tag: str) -> int | None:
    found = doc.root.find(tag)
    return None if found is None else list(doc.root).index(found) + 1


# --- storage, network, display -----------------------------------------------------------------

def tune_storage(doc: DomainDocument, disk: Disk | None, isos: Sequence[str], *,
                 controller: bool = True) -> None:
    """VirtIO SCSI with an I/O thread; the disk with cache=none, io=native, discard=unmap;
    ISOs as SATA CD-ROMs (Windows setup reads them without extra drivers). Without
    ``controller`` only an existing virtio-scsi controller gets its I/O thread."""
    existing = [c for c in doc.iter_devices("controller")
                if c.get("type") == "scsi" and c.get("model") == "virtio-scsi"]
    if controller or disk is not None:
        scsi = doc.child("controller", doc.devices, type="scsi", model="virtio-scsi")
        if scsi.get("index") is None:
            scsi.set("index", "0")
        existing = [scsi]
    for scsi in existing:
        driver = doc.child("driver", scsi)
        if driver.get("iothread") is None:
            driver.set("iothread", "1")
    if disk is not None:
        block = disk.path.startswith("/dev/")
        element = _disk_by_source(doc, disk.path)
        if element is None:
            element = doc.append(doc.devices, "disk")
        set_attributes(element, {"type": "block" if block else "file", "device": "disk"})
        set_attributes(doc.child("driver", element), {
            "name": "qemu", "type": disk.format, "cache": "none", "io": "native", "discard": "unmap"})
        set_attributes(doc.child("source", element), {"dev" if block else "file": disk.path})
        set_attributes(doc.child("target", element), {"dev": "sda", "bus": "scsi"})
    for index, iso in enumerate(isos):
        element = _disk_by_source(doc, iso)
        if element is None:
            element = doc.append(doc.devices, "disk")
        set_attributes(element, {"type": "file", "device": "cdrom"})
        set_attributes(doc.child("driver", element), {"name": "qemu", "type": "raw"})
        doc.child("source", element).set("file", iso)
        set_attributes(doc.child("target", element), {"dev": f"sd{chr(ord('b') + index)}", "bus": "sata"})
        doc.child("readonly", element)


def _disk_by_source(doc: DomainDocument, path: str) -> Element | None:
    for element in doc.iter_devices("disk"):
        source = element.find("source")
        if source is not None and path in (source.get("file"), source.get("dev")):
            return element
    return None


def tune_network(doc: DomainDocument, network: Network | None) -> None:
    """A virtio NIC on a libvirt network, or macvtap in bridge mode (formatdomain.html#direct-
    attachment-to-physical-interface); an existing NIC without a model gets virtio (a
    user's e1000e stays)."""
    interfaces = list(doc.iter_devices("interface"))
    if network is None:
        for element in interfaces:
            if element.find("model") is None:
                doc.append(element, "model", {"type": "virtio"})
        return
    kind = "direct" if network.kind == "macvtap" else "network"
    same_kind = [i for i in interfaces if i.get("type") == kind]
    element = same_kind[0] if same_kind else doc.append(doc.devices, "interface", {"type": kind})
    if kind == "direct":
        set_attributes(doc.child("source", element), {"dev": network.name, "mode": "bridge"})
    else:
        set_attributes(doc.child("source", element), {"network": network.name})
    doc.child("model", element).set("type", "virtio")


def tune_display(doc: DomainDocument) -> None:
    """QXL with SPICE on localhost for the install, and a USB tablet for the pointer."""
    if not [video for video in doc.iter_devices("video") if _video_model(video) != "none"]:
        for video in list(doc.iter_devices("video")):
            doc.remove(video)
        doc.append(doc.append(doc.devices, "video"), "model", {"type": "qxl"})
    if not list(doc.iter_devices("graphics")):
        graphics = doc.append(doc.devices, "graphics", {"type": "spice", "autoport": "yes"})
        doc.append(graphics, "listen", {"type": "address", "address": "127.0.0.1"})
    add_tablet(doc)


def add_tablet(doc: DomainDocument) -> None:
    """A USB tablet, so a SPICE/VNC pointer follows the client's (none without a display)."""
    if list(doc.iter_devices("graphics")):
        doc.child("input", doc.devices, type="tablet", bus="usb")


def _video_model(video: Element) -> str | None:
    model = video.find("model")
    return None if model is None else model.get("type")


def gpu_display_only(doc: DomainDocument) -> list[str]:
    """The seed's last step: the GPU drives the screen, so the emulated display goes: QXL
    video becomes <model type='none'/>, SPICE graphics go with what only SPICE can carry
    (spicevmc channels and USB redirection, SPICE audio). Undone by emulated_display."""
    spice = [g for g in doc.iter_devices("graphics") if g.get("type") == "spice"]
    qxl = [v for v in doc.iter_devices("video") if _video_model(v) == "qxl"]
    riders = [e for tag in ("channel", "redirdev") for e in doc.iter_devices(tag)
              if e.get("type") == "spicevmc"]
    audio = [a for a in doc.iter_devices("audio") if a.get("type") == "spice"]
    check_aliases_kept(doc, spice + qxl + riders + audio)
    removed = []
    for element in spice + riders + audio:
        removed.append(_describe(element))
        doc.remove(element)
    for video in qxl:
        removed.append(_describe(video))
        model = video.find("model")
        assert model is not None
        for key in list(model.attrib):
            if key != "type":
                del model.attrib[key]
        model.set("type", "none")
        for extra in list(model):
            doc.remove(extra)
        address = video.find("address")
        if address is not None:
            doc.remove(address)  # a type='none' video has no PCI device
    return removed


def emulated_display(doc: DomainDocument) -> list[str]:
    """Back from gpu_display_only: QXL video and SPICE on localhost again."""
    had = {_describe(e) for e in (*doc.iter_devices("video"), *doc.iter_devices("graphics"))}
    tune_display(doc)
    return sorted({_describe(e) for e in (*doc.iter_devices("video"), *doc.iter_devices("graphics"))}
                  - had)


def _describe(element: Element) -> str:
    model = element.find("model")
    kind = element.get("type") or (model.get("type") if model is not None else None)
    return f"<{element.tag} type='{kind}'>" if kind else f"<{element.tag}>"


# --- hostdevs and binding ---------------------------------------------------------------------

def tune_hostdevs(doc: DomainDocument, addresses: Sequence[PciAddress], *, managed: bool) -> None:
    """A PCI hostdev per function (formatdomain.html#pci-devices); managed='yes' lets libvirt
    bind them itself, 'no' leaves it to vfiodesk's hook."""
    for address in addresses:
        element = _hostdev(doc, address)
        if element is None:
            element = doc.append(doc.devices, "hostdev", {"mode": "subsystem", "type": "pci"})
        element.set("managed", "yes" if managed else "no")
        source = doc.child("source", element)
        set_attributes(doc.child("address", source), {
            "domain": f"0x{address.domain:04x}", "bus": f"0x{address.bus:02x}",
            "slot": f"0x{address.slot:02x}", "function": f"0x{address.function:x}"})


def agree_managed(doc: DomainDocument, managed: bool) -> list[str]:
    """Make every PCI hostdev's managed= match who binds it; one note per fix."""
    want = "yes" if managed else "no"
    notes = []
    for element, address in pci_hostdevs(doc):
        if element.get("managed", "no") != want:
            notes.append(f"hostdev {address}: managed='{element.get('managed', 'no')}' -> '{want}' "
                         f"(binding {'libvirt' if managed else 'vfiodesk'})")
            element.set("managed", want)
    return notes


def infer_binding(doc: DomainDocument) -> str:
    """Who binds this domain's hostdevs when nothing recorded it: libvirt, unless every PCI
    hostdev is managed='no' (the user binds, e.g. vfio-pci.ids; the hook then does it)."""
    found = pci_hostdevs(doc)
    if found and all(element.get("managed", "no") != "yes" for element, _ in found):
        return "vfiodesk"
    return "libvirt"


def hostdev_addresses(doc: DomainDocument) -> list[PciAddress]:
    return [address for _, address in pci_hostdevs(doc)]


def _hostdev(doc: DomainDocument, address: PciAddress) -> Element | None:
    return next((element for element, found in pci_hostdevs(doc) if found == address), None)


# --- what tune does not manage, and aliases that must keep their device -----------------------

_ALIAS_PREFIX = {"hostdev": "hostdev", "video": "video", "channel": "channel", "redirdev": "redir",
                 "sound": "sound", "audio": "audio", "serial": "serial", "console": "console",
                 "input": "input", "graphics": "graphics"}
_DEVICE_ALIAS = re.compile(r"device\.([A-Za-z0-9_.-]+?)\.")


def referenced_aliases(doc: DomainDocument) -> set[str]:
    """Device aliases named by qemu:commandline (-set device.ALIAS.prop=...) and by
    <qemu:override><qemu:device alias=...> (kbase/qemu-passthrough-security.html)."""
    names = set()
    for arg in doc.root.iter(f"{{{QEMU_NAMESPACE}}}arg"):
        names.update(_DEVICE_ALIAS.findall(arg.get("value", "") + "."))
    for device in doc.root.iter(f"{{{QEMU_NAMESPACE}}}device"):
        if device.get("alias"):
            names.add(str(device.get("alias")))
    return names


def check_aliases_kept(doc: DomainDocument, removing: Sequence[Element]) -> None:
    """Refuse to remove devices when qemu:commandline names an alias that would then point at
    another device (libvirt numbers aliases per kind in document order)."""
    referenced = referenced_aliases(doc)
    for element in removing:
        alias = element.find("alias")
        prefix = _ALIAS_PREFIX.get(str(element.tag))
        hit = sorted(name for name in referenced
                     if (alias is not None and name == alias.get("name"))
                     or (prefix and re.fullmatch(rf"{prefix}\d+", name)))
        if hit:
            raise RefusedError(
                f"qemu:commandline names the device alias {hit[0]!r}; removing a <{element.tag}> "
                "would make it point at another device", "edit the qemu:commandline arguments "
                "by hand (virsh edit), or give that device an explicit <alias name='ua-...'/>")


def left_alone(doc: DomainDocument) -> list[str]:
    """What tune sees but does not manage, said so the user knows (kept byte for byte)."""
    notes = []
    args = [str(a.get("value", "")) for a in doc.root.iter(f"{{{QEMU_NAMESPACE}}}arg")]
    if any("vfio-pci" in arg for arg in args):
        notes.append("a PCI device passed with qemu:commandline -device vfio-pci: neither bound "
                     "by vfiodesk nor recorded (a <hostdev> would be)")
    if referenced_aliases(doc):
        notes.append(f"qemu:commandline/override naming aliases {', '.join(sorted(referenced_aliases(doc)))}"
                     ": hostdevs kept in order, so they name the same devices")
    for element in doc.iter_devices("hostdev"):
        if element.get("type") not in ("pci", "usb"):  # usb: libvirt passes it, nothing to bind
            notes.append(f"<hostdev type='{element.get('type')}'>: not a PCI function; passed as written")
        elif element.get("type") == "pci" and element.find("source/address") is None:
            notes.append("a PCI <hostdev> without a source address: passed as written")
    for element in doc.iter_devices("interface"):
        if element.get("type") == "hostdev":
            notes.append("<interface type='hostdev'> (an SR-IOV VF): libvirt binds it; passed as written")
    if len(doc.devices.findall("emulator")) > 1:
        notes.append("several <emulator> elements: kept; libvirt uses one, fix it with virsh edit")
    if doc.root.get("id") is not None or next(doc.root.iter("alias"), None) is not None:
        notes.append("runtime state of a live dumpxml (id=, <alias>): kept; libvirt ignores it on define")
    if doc.root.find("seclabel") is not None:
        notes.append("<seclabel>: kept as written")
    return notes


# --- the seed's post-install cleanup ----------------------------------------------------------

def post_install(doc: DomainDocument) -> None:
    """The seed's cleanup after Windows is installed: one CD-ROM left (on SCSI), no serial
    console, no IDE controller; the tablet stays."""
    cdroms = [disk for disk in doc.iter_devices("disk") if disk.get("device") == "cdrom"]
    consoles = [e for tag in ("serial", "console") for e in doc.iter_devices(tag)]
    ide = [c for c in doc.iter_devices("controller") if c.get("type") == "ide"]
    check_aliases_kept(doc, cdroms[1:] + consoles + ide)
    for extra in cdroms[1:]:
        doc.remove(extra)
    if cdroms:
        set_attributes(doc.child("target", cdroms[0]), {"dev": "sdz", "bus": "scsi"})
        address = cdroms[0].find("address")
        if address is not None:
            doc.remove(address)  # a SATA drive address does not fit the SCSI bus
        source = cdroms[0].find("source")
        if source is not None:
            doc.remove(source)  # an empty drive: nothing mounted
    for element in consoles + ide:
        doc.remove(element)
