"""CPU topology from sysfs (Documentation/admin-guide/cputopology.rst, ABI sysfs-devices-system-cpu)."""

from __future__ import annotations

import os
import re

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError, InputError
from vfiodesk.host.sysfs import read_attr, read_int_attr
from vfiodesk.model.cpuset import CpuSet
from vfiodesk.model.topology import CpuTopology, LogicalCpu

_CPU_DIR = re.compile(r"^cpu(\d+)$")


def _cpulist(path: str) -> CpuSet | None:
    text = read_attr(path)
    if text is None:
        return None
    try:
        return CpuSet.parse(text)
    except InputError:
        raise HostReadError(f"{path} holds {text[:40]!r}, expected a CPU list like 0-3,8-11",
                            "the host tree is damaged; take a fresh snapshot") from None


def read_cpu_topology(host: P.HostPaths) -> CpuTopology:
    base = os.path.join(host.root, P.SYS_CPU)
    online = _cpulist(f"{base}/online")
    if online is None:
        try:
            online = CpuSet.of(int(m[1]) for name in os.listdir(base) if (m := _CPU_DIR.match(name)))
        except OSError:
            raise HostReadError(f"{base} does not exist: no CPU topology under {host.root}",
                                "give --root a host tree or snapshot") from None
    nodes = _numa_nodes(host)
    kinds = {kind: _cpulist(os.path.join(host.root, f"sys/devices/cpu_{name}/cpus"))
             for kind, name in (("P", "core"), ("E", "atom"))}
    cpus = []
    for number in online:
        topo = f"{base}/cpu{number}/topology"
        siblings = _cpulist(f"{topo}/thread_siblings_list") or CpuSet.of([number])
        cpus.append(LogicalCpu(
            cpu=number,
            package=read_int_attr(f"{topo}/physical_package_id") or 0,
            die=read_int_attr(f"{topo}/die_id") or 0,
            core=_int(read_int_attr(f"{topo}/core_id"), number),
            siblings=siblings,
            l3=_l3(base, number) or siblings,
            numa_node=next((node for node, members in nodes.items() if number in members), 0),
            kind=next((kind for kind, members in kinds.items() if members and number in members), None),
        ))
    return CpuTopology(tuple(cpus), _cpulist(f"{base}/isolated") or CpuSet.of([]))


def _int(value: int | None, default: int) -> int:
    return default if value is None else value


def _l3(base: str, number: int) -> CpuSet | None:
    cache = f"{base}/cpu{number}/cache"
    try:
        indexes = sorted(name for name in os.listdir(cache) if name.startswith("index"))
    except OSError:
        return None
    for index in indexes:
        if read_attr(f"{cache}/{index}/level") == "3":
            return _cpulist(f"{cache}/{index}/shared_cpu_list")
    return None


def _numa_nodes(host: P.HostPaths) -> dict[int, CpuSet]:
    base = os.path.join(host.root, P.SYS_NODE)
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    nodes = {}
    for name in names:
        if name.startswith("node") and name[4:].isdecimal():
            nodes[int(name[4:])] = _cpulist(f"{base}/{name}/cpulist") or CpuSet.of([])
    return nodes
