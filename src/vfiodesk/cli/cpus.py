"""`vfiodesk cpus`: the host's CPU topology and the VM's pinning plan, as a picture."""

from __future__ import annotations

import click

from vfiodesk.cli.options import console, emit_json, host_paths, json_option, root_option
from vfiodesk.host.cpu import read_cpu_topology
from vfiodesk.model.topology import CpuTopology
from vfiodesk.plan.pinning import PinningPlan, plan_pinning


@click.command()
@click.option("--vcpus", type=int, default=None, help="vCPUs for the VM (default: the best L3 domain).")
@json_option
@root_option
def cpus(vcpus: int | None, as_json: bool, root: str | None) -> None:
    """Show host cores (package / L3 / NUMA) and which go to the VM, the host, the emulator."""
    topology = read_cpu_topology(host_paths(root))
    plan = plan_pinning(topology, vcpus)
    if as_json:
        emit_json({"topology": topology_json(topology), "plan": plan_json(plan)})
        return
    print_picture(topology, plan)


def topology_json(topology: CpuTopology) -> list[dict[str, object]]:
    return [{"cpu": c.cpu, "package": c.package, "die": c.die, "core": c.core,
             "siblings": str(c.siblings), "l3": str(c.l3), "numa_node": c.numa_node, "kind": c.kind}
            for c in topology.cpus]


def plan_json(plan: PinningPlan) -> dict[str, object]:
    return {"vcpupin": [{"vcpu": v, "cpuset": h} for v, h in plan.vcpu_pins],
            "emulatorpin": str(plan.emulator_cpus), "iothreadpin": str(plan.iothread_cpus),
            "host_cpus": str(plan.host_cpus), "numa_node": plan.numa_node,
            "guest": {"sockets": plan.guest.sockets, "dies": plan.guest.dies,
                      "cores": plan.guest.cores, "threads": plan.guest.threads},
            "notes": list(plan.notes)}


def print_picture(topology: CpuTopology, plan: PinningPlan) -> None:
    out = console()
    vm = {host: vcpu for vcpu, host in plan.vcpu_pins}
    domains: dict[tuple[int, int, str], list[str]] = {}
    for core in topology.cores():
        first = topology.cpu(min(core.cpus))
        cells = []
        for cpu in core:
            if cpu in vm:
                cells.append(f"[bold green]{cpu:>3}→v{vm[cpu]:<2}[/]")
            elif cpu in plan.emulator_cpus:
                cells.append(f"[cyan]{cpu:>3} emu[/]")
            else:
                cells.append(f"[dim]{cpu:>3} host[/]")
        domains.setdefault((first.numa_node, first.package, str(first.l3)), []).append(
            "[" + " ".join(cells) + "]" + (f" {first.kind}" if first.kind else ""))
    for (node, package, l3), cores in sorted(domains.items()):
        out.print(f"NUMA {node} · package {package} · L3 {l3}")
        for index in range(0, len(cores), 4):
            out.print("  " + "  ".join(cores[index:index + 4]))
    guest = plan.guest
    out.print(f"VM: {len(plan.vcpu_pins)} vCPUs as {guest.cores} cores x {guest.threads} threads on "
              f"{plan.vm_cpus}; emulator + I/O threads on {plan.emulator_cpus}; "
              f"host keeps {plan.host_cpus}" + (f"; memory on NUMA node {plan.numa_node}"
                                               if plan.numa_node is not None else ""))
    for note in plan.notes:
        out.print(f"[yellow]note:[/] {note}")
