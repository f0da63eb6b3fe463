"""Hugepages reserved at boot for the VM's memory (Documentation/admin-guide/mm/hugetlbpage.rst).

2 MiB pages: vm.nr_hugepages in sysctl.d, as the seed does. 1 GiB pages can only be reserved
reliably on the kernel command line (hugepagesz=1G hugepages=N), before memory fragments.
"""

from __future__ import annotations

from vfiodesk import paths as P
from vfiodesk.errors import InputError, RefusedError
from vfiodesk.model.sizes import GIB, MIB, format_size
from vfiodesk.plan.hostconfig.change import FileChange, HostPlan, encode
from vfiodesk.plan.hostconfig.params import Want

SYSCTL_FILE = f"{P.ETC_SYSCTL_D}/60-vfiodesk-hugepages.conf"
PAGE_SIZES = {"2M": 2 * MIB, "1G": GIB}
_HOST_KEEPS = 2 * GIB  # below this the host itself starts swapping or killing


def page_count(size: int, page_size: str) -> int:
    if page_size not in PAGE_SIZES:
        raise InputError(f"unknown page size {page_size!r}", "use --page-size 2M or 1G")
    if size < MIB:
        raise InputError(f"{size} bytes is smaller than a page", "give the VM's memory with a unit, like 8G")
    return -(-size // PAGE_SIZES[page_size])


def memory_statement(pages: int, page_size: str, mem_total: int | None) -> str:
    """What the reservation takes from the host; refused when the host would keep too little."""
    reserved = pages * PAGE_SIZES[page_size]
    what = f"{pages} pages of {page_size}iB = {format_size(reserved)}"
    if mem_total is None:
        return f"reserves {what} at boot (total memory unknown)"
    left, total = _in_mib(max(mem_total - reserved, 0)), _in_mib(mem_total)
    if mem_total - reserved < _HOST_KEEPS:
        raise RefusedError(f"{what} would leave the host {left} of its {total}",
                           f"reserve less; the host needs at least {format_size(_HOST_KEEPS)}")
    return f"reserves {what} at boot, taken from the host for good: it keeps {left} of {total}"


def _in_mib(size: int) -> str:
    return format_size(size // MIB * MIB) if size >= MIB else "0MiB"


def plan_sysctl(pages: int, statement: str, runtime_pages: int | None) -> HostPlan:
    text = ("# vfiodesk host hugepages: 2 MiB pages for the VM, reserved at every boot; the host\n"
            "# cannot use or swap this memory (Documentation/admin-guide/mm/hugetlbpage.rst)\n"
            f"vm.nr_hugepages = {pages}\n")
    undo = (("sysctl", "-w", f"vm.nr_hugepages={runtime_pages}"),) if runtime_pages is not None else ()
    return HostPlan("hugepages", (FileChange(SYSCTL_FILE, None, encode(text)),),
                    (("sysctl", "-p", f"/{SYSCTL_FILE}"),), undo,
                    notes=(statement, "allocating now may find fewer free 2 MiB blocks than at boot: "
                           "check HugePages_Total in /proc/meminfo",
                           "a VM made with --hugepages uses these pages first; its hook allocates only "
                           "what is missing, so the two never add up"))


def gigantic_wants(pages: int, cpu_flags: frozenset[str]) -> tuple[Want, ...]:
    if "pdpe1gb" not in cpu_flags:
        raise RefusedError("this CPU has no 1 GiB pages (no pdpe1gb flag in /proc/cpuinfo)",
                           "use --page-size 2M")
    # default_hugepagesz too: a domain's plain <hugepages/> backing takes the default size, and
    # the hook's runtime allocation counts these pages (one budget) only when they are the default.
    return (Want.value("default_hugepagesz", "1G"), Want.value("hugepagesz", "1G"),
            Want.value("hugepages", str(pages)))
