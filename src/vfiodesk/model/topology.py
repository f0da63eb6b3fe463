"""CPU topology: logical CPUs with their core, L3 domain, NUMA node and kind (P/E)."""

from __future__ import annotations

from dataclasses import dataclass

from vfiodesk.model.cpuset import CpuSet


@dataclass(frozen=True)
class LogicalCpu:
    cpu: int
    package: int
    die: int
    core: int  # core_id, unique within a package (and die)
    siblings: CpuSet  # SMT threads of the same core, itself included
    l3: CpuSet  # CPUs sharing this CPU's last-level cache (one CCX/CCD on AMD)
    numa_node: int
    kind: str | None = None  # "P" or "E" on hybrid CPUs

    @property
    def core_key(self) -> tuple[int, int, int]:
        return (self.package, self.die, self.core)


@dataclass(frozen=True)
class CpuTopology:
    cpus: tuple[LogicalCpu, ...]  # online CPUs, by number
    isolated: CpuSet

    def cpu(self, number: int) -> LogicalCpu:
        return next(c for c in self.cpus if c.cpu == number)

    @property
    def online(self) -> CpuSet:
        return CpuSet.of(c.cpu for c in self.cpus)

    def cores(self) -> list[CpuSet]:
        """Physical cores as sets of their SMT threads, ordered by their first CPU."""
        seen: dict[tuple[int, int, int], set[int]] = {}
        for cpu in self.cpus:
            seen.setdefault(cpu.core_key, set()).add(cpu.cpu)
        return sorted((CpuSet.of(threads) for threads in seen.values()), key=lambda s: min(s.cpus))

    @property
    def threads_per_core(self) -> int:
        return max((len(core) for core in self.cores()), default=1)
