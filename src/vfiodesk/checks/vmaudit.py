"""`vm audit`: what a passthrough Windows domain gets right and what it misses, one finding each.

Pure: reads the domain XML (as a reader of it would) and the audited host's facts. A fail is a
setting that stops the VM from starting or Windows 11 from installing; a warn costs speed or
will cost it later. Each hint names the fix, `vfiodesk vm tune` where tune does it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vfiodesk.checks.doctor import Finding, Status
from vfiodesk.domxml.document import DomainDocument, Element, attributes_of
from vfiodesk.domxml.hostdevs import pci_hostdevs
from vfiodesk.domxml.tune import windows_version
from vfiodesk.errors import InputError
from vfiodesk.host.pci import group_devices
from vfiodesk.host.system import CpuInfo
from vfiodesk.host.varstore import VarstoreKeys
from vfiodesk.model.cpuset import CpuSet
from vfiodesk.model.pci import PciAddress, PciDevice
from vfiodesk.model.topology import CpuTopology
from vfiodesk.plan.guest import TIMERS, GuestFeatures, plan_guest_features
from vfiodesk.plan.pinning import GuestTopology

_WEIGHT = {Status.PASS: 1.0, Status.WARN: 0.5, Status.FAIL: 0.0}


@dataclass(frozen=True)
class AuditFacts:
    """The audited host (None: could not be read) and the files the domain names."""

    cpu: CpuInfo | None = None
    topology: CpuTopology | None = None
    devices: tuple[PciDevice, ...] | None = None
    existing_files: frozenset[str] = frozenset()  # ROM files present on the host
    varstore: VarstoreKeys | None = None
    varstore_problem: str = "no <nvram> file to read"


@dataclass(frozen=True)
class Audit:
    score: int
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> bool:
        return any(finding.status is Status.FAIL for finding in self.findings)

    def as_json(self) -> dict[str, object]:
        return {"score": self.score, "findings": [
            {"id": f.id, "status": f.status.value, "summary": f.summary, "hint": f.hint}
            for f in self.findings]}


def audit_domain(doc: DomainDocument, facts: AuditFacts, *,
                 tune_hint: str = "vfiodesk vm tune NAME") -> Audit:
    context = _Context(doc, facts, tune_hint)
    findings = [f for check in CHECKS for f in check(context)]
    score = round(100 * sum(_WEIGHT[f.status] for f in findings) / len(findings)) if findings else 100
    return Audit(score, tuple(findings))


class _Context:
    def __init__(self, doc: DomainDocument, facts: AuditFacts, tune: str):
        self.doc, self.root, self.facts, self.tune = doc, doc.root, facts, tune
        self.os = windows_version(doc)
        self.kvm = doc.domain_type == "kvm"
        self.hostdevs = pci_hostdevs(doc) if doc.root.find("devices") is not None else []
        self.pins = _vcpu_pins(doc.root)
        threads = facts.topology.threads_per_core if facts.topology else 1
        guest = _guest_topology(doc.root)
        self.features: GuestFeatures = plan_guest_features(
            doc.domain_type, facts.cpu, mirrors_host=guest is not None and guest.threads == threads,
            nested=doc.root.find("features/hyperv/evmcs[@state='on']") is not None)

    def on_host(self, address: PciAddress) -> PciDevice | None:
        return next((d for d in self.facts.devices or () if d.address == address), None)


def _state_on(element: Element | None) -> bool:
    return element is not None and element.get("state", "on") == "on"


def _vcpu_pins(root: Element) -> dict[str, CpuSet | None]:
    """vcpu -> host CPUs it may run on; None for a cpuset that does not parse."""
    return {pin.get("vcpu", "?"): _cpuset(pin.get("cpuset")) for pin in root.findall("cputune/vcpupin")}


def _cpuset(text: str | None) -> CpuSet | None:
    try:
        return CpuSet.parse(text or "")
    except InputError:
        return None


def _guest_topology(root: Element) -> GuestTopology | None:
    topology = root.find("cpu/topology")
    if topology is None:
        return None
    try:
        return GuestTopology(*(int(topology.get(key, "1"))
                               for key in ("sockets", "dies", "cores", "threads")))
    except ValueError:
        return None


def _vcpus(root: Element) -> int | None:
    text = (root.findtext("vcpu") or "").strip()
    return int(text) if text.isdigit() else None


def _is_efi(root: Element) -> bool:
    os_element = root.find("os")
    if os_element is None:
        return False
    loader = os_element.find("loader")
    return os_element.get("firmware") == "efi" or (loader is not None and (
        loader.get("type") == "pflash" or re.search(r"ovmf|edk2|uefi", loader.text or "", re.I) is not None))


def _secure_boot(root: Element) -> bool:
    feature = root.find("os/firmware/feature[@name='secure-boot']")
    if feature is not None:
        return feature.get("enabled") == "yes"
    loader = root.find("os/loader")
    return loader is not None and (loader.get("secure") == "yes" or
                                   re.search(r"secboot|\.ms\.fd|secure", loader.text or "", re.I) is not None)


# --- the checks: each returns zero or more findings --------------------------------------------

def _machine(root: Element) -> str:
    os_type = root.find("os/type")
    return os_type.get("machine", "") if os_type is not None else ""


def check_machine(c: _Context) -> Iterable[Finding]:
    name = _machine(c.root)
    if "q35" in name:
        yield Finding("machine", Status.PASS, f"q35 chipset ({name}): the GPU sits on PCI Express")
    else:
        yield Finding("machine", Status.WARN, f"machine {name or 'unset'} is not q35: the GPU is on a "
                      "plain PCI bus", "new VMs: vfiodesk vm create (q35); changing an installed VM's "
                      "chipset makes Windows redetect every device")


def check_firmware(c: _Context) -> Iterable[Finding]:
    if _is_efi(c.root):
        yield Finding("firmware", Status.PASS, "UEFI firmware (OVMF): the GPU's UEFI GOP drives the screen")
        return
    status = Status.FAIL if c.os == "win11" else Status.WARN
    yield Finding("firmware", status, "legacy BIOS (SeaBIOS): " + (
        "Windows 11 requires UEFI" if c.os == "win11" else "GPUs and Windows 11 expect UEFI"),
        "create the VM with UEFI: vfiodesk vm create (a BIOS install cannot be switched in place)")


def check_secure_boot(c: _Context) -> Iterable[Finding]:
    if not _is_efi(c.root):
        return
    if _secure_boot(c.root):
        smm = c.root.find("features/smm")
        explicit = c.root.find("os/loader") is not None and c.root.find("os/firmware") is None
        if explicit and not _state_on(smm) and "q35" in _machine(c.root):
            yield Finding("secure-boot", Status.FAIL, "Secure Boot firmware without SMM: libvirt refuses "
                          "to start it", f"{c.tune} (adds <smm state='on'/>)")
            return
        yield Finding("secure-boot", Status.PASS, "Secure Boot firmware")
        return
    if c.os == "win10":
        yield Finding("secure-boot", Status.PASS, "Secure Boot off (Windows 10 does not need it)")
        return
    yield Finding("secure-boot", Status.WARN, "Secure Boot is off: Windows 11 setup requires it (an "
                  "installed system runs, but feature updates and anti-cheat may refuse)",
                  "new VMs: vfiodesk vm create --os win11; an installed VM needs its firmware "
                  "switched by hand (a secure-boot OVMF and a new varstore)")


def check_secure_boot_keys(c: _Context) -> Iterable[Finding]:
    if not _is_efi(c.root) or not _secure_boot(c.root):
        return
    hint = f"{c.tune} --secure-boot-keys 2023 (the old varstore is kept as a backup)"
    keys = c.facts.varstore
    if keys is None:
        yield Finding("secure-boot-keys", Status.WARN, "cannot tell whether the varstore holds Microsoft's "
                      f"2023 keys: {c.facts.varstore_problem}", hint)
    elif keys.missing_2023:
        yield Finding("secure-boot-keys", Status.FAIL, f"{keys.path} lacks {', '.join(keys.missing_2023)}: "
                      "Windows boot media and GPU ROMs signed by the 2023 CAs will not boot once the "
                      "2011 CAs expire (2026)", hint)
    else:
        yield Finding("secure-boot-keys", Status.PASS, f"{keys.path} holds Microsoft's 2023 KEK and db "
                      "certificates" + ("" if keys.secure_boot else " (SecureBootEnable is off)"))


def check_tpm(c: _Context) -> Iterable[Finding]:
    if c.os == "win10":
        return
    tpms = c.root.findall("devices/tpm")
    backends = [(tpm, backend) for tpm in tpms if (backend := tpm.find("backend")) is not None]
    good = [(tpm, backend) for tpm, backend in backends
            if backend.get("type") == "passthrough" or backend.get("version", "2.0") == "2.0"]
    status = Status.FAIL if c.os == "win11" else Status.WARN
    if good:
        tpm, backend = good[0]
        yield Finding("tpm", Status.PASS, f"TPM 2.0 ({tpm.get('model', 'tpm-tis')}, {backend.get('type')})")
    elif tpms:
        yield Finding("tpm", status, "the TPM is version 1.2: Windows 11 requires TPM 2.0",
                      "a 1.2 emulator's state cannot be converted: replace it with version='2.0' by hand "
                      "(suspend BitLocker first)")
    else:
        yield Finding("tpm", status, "no TPM: Windows 11 requires TPM 2.0",
                      f"{c.tune} (adds an emulated TPM 2.0; needs swtpm: see vfiodesk doctor)")


def check_hyperv(c: _Context) -> Iterable[Finding]:
    hyperv = c.root.find("features/hyperv")
    if hyperv is not None and hyperv.get("mode") == "passthrough":
        yield Finding("hyperv", Status.PASS,
                      "Hyper-V enlightenments: passthrough mode (every one the host has)")
        return
    if c.kvm and c.facts.cpu is not None and c.facts.cpu.is_amd and \
            hyperv is not None and _state_on(hyperv.find("evmcs")):
        yield Finding("hyperv", Status.FAIL, "hv-evmcs on an AMD host: QEMU refuses to start (it is Intel "
                      "VMX only)", f"{c.tune} (turns evmcs off)")
        return
    missing = []
    for wanted in c.features.enlightenments:
        element = hyperv.find(wanted.name) if hyperv is not None else None
        direct = element.find("direct") if element is not None else None
        if not _state_on(element) or (wanted.direct and not _state_on(direct)):
            missing.append(wanted.name + ("+direct" if wanted.direct and _state_on(element) else ""))
    if not missing:
        yield Finding("hyperv", Status.PASS, f"all {len(c.features.enlightenments)} Hyper-V enlightenments "
                      "QEMU recommends for this host are on")
    else:
        yield Finding("hyperv", Status.WARN, f"Hyper-V enlightenments missing: {', '.join(missing)}",
                      f"{c.tune} (QEMU docs/system/i386/hyperv.rst: enable every implemented one)")


def check_timers(c: _Context) -> Iterable[Finding]:
    clock = c.root.find("clock")
    wrong = []
    for name, attributes, _why in TIMERS:
        timer = clock.find(f"timer[@name='{name}']") if clock is not None else None
        if timer is None or any(timer.get(key) != value for key, value in attributes):
            wrong.append(f"{name} " + " ".join(f"{key}={value}" for key, value in attributes))
    if wrong:
        yield Finding("timers", Status.WARN, f"timers not as Windows guests want: {', '.join(wrong)}",
                      c.tune)
    else:
        yield Finding("timers", Status.PASS, "timers: hypervclock on, hpet off, rtc catchup, pit delay")


def check_cpu(c: _Context) -> Iterable[Finding]:
    cpu = c.root.find("cpu")
    if not c.kvm:
        return  # TCG emulates the CPU: host-passthrough and host features do not apply
    if cpu is None or cpu.get("mode") != "host-passthrough":
        mode = cpu.get("mode", "custom") if cpu is not None else "default"
        yield Finding("cpu-mode", Status.WARN, f"CPU mode {mode}: the guest misses host features (and "
                      "caches)", f"{c.tune} (host-passthrough)")
        return
    yield Finding("cpu-mode", Status.PASS, "host-passthrough: the guest sees the host CPU's features")
    missing = [name for name, _ in c.features.cpu_features
               if cpu.find(f"feature[@name='{name}'][@policy='require']") is None]
    if c.features.cache_passthrough and cpu.find("cache[@mode='passthrough']") is None:
        missing.append("cache passthrough")
    if "invtsc" not in missing and any(n == "invtsc" for n, _ in c.features.cpu_features) and \
            cpu.get("migratable") == "on":
        missing.append("migratable=off (QEMU drops invtsc from migratable CPUs)")
    if missing:
        yield Finding("cpu-features", Status.WARN, f"CPU features this host offers but the guest lacks: "
                      f"{', '.join(missing)}", c.tune)
    elif c.features.cpu_features or c.features.cache_passthrough:
        named = [name for name, _ in c.features.cpu_features] + (
            ["cache passthrough"] if c.features.cache_passthrough else [])
        yield Finding("cpu-features", Status.PASS, f"CPU features: {', '.join(named)}")


def check_pinning(c: _Context) -> Iterable[Finding]:
    vcpus = _vcpus(c.root)
    hint = f"{c.tune} (pins whole cores of one L3 domain, emulator apart; see vfiodesk cpus)"
    if not c.pins:
        yield Finding("cpu-pinning", Status.WARN, "vCPUs are not pinned: the host scheduler moves them "
                      "across cores and caches (stutter)", hint)
        return
    singles = [pins for pins in c.pins.values() if pins is not None and len(pins) == 1]
    targets = [min(pins.cpus) for pins in singles]
    if vcpus is not None and (len(singles) < vcpus or len(set(targets)) != len(targets)):
        yield Finding("cpu-pinning", Status.WARN, f"{len(singles)} of {vcpus} vCPUs pinned 1:1 to their own "
                      "host CPU", hint)
        return
    yield Finding("cpu-pinning", Status.PASS, f"{len(singles)} vCPUs pinned 1:1")
    pinned = CpuSet.of(targets)
    emulator = c.root.find("cputune/emulatorpin")
    housekeeping = _cpuset(emulator.get("cpuset")) if emulator is not None else None
    if housekeeping is None or housekeeping.cpus & pinned.cpus:
        yield Finding("cpu-emulator", Status.WARN, "the emulator thread is not pinned apart from the vCPUs",
                      hint)
    else:
        yield Finding("cpu-emulator", Status.PASS, f"emulator thread on host CPUs {housekeeping}")
    yield from _layout(c, pinned, hint)


def _layout(c: _Context, pinned: CpuSet, hint: str) -> Iterable[Finding]:
    topology = c.facts.topology
    if topology is None:
        return
    unknown = pinned - topology.online
    if unknown.cpus:
        yield Finding("cpu-layout", Status.WARN, f"pinned to host CPUs {unknown} that this host lacks",
                      hint)
        return
    split = [core for core in topology.cores() if core.cpus & pinned.cpus and not core.cpus <= pinned.cpus]
    domains = {topology.cpu(n).l3 for n in pinned}
    nodes = {topology.cpu(n).numa_node for n in pinned}
    problems = []
    if split:
        problems.append(f"SMT siblings split ({', '.join(str(core) for core in split[:3])})")
    if len(domains) > 1:
        problems.append(f"spans {len(domains)} L3 cache domains")
    if len(nodes) > 1:
        problems.append(f"spans {len(nodes)} NUMA nodes")
    if not (topology.online - pinned).cpus:
        problems.append("no host core left for the host")
    if problems:
        yield Finding("cpu-layout", Status.WARN, "pinning layout: " + "; ".join(problems), hint)
    else:
        yield Finding("cpu-layout", Status.PASS, "whole cores of one L3 domain and NUMA node; the host "
                      "keeps its own")


def check_memory(c: _Context) -> Iterable[Finding]:
    if c.root.find("memoryBacking/hugepages") is not None:
        yield Finding("hugepages", Status.PASS, "memory backed by hugepages")
    else:
        yield Finding("hugepages", Status.WARN, "no hugepages: more TLB misses for every guest access",
                      f"{c.tune} --hugepages, and reserve them: vfiodesk host hugepages SIZE")
    if not c.hostdevs:
        return
    balloon = c.root.find("devices/memballoon")
    memory, current = _kib(c.root.find("memory")), _kib(c.root.find("currentMemory"))
    if current is not None and memory is not None and current < memory:
        yield Finding("memory-balloon", Status.WARN, "currentMemory is below memory, but with a passed "
                      "device every page is pinned at start: the host gets nothing back",
                      f"{c.tune} --memory-current SIZE with SIZE = <memory>")
    elif balloon is None or balloon.get("model") != "none":
        yield Finding("memory-balloon", Status.WARN, "a memory balloon with a passed device: VFIO pins all "
                      "guest RAM, so the balloon cannot return memory to the host",
                      "virsh edit: <memballoon model='none'/> (vm tune keeps a balloon you chose; vm create "
                      "leaves it out)")
    else:
        yield Finding("memory-balloon", Status.PASS, "no balloon: VFIO pins all guest RAM anyway")


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
          "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1e9 / 1024, "t": 1024**3, "tib": 1024**3,
          "tb": 1e12 / 1024}


def _kib(element: Element | None) -> float | None:
    if element is None or not (element.text or "").strip().isdigit():
        return None
    return int((element.text or "").strip()) * _UNITS.get(element.get("unit", "KiB").lower(), 1)


def check_disks(c: _Context) -> Iterable[Finding]:
    problems = []
    disks = [d for d in c.root.findall("devices/disk") if d.get("device", "disk") == "disk"]
    for disk in disks:
        target = disk.find("target")
        name = target.get("dev", "?") if target is not None else "?"
        bus = target.get("bus", "") if target is not None else ""
        driver = disk.find("driver")
        settings = dict(attributes_of(driver)) if driver is not None else {}
        get = settings.get
        wrong = []
        if bus not in ("virtio", "scsi"):
            wrong.append(f"bus {bus or 'unset'}")
        if get("cache") not in ("none", "directsync"):
            wrong.append(f"cache={get('cache') or 'default'}")
        if get("io") not in ("native", "io_uring"):
            wrong.append(f"io={get('io') or 'default'}")
        if get("discard") != "unmap":
            wrong.append("no discard=unmap")
        if wrong:
            problems.append(f"{name}: {', '.join(wrong)}")
    if not disks:
        return
    if problems:
        yield Finding("disks", Status.WARN, "disk settings: " + "; ".join(problems),
                      "virtio or virtio-scsi with cache='none' io='native' discard='unmap' "
                      "(vfiodesk vm tune does it for the disk vm create made)")
    else:
        yield Finding("disks", Status.PASS, "disks on virtio with cache=none, native I/O and discard")


def check_gpu(c: _Context) -> Iterable[Finding]:
    if not c.hostdevs:
        yield Finding("gpu-group", Status.WARN, "no PCI device is passed through",
                      "pass the GPU: vfiodesk vm create --gpu ADDR (whole IOMMU group)")
        return
    passed = {address for _, address in c.hostdevs}
    absent = [address for address in passed if c.on_host(address) is None]
    if c.facts.devices is None or absent:
        where = "cannot list this host's PCI devices" if c.facts.devices is None else \
            f"{', '.join(str(a) for a in sorted(absent, key=str))} not on this host"
        yield Finding("gpu-group", Status.WARN, f"IOMMU groups not checked: {where}",
                      "run vfiodesk vm audit on the VM's own host")
    else:
        groups = group_devices(c.facts.devices)
        numbers = {device.iommu_group for address in passed if (device := c.on_host(address))}
        left = sorted(str(member.address) for number in numbers if number is not None
                      for member in groups.get(number, [])
                      if not member.is_bridge and member.address not in passed)
        if None in numbers:
            yield Finding("gpu-group", Status.WARN, "IOMMU groups not checked: the IOMMU is off on this host",
                          "turn it on: vfiodesk doctor")
        elif left:
            yield Finding("gpu-group", Status.FAIL, "the passed devices' IOMMU groups also hold "
                          f"{', '.join(left)}: VFIO needs the whole group (libvirt will not start the VM)",
                          "pass them too, or move the card to another slot (vfiodesk devices --groups)")
        else:
            yield Finding("gpu-group", Status.PASS, f"every endpoint of the passed devices' IOMMU groups is "
                          f"passed ({len(passed)})")
    yield from _roms(c)
    yield Finding("msi", Status.PASS, "MSI is set inside Windows, not in the XML",
                  "vfiodesk desktop msi NAME writes the script that turns it on for exactly these devices")


def _roms(c: _Context) -> Iterable[Finding]:
    problems: list[str] = []
    notes: list[str] = []
    for element, address in c.hostdevs:
        rom = element.find("rom")
        device = c.on_host(address)
        if rom is not None and rom.get("file"):
            if rom.get("file") not in c.facts.existing_files:
                (problems if device is not None else notes).append(f"{address}: ROM file {rom.get('file')} "
                                                                   "is missing")
        elif rom is not None and rom.get("bar") == "off" and device is not None and device.is_display:
            notes.append(f"{address}: rom bar='off' hides the GPU's UEFI driver (black screen until Windows)")
        elif device is not None and device.is_display and device.boot_vga:
            notes.append(f"{address} is the host's boot GPU: its ROM is shadowed; give a dumped romfile")
    if problems:
        yield Finding("gpu-rom", Status.FAIL, "; ".join(problems), "dump the ROM (or fix the path) and set "
                      "<rom file='...'/>: QEMU will not start without it")
    elif notes:
        yield Finding("gpu-rom", Status.WARN, "; ".join(notes), "on the VM's host: put the dumped ROM at "
                      "that path (or fix <rom file=...>); dump a boot GPU before the host uses it")
    else:
        yield Finding("gpu-rom", Status.PASS, "GPU ROMs: nothing missing")


CHECKS: tuple[Callable[[_Context], Iterable[Finding]], ...] = (
    check_machine, check_firmware, check_secure_boot, check_secure_boot_keys, check_tpm, check_hyperv,
    check_timers, check_cpu, check_pinning, check_memory, check_disks, check_gpu,
)
