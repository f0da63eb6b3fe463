"""prepare and release for one domain: preflight, binding, hugepages, CPU isolation."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vfiodesk import paths as P
from vfiodesk.domxml.document import DomainDocument
from vfiodesk.domxml.hostdevs import pci_hostdevs
from vfiodesk.domxml.metadata import VmManagement
from vfiodesk.errors import HostReadError, InputError, RefusedError, VfiodeskError
from vfiodesk.model.pci import PciAddress, PciPattern

if TYPE_CHECKING:
    from vfiodesk.model.cpuset import CpuSet

# The hook starts a fresh interpreter for each operation, and a managed VM with nothing to bind
# should cost little more than that start: what only acts on devices, hugepages or CPUs (the
# binding engine, the single-GPU hand-off, systemctl) is imported where it acts
# (every module of the package is in the hook's root-owned copy; HOOK_MODULES names them).

def _domain(data: bytes) -> tuple[DomainDocument, VmManagement] | None:
    """The document and vfiodesk's options; None for a domain vfiodesk does not manage (the
    sh front only pre-filters: the namespace may be declared without our element)."""
    doc = DomainDocument.parse(data)
    management = doc.management()
    return None if management is None else (doc, management)


def _pattern(address: PciAddress) -> PciPattern:
    return PciPattern(address.domain, address.bus, address.slot, address.function)


def check_drift(host: P.HostPaths, vm: str, management: VmManagement) -> None:
    """The devices are still the ones the VM was made with (a swapped card, a moved slot or a
    BIOS update that regrouped the IOMMU would otherwise hand the VM the wrong device)."""
    from vfiodesk.host.pci import read_pci_device

    for recorded in management.devices:
        try:
            now = read_pci_device(host, recorded.address)
        except VfiodeskError:
            raise RefusedError(f"{recorded.address} is gone from this host",
                               "the card moved or was removed: fix the VM's <hostdev> (virsh edit), "
                               f"then vfiodesk vm tune {vm} --record-devices") from None
        with_subsystem = recorded.subsystem_vendor_id is not None
        was = _identity(recorded.vendor_id, recorded.device_id, recorded.subsystem_vendor_id,
                        recorded.subsystem_device_id, recorded.iommu_group, with_subsystem)
        found = _identity(now.vendor_id, now.device_id, now.subsystem_vendor_id, now.subsystem_device_id,
                          now.iommu_group, with_subsystem)
        if was != found:
            raise RefusedError(f"{recorded.address} changed since the VM was recorded "
                               f"(recorded {was}; found {found})",
                               f"check the hardware; if the change is right, record it: "
                               f"vfiodesk vm tune {vm} --record-devices")


def _identity(vendor: int, device: int, subsystem_vendor: int | None, subsystem_device: int | None,
              group: int | None, with_subsystem: bool) -> str:
    """``10de:1b81 subsystem 1043:8591 group 1``, as lspci -nn and the kernel print IDs."""
    text = f"{vendor:04x}:{device:04x}"
    if with_subsystem:
        text += f" subsystem {subsystem_vendor or 0:04x}:{subsystem_device or 0:04x}"
    return f"{text} group {'?' if group is None else group}"


def _quiet(line: str) -> None:
    """Where no one listens (tests of the returned lines)."""


def prepare(host: P.HostPaths, vm: str, data: bytes, say: Callable[[str], None] = _quiet) -> list[str]:
    """Bind (or check) the VM's devices and take its runtime resources; ``say`` logs as it goes."""
    parsed = _domain(data)
    if parsed is None:
        return []
    doc, management = parsed
    hostdevs = pci_hostdevs(doc)
    done: list[str] = []
    check_drift(host, vm, management)
    ours = [address for element, address in hostdevs if element.get("managed") != "yes"]
    theirs = [address for element, address in hostdevs if element.get("managed") == "yes"]
    if theirs:
        from vfiodesk.binding.engine import plan_for

        plan_for(host, [_pattern(a) for a in theirs], force=False)  # viability only; libvirt binds
        done.append(f"groups of {', '.join(map(str, theirs))} are viable; libvirt binds them")
    if ours and management.binding == "vfiodesk" and management.single_gpu:
        from vfiodesk.binding.handoff import logged, prepare_single_gpu

        prepare_single_gpu(host, vm, ours, logged(host, vm, say))
        done.append("single GPU: the desktop is stopped and the GPU is on vfio-pci")
    elif ours and management.binding == "vfiodesk":
        from vfiodesk.binding.engine import bind_devices

        report = bind_devices(host, [_pattern(a) for a in ours], owner=vm)
        done.append(f"bound {', '.join(report.bound) or 'nothing new'} to vfio-pci")
    try:
        done += _runtime_resources(host, vm, doc, management)
    except BaseException:
        _give_back(host, vm, ours, management.single_gpu, say)
        raise
    return done


def _give_back(host: P.HostPaths, vm: str, ours: list[PciAddress], single_gpu: bool,
               say: Callable[[str], None]) -> list[str]:
    if single_gpu:
        from vfiodesk.binding.handoff import logged, release_single_gpu

        release_single_gpu(host, vm, logged(host, vm, say))
        return ["single GPU: the GPU and the desktop are back"]
    if not ours:
        return []  # release_devices of no address gives nothing back
    from vfiodesk.binding.engine import release_devices

    released = release_devices(host, ours, owner=vm)
    return released.done + released.notices


def started(host: P.HostPaths, vm: str, data: bytes) -> list[str]:
    """QEMU runs: a single-GPU hand-off records its pid, so the watchdog can see it die."""
    parsed = _domain(data)
    if parsed is None or not parsed[1].single_gpu:
        return []
    from vfiodesk.binding.handoff import mark_started
    from vfiodesk.host.sysfs import read_attr

    try:
        pid_text = read_attr(host(P.RUN_LIBVIRT_QEMU, f"{vm}.pid")) or ""
    except VfiodeskError:
        pid_text = ""  # a damaged pid file: the watchdog then has no pid to follow
    mark_started(host, vm, int(pid_text) if pid_text.isdecimal() and len(pid_text) < 10 else None,
                 hook_daemon_pid())
    return [f"QEMU runs as pid {pid_text or 'unknown'}; the watchdog follows it"]


def hook_daemon_pid() -> int | None:
    """The daemon running the hooks (libvirtd, virtqemud): the sh front's parent. Python runs
    at the end of the front's pipeline, a child of the front; this process's own ancestry, so
    the real /proc whatever the root."""
    from vfiodesk.host.sysfs import read_attr

    with contextlib.suppress(VfiodeskError):
        stat = read_attr(f"/proc/{os.getppid()}/stat")
        fields = stat.rpartition(")")[2].split() if stat else []
        if len(fields) > 1 and fields[1].isdecimal():
            return int(fields[1])  # proc(5): state, then ppid
    return None


def _runtime_resources(host: P.HostPaths, vm: str, doc: DomainDocument,
                       management: VmManagement) -> list[str]:
    """Hugepages on the pinned NUMA node and host CPU isolation, recorded for release."""
    if management.hugepages != "runtime" and not management.isolate_cpus:
        return []
    from vfiodesk.domxml.tune import read_size
    from vfiodesk.hostfiles.atomic import write_atomic
    from vfiodesk.model.cpuset import CpuSet
    from vfiodesk.model.sizes import KIB
    from vfiodesk.runner import CommandRunner

    state: dict[str, object] = {}
    done = []
    pins = CpuSet.of(cpu for pin in doc.root.findall("cputune/vcpupin")
                     for cpu in CpuSet.parse(pin.get("cpuset", "")))
    if management.hugepages == "runtime":
        memory = doc.root.find("memory")
        memory_kib = read_size(memory) // KIB if memory is not None else 0
        line, record = _allocate_hugepages(host, _node_of(host, pins), memory_kib)
        done.append(line)
        if record:
            state["hugepages"] = record
    if management.isolate_cpus and pins:
        online = _cpulist(host(P.SYS_CPU, "online"))
        keep = str(online - pins)
        runner = CommandRunner(host)
        for unit in ("system.slice", "user.slice", "init.scope"):
            runner.run(["systemctl", "set-property", "--runtime", unit, f"AllowedCPUs={keep}"])
        state["isolated"] = str(online)
        done.append(f"host tasks confined to CPUs {keep}")
    if state:
        path = _state_file(host, vm)
        write_atomic(path, json.dumps(state).encode(), str(path))
    return done


def _allocate_hugepages(host: P.HostPaths, node: int, memory_kib: int) -> tuple[str, dict[str, object]]:
    """One budget: pages already free (reserved at boot by `vfiodesk host hugepages`) are used
    first and only the shortfall is allocated, so the two never add up
    (Documentation/admin-guide/mm/hugetlbpage.rst: free_hugepages, nr_hugepages per node)."""
    from vfiodesk.binding.sysfs import SysfsWriter
    from vfiodesk.host.services import read_default_hugepage_kib
    from vfiodesk.host.sysfs import read_int_attr

    size_kib = read_default_hugepage_kib(host)
    pool = host(P.SYS_NODE, f"node{node}", "hugepages", f"hugepages-{size_kib}kB")
    needed = -(-memory_kib // size_kib)
    relative = str((pool / "nr_hugepages").relative_to(host.root))
    before = read_int_attr(pool / "nr_hugepages")
    if before is None:
        raise VfiodeskError(f"/{relative} is missing: the kernel offers no {size_kib} KiB hugepages "
                            f"on NUMA node {node}",
                            "use a kernel with hugetlbfs, or run the VM without runtime hugepages "
                            "(vfiodesk vm tune NAME --no-hugepages)")
    free = read_int_attr(pool / "free_hugepages") or 0
    missing = max(needed - free, 0)
    size = f"{size_kib // 1024} MiB" if size_kib < 1024 * 1024 else f"{size_kib // (1024 * 1024)} GiB"
    if not missing:
        return f"{needed} free hugepages of {size} on NUMA node {node} (reserved at boot): none allocated", {}
    wanted = before + missing
    writer = SysfsWriter(host)
    writer.write(relative, str(wanted))
    got = read_int_attr(pool / "nr_hugepages") or 0
    if got < wanted and host.is_real_host:
        writer.write(relative, str(before))
        raise VfiodeskError(
            f"only {got - before} of {missing} hugepages of {size} on NUMA node {node}",
            "free memory, or reserve them at boot: vfiodesk host hugepages")
    used = f" (and {needed - missing} free ones)" if needed > missing else ""
    return (f"{missing} hugepages of {size} on NUMA node {node}{used}",
            {"path": str(pool / "nr_hugepages"), "before": before})


def _cpulist(path: Path) -> CpuSet:
    """A sysfs CPU list (online, a node's cpulist); junk or absence is a clear error."""
    from vfiodesk.host.sysfs import read_attr
    from vfiodesk.model.cpuset import CpuSet

    text = read_attr(path)
    if text is None:
        raise VfiodeskError(f"{path} is missing", "is this a Linux host with sysfs mounted?")
    try:
        return CpuSet.parse(text)
    except InputError:
        raise VfiodeskError(f"{path} holds {text[:40]!r}, not a CPU list",
                            "the host tree is damaged") from None


def _node_of(host: P.HostPaths, cpus: CpuSet) -> int:
    base = host(P.SYS_NODE)
    for name in sorted(os.listdir(base)) if base.is_dir() else []:
        if name.startswith("node") and name[4:].isdecimal():
            members = _cpulist(base / name / "cpulist")
            if not cpus or cpus.cpus & members.cpus:
                return int(name[4:])
    return 0


def release(host: P.HostPaths, vm: str, data: bytes, say: Callable[[str], None] = _quiet) -> list[str]:
    """Undo prepare; runs after a failed prepare too, so every step tolerates 'nothing to do'."""
    parsed = _domain(data)
    if parsed is None:
        return []
    doc, management = parsed
    ours = [address for element, address in pci_hostdevs(doc) if element.get("managed") != "yes"]
    done = _give_back(host, vm, ours, management.single_gpu, say)
    state_file = _state_file(host, vm)
    if state_file.exists():
        state = _read_state(host, state_file)
        if "hugepages" in state:
            pages = state["hugepages"]
            fd = os.open(pages["path"], os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{pages['before']}\n")
            done.append("hugepages given back")
        if "isolated" in state:
            from vfiodesk.runner import CommandRunner

            runner = CommandRunner(host)
            for unit in ("system.slice", "user.slice", "init.scope"):
                runner.run(["systemctl", "set-property", "--runtime", unit,
                            f"AllowedCPUs={state['isolated']}"], check=False)
            done.append("host CPUs given back")
        state_file.unlink()
    return done


_HUGEPAGES_FILE = re.compile(rf"{P.SYS_NODE}/node[0-9]+/hugepages/hugepages-[0-9]+kB/nr_hugepages")


def _state_file(host: P.HostPaths, vm: str) -> Path:
    if not vm or "/" in vm or vm in (".", "..") or not vm.isprintable():
        raise InputError(f"{vm!r} is not a domain name libvirt would give", "check the hook's caller")
    return host(P.RUN_VFIODESK, f"vm-{vm}.json")


def _read_state(host: P.HostPaths, path: Path) -> dict[str, Any]:
    """What prepare recorded, checked: release writes only a node's nr_hugepages under the
    root and gives systemd a CPU list."""
    from vfiodesk.hostfiles.atomic import confined, read_journal_file
    from vfiodesk.model.cpuset import CpuSet

    try:
        state = json.loads(read_journal_file(path))
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        if "hugepages" in state:
            pages = state["hugepages"]
            relative = os.path.relpath(pages["path"], host.root)
            if not _HUGEPAGES_FILE.fullmatch(relative) or type(pages["before"]) is not int \
                    or pages["before"] < 0:
                raise ValueError(f"hugepages {pages!r} is not a node's nr_hugepages and a count")
            confined(host.root, relative, str(path))
        if "isolated" in state:
            CpuSet.parse(state["isolated"])
    except (ValueError, KeyError, TypeError, VfiodeskError) as exc:
        path.unlink()  # it would fail every release to come
        raise HostReadError(f"the hook's state file {path} is damaged ({exc}); it was removed and "
                            "nothing was given back from it",
                            "give hugepages and CPUs back by hand if the VM used them") from None
    return state
