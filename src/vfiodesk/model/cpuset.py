"""CPU lists in the kernel's cpulist format (``0-3,8-11``), as sysfs and libvirt write them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vfiodesk.errors import InputError

# CONFIG_NR_CPUS is at most 8192 on x86_64 (arch/x86/Kconfig, MAXSMP): a larger number is junk,
# and refusing it early keeps a list like 0-999999999 from building a billion-element set.
MAX_CPUS = 8192


@dataclass(frozen=True)
class CpuSet:
    """An immutable set of logical CPU numbers."""

    cpus: frozenset[int]

    @classmethod
    def of(cls, cpus: Iterable[int]) -> CpuSet:
        return cls(frozenset(cpus))

    @classmethod
    def parse(cls, text: str) -> CpuSet:
        """Parse a cpulist (Documentation/admin-guide/cputopology.rst); empty text is empty."""
        cpus: set[int] = set()
        for chunk in text.strip().split(","):
            if not chunk:
                continue
            first, sep, last = chunk.partition("-")
            try:
                low = int(first)
                high = int(last) if sep else low
            except ValueError:
                raise InputError(f"{text.strip()!r} is not a CPU list",
                                 "write CPUs as a list like 0-3,8-11") from None
            if low < 0 or high < low:
                raise InputError(f"CPU range {chunk!r} is backwards or negative",
                                 "write ranges low-high, like 4-7")
            if high >= MAX_CPUS:
                raise InputError(f"CPU {high} in {chunk[:40]!r} is beyond the kernel's limit of "
                                 f"{MAX_CPUS} CPUs", "write CPU numbers as `vfiodesk cpus` lists them")
            cpus.update(range(low, high + 1))
        return cls(frozenset(cpus))

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.cpus))

    def __len__(self) -> int:
        return len(self.cpus)

    def __contains__(self, cpu: object) -> bool:
        return cpu in self.cpus

    def __or__(self, other: CpuSet) -> CpuSet:
        return CpuSet(self.cpus | other.cpus)

    def __sub__(self, other: CpuSet) -> CpuSet:
        return CpuSet(self.cpus - other.cpus)

    def __and__(self, other: CpuSet) -> CpuSet:
        return CpuSet(self.cpus & other.cpus)

    def __str__(self) -> str:
        """The compact cpulist form, ranges merged."""
        ranges: list[str] = []
        ordered = sorted(self.cpus)
        start = prev = None
        for cpu in [*ordered, None]:
            if cpu is not None and prev is not None and cpu == prev + 1:
                prev = cpu
                continue
            if start is not None and prev is not None:
                ranges.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = cpu
        return ",".join(ranges)
