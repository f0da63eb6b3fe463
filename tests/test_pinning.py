"""The pinning planner on hand-built topologies (as sysfs trees) and on this machine."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cli import run_cli
from tests.fakehost import FakeHost
from vfiodesk.errors import InputError
from vfiodesk.host.cpu import read_cpu_topology
from vfiodesk.model.cpuset import CpuSet
from vfiodesk.model.topology import CpuTopology
from vfiodesk.paths import HostPaths
from vfiodesk.plan.pinning import plan_pinning


@dataclass(frozen=True)
class Core:
    threads: tuple[int, ...]
    package: int = 0
    l3: int = 0
    node: int = 0
    kind: str | None = None


def write_topology(root: Path, cores: list[Core]) -> FakeHost:
    """sysfs files for ``cores``, as the kernel lays them out."""
    host = FakeHost(root)
    base = "sys/devices/system/cpu"
    l3_members: dict[int, list[int]] = {}
    node_members: dict[int, list[int]] = {}
    for core in cores:
        l3_members.setdefault(core.l3, []).extend(core.threads)
        node_members.setdefault(core.node, []).extend(core.threads)
    for index, core in enumerate(cores):
        for cpu in core.threads:
            topo = f"{base}/cpu{cpu}/topology"
            host.file(f"{topo}/physical_package_id", f"{core.package}\n")
            host.file(f"{topo}/die_id", "0\n")
            host.file(f"{topo}/core_id", f"{index}\n")
            host.file(f"{topo}/thread_siblings_list", f"{CpuSet.of(core.threads)}\n")
            host.file(f"{base}/cpu{cpu}/cache/index3/level", "3\n")
            host.file(f"{base}/cpu{cpu}/cache/index3/shared_cpu_list", f"{CpuSet.of(l3_members[core.l3])}\n")
    every = [cpu for core in cores for cpu in core.threads]
    host.file(f"{base}/online", f"{CpuSet.of(every)}\n")
    for node, members in node_members.items():
        host.file(f"sys/devices/system/node/node{node}/cpulist", f"{CpuSet.of(members)}\n")
    for kind, name in (("P", "core"), ("E", "atom")):
        members = [cpu for core in cores if core.kind == kind for cpu in core.threads]
        if members:
            host.file(f"sys/devices/cpu_{name}/cpus", f"{CpuSet.of(members)}\n")
    return host


def intel_4c8t() -> list[Core]:  # Linux numbers siblings n and n+4
    return [Core((n, n + 4)) for n in range(4)]


def amd_two_ccds() -> list[Core]:  # 16 cores, 2 CCDs of 8, siblings n and n+16
    return [Core((n, n + 16), l3=n // 8) for n in range(16)]


def hybrid_8p_8e() -> list[Core]:  # P-cores with SMT (0-15), E-cores single-threaded (16-23)
    return [Core((2 * n, 2 * n + 1), kind="P") for n in range(8)] + \
           [Core((16 + n,), kind="E", l3=0) for n in range(8)]


def two_sockets() -> list[Core]:  # 2 x 8 cores, siblings n and n+16, one NUMA node per socket
    return [Core((n, n + 16), package=n // 8, l3=n // 8, node=n // 8) for n in range(16)]


def topology_of(tmp_path: Path, cores: list[Core]) -> CpuTopology:
    return read_cpu_topology(write_topology(tmp_path, cores).paths)


def test_intel_4c8t_keeps_siblings_together_and_core_0_for_the_host(tmp_path: Path) -> None:
    plan = plan_pinning(topology_of(tmp_path, intel_4c8t()), 6)
    assert plan.vcpu_pins == ((0, 1), (1, 5), (2, 2), (3, 6), (4, 3), (5, 7))
    assert str(plan.emulator_cpus) == "0,4" and str(plan.host_cpus) == "0,4"
    assert (plan.guest.cores, plan.guest.threads) == (3, 2)


def test_amd_stays_inside_one_ccd_when_it_fits(tmp_path: Path) -> None:
    plan = plan_pinning(topology_of(tmp_path, amd_two_ccds()), 16)
    assert str(plan.vm_cpus) == "8-15,24-31"  # the whole second CCD; CCD 0 keeps CPU 0
    assert plan.notes == ()
    default = plan_pinning(topology_of(tmp_path / "b", amd_two_ccds()))
    assert len(default.vcpu_pins) == 16 and str(default.vm_cpus) == "8-15,24-31"
    wide = plan_pinning(topology_of(tmp_path / "c", amd_two_ccds()), 20)
    assert any("L3" in note for note in wide.notes)


def test_hybrid_prefers_p_cores(tmp_path: Path) -> None:
    topology = topology_of(tmp_path, hybrid_8p_8e())
    plan = plan_pinning(topology, 8)
    assert all(topology.cpu(cpu).kind == "P" for cpu in plan.vm_cpus)
    assert plan.guest.threads == 2
    with pytest.raises(InputError, match="P-cores only"):
        plan_pinning(topology, 16)


def test_two_sockets_keep_the_vm_on_one_numa_node(tmp_path: Path) -> None:
    plan = plan_pinning(topology_of(tmp_path, two_sockets()), 8)
    assert str(plan.vm_cpus) == "1-4,17-20" and plan.numa_node == 0 and plan.notes == ()
    whole = plan_pinning(topology_of(tmp_path / "b", two_sockets()), 16)
    assert str(whole.vm_cpus) == "8-15,24-31" and whole.numa_node == 1  # only socket 1 fits


def test_no_smt_and_refusals(tmp_path: Path) -> None:
    topology = topology_of(tmp_path, [Core((n,)) for n in range(4)])
    plan = plan_pinning(topology, 3)
    assert str(plan.vm_cpus) == "1-3" and plan.guest.threads == 1
    with pytest.raises(InputError, match="more than this host can give"):
        plan_pinning(topology, 4)
    with pytest.raises(InputError, match="split an SMT core"):
        plan_pinning(topology_of(tmp_path / "smt", intel_4c8t()), 3)
    with pytest.raises(InputError, match="is not a VM"):
        plan_pinning(topology, 0)


def test_cpus_command_json_and_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = write_topology(tmp_path, intel_4c8t())
    payload = run_cli(capsys, "cpus", "--json", "--vcpus", "4", "--root", str(host.root)).json()
    assert payload["plan"]["vcpupin"][:2] == [{"vcpu": 0, "cpuset": 1}, {"vcpu": 1, "cpuset": 5}]
    assert payload["plan"]["guest"] == {"sockets": 1, "dies": 1, "cores": 2, "threads": 2}
    picture = run_cli(capsys, "cpus", "--vcpus", "4", "--root", str(host.root)).stdout
    assert "1→v0" in picture and "0 emu" in picture and "host keeps 0,3-4,7" in picture
    refused = run_cli(capsys, "cpus", "--vcpus", "64", "--root", str(host.root))
    assert refused.status == 2 and "more than this host can give" in refused.stderr


def test_this_machine_and_the_lab_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    # This machine, read-only, against util-linux's own reading of the same sysfs.
    own = read_cpu_topology(HostPaths())
    rows = [line.split(",") for line in subprocess.run(
        ["lscpu", "-p=CPU,CORE,SOCKET,NODE"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line and not line.startswith("#")]
    assert [cpu.cpu for cpu in own.cpus] == sorted(int(row[0]) for row in rows)
    by_core: dict[tuple[str, str], set[int]] = {}
    for cpu, core, socket, _ in rows:
        by_core.setdefault((socket, core), set()).add(int(cpu))
    for cpu, core, socket, node in rows:
        mine = next(c for c in own.cpus if c.cpu == int(cpu))
        assert set(mine.siblings) == by_core[(socket, core)]
        assert mine.numa_node == int(node or 0)
    assert len({c.package for c in own.cpus}) == len({row[2] for row in rows})
    snapshot = Path(__file__).parent / "data/snapshots/lab-intel.tar.gz"
    payload = run_cli(capsys, "cpus", "--json", "--root", str(snapshot)).json()
    assert [c["cpu"] for c in payload["topology"]] == [0, 1]  # the lab boots with 2 CPUs
    assert payload["plan"]["emulatorpin"] == "0"


@st.composite
def topologies(draw: st.DrawFn) -> list[Core]:
    threads = draw(st.sampled_from([1, 2]))
    count = draw(st.integers(2, 12))
    l3_size = draw(st.integers(1, count))
    return [Core(tuple(range(n * threads, n * threads + threads)), l3=n // l3_size) for n in range(count)]


@settings(max_examples=40, deadline=None)
@given(topologies(), st.data())
def test_plan_invariants(tmp_path_factory: pytest.TempPathFactory, cores: list[Core],
                         data: st.DataObject) -> None:
    topology = topology_of(tmp_path_factory.mktemp("t"), cores)
    threads = len(cores[0].threads)
    wanted = threads * data.draw(st.integers(1, len(cores) - 1))
    plan = plan_pinning(topology, wanted)
    hosts = [host for _, host in plan.vcpu_pins]
    assert len(hosts) == len(set(hosts)) == wanted  # no CPU twice, count honoured
    assert not set(hosts) & set(topology.cpu(0).siblings.cpus)  # CPU 0's core stays home
    for vcpu in range(0, wanted, threads):  # guest core = one whole host core
        pair = {h for v, h in plan.vcpu_pins if vcpu <= v < vcpu + threads}
        assert pair == set(topology.cpu(min(pair)).siblings.cpus)
    assert [v for v, _ in plan.vcpu_pins] == list(range(wanted))




def test_lab_smt_numa_capture(capsys: pytest.CaptureFixture[str]) -> None:
    """Captured inside the lab: 2 sockets x 2 cores x 2 threads, one NUMA node per socket."""
    snapshot = Path(__file__).parent / "data/snapshots/lab-smt-numa.tar.gz"
    payload = run_cli(capsys, "cpus", "--json", "--root", str(snapshot)).json()
    siblings = {c["cpu"]: c["siblings"] for c in payload["topology"]}
    assert siblings[0] == "0-1" and siblings[7] == "6-7"
    plan = payload["plan"]
    assert [p["cpuset"] for p in plan["vcpupin"]] == [4, 5, 6, 7]  # the whole second node
    assert plan["numa_node"] == 1 and plan["emulatorpin"] == "0-1"
    assert plan["guest"] == {"sockets": 1, "dies": 1, "cores": 2, "threads": 2}
    refused = run_cli(capsys, "cpus", "--vcpus", "3", "--root", str(snapshot))
    assert refused.status == 2 and "split an SMT core" in refused.stderr
