"""vCPU pinning: which host CPUs a VM gets, and the guest topology that matches them.

Rules (the seed pins by hand; these are the usual ones from the VFIO community):
SMT siblings go together and the guest sees them as threads of one core; CPU 0's core stays
with the host (interrupts, the emulator thread, I/O threads); one L3 domain (CCX/CCD) and
one NUMA node when the VM fits; P-cores on hybrid CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfiodesk.errors import InputError
from vfiodesk.model.cpuset import CpuSet
from vfiodesk.model.topology import CpuTopology, LogicalCpu


@dataclass(frozen=True)
class GuestTopology:
    sockets: int
    dies: int
    cores: int
    threads: int


@dataclass(frozen=True)
class PinningPlan:
    vcpu_pins: tuple[tuple[int, int], ...]  # (vcpu, host cpu)
    emulator_cpus: CpuSet
    iothread_cpus: CpuSet
    host_cpus: CpuSet
    guest: GuestTopology
    numa_node: int | None  # where the VM's memory (hugepages) should come from
    notes: tuple[str, ...] = ()

    @property
    def vm_cpus(self) -> CpuSet:
        return CpuSet.of(host for _, host in self.vcpu_pins)


def plan_pinning(topology: CpuTopology, vcpus: int | None = None, *,
                 reserve_host_cores: int = 1) -> PinningPlan:
    """Pin ``vcpus`` (default: every core the host can spare in the best domain)."""
    if vcpus is not None and vcpus < 1:
        raise InputError(f"{vcpus} vCPUs is not a VM", "give at least one vCPU")
    cores = [_core(topology, core) for core in topology.cores()]
    reserved = _reserved(cores, topology, reserve_host_cores)
    candidates = [core for core in cores if core[0].cpu not in {c[0].cpu for c in reserved}]
    if any(core[0].kind == "P" for core in candidates):
        candidates = [core for core in candidates if core[0].kind == "P"]
    if not candidates:
        raise InputError("this host has no core to spare for a VM after keeping one for itself",
                         "a passthrough VM needs a CPU with at least two cores")
    threads = max(len(core) for core in candidates)
    capacity = sum(len(core) for core in candidates)
    if vcpus is None:
        vcpus = threads * max(len(domain) for domain in _domains(candidates, "l3"))
    if vcpus > capacity:
        raise InputError(f"{vcpus} vCPUs is more than this host can give ({capacity}: every thread "
                         f"but CPU 0's core{', P-cores only' if candidates[0][0].kind else ''})",
                         f"ask for at most {capacity} vCPUs (vfiodesk cpus shows the layout)")
    if vcpus % threads:
        raise InputError(f"{vcpus} vCPUs would split an SMT core ({threads} threads per core)",
                         f"give a multiple of {threads} so each guest core is a whole host core")
    chosen = _best_domain(candidates, vcpus // threads)
    pins = tuple(enumerate(cpu.cpu for core in chosen for cpu in core))
    housekeeping = CpuSet.of(cpu.cpu for core in reserved for cpu in core)
    notes = []
    if len({core[0].l3 for core in chosen}) > 1:
        notes.append("the VM spans more than one L3 cache domain (CCX/CCD): expect some latency")
    nodes = {core[0].numa_node for core in chosen}
    if len(nodes) > 1:
        notes.append("the VM spans NUMA nodes: its memory cannot be local to every vCPU")
    vm = CpuSet.of(host for _, host in pins)
    return PinningPlan(
        vcpu_pins=pins, emulator_cpus=housekeeping, iothread_cpus=housekeeping,
        host_cpus=topology.online - vm, guest=GuestTopology(1, 1, vcpus // threads, threads),
        numa_node=nodes.pop() if len(nodes) == 1 else None, notes=tuple(notes))


def _core(topology: CpuTopology, threads: CpuSet) -> tuple[LogicalCpu, ...]:
    return tuple(topology.cpu(number) for number in threads)


def _reserved(cores: list[tuple[LogicalCpu, ...]], topology: CpuTopology,
              count: int) -> list[tuple[LogicalCpu, ...]]:
    """CPU 0's core, then the next cores of its L3 domain, for the host."""
    first = next(core for core in cores if any(cpu.cpu == min(topology.online.cpus) for cpu in core))
    rest = [core for core in cores if core is not first and core[0].l3 == first[0].l3]
    return [first, *rest[:max(0, count - 1)]]


Core = tuple[LogicalCpu, ...]


def _domains(candidates: list[Core], key: str) -> list[list[Core]]:
    """Cores grouped by L3 domain or NUMA node, largest first."""
    domains: dict[object, list[Core]] = {}
    for core in candidates:
        domains.setdefault(core[0].l3 if key == "l3" else core[0].numa_node, []).append(core)
    return sorted(domains.values(), key=lambda cores: (-len(cores), cores[0][0].cpu))


def _best_domain(candidates: list[Core], wanted: int) -> list[Core]:
    """``wanted`` cores from one L3 domain if one is big enough, else from one NUMA node, else
    from the largest domains first."""
    for key in ("l3", "numa"):
        fitting = [domain for domain in _domains(candidates, key) if len(domain) >= wanted]
        if fitting:
            # The smallest domain that fits keeps bigger ones whole for other VMs.
            return min(fitting, key=lambda d: (len(d), d[0][0].cpu))[:wanted]
    return [core for domain in _domains(candidates, "numa") for core in domain][:wanted]
