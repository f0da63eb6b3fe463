"""The lab machine, booted for real: layout, IOMMU kinds, exit codes, bad input, no stray QEMU."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.labkit import lab_cli, lab_slot
from vfiodesk.lab.virtiofs import write_shim

pytestmark = pytest.mark.lab

# Inside the guest: the device listing and the IOMMU kernel log as one result line each.
PROBE = ('echo "@@ $(vfiodesk devices --json | tr -d \'\\n\')"; '
         'echo "@@ $(dmesg | grep -E \'DMAR|AMD-Vi\' | python3 -c \'import json,sys; '
         'print(json.dumps(sys.stdin.read().splitlines()))\')"')


def result_lines(output: str) -> list[Any]:
    return [json.loads(line[3:]) for line in output.splitlines() if line.startswith("@@ ")]


def assert_default_layout(devices: dict[str, Any]) -> None:
    """The groups RECIPE.md saw: GPU pair together, xHCI alone, strangers with their bridge."""
    by_address = {d["address"]: d for d in devices["devices"]}
    groups: dict[int, set[str]] = {}
    for device in devices["devices"]:
        groups.setdefault(device["iommu_group"], set()).add(device["address"])
    gpu = by_address["0000:01:00.0"]
    assert (gpu["vendor_id"], gpu["device_id"], gpu["driver"], gpu["boot_vga"]) == (
        "1234", "1111", "bochs-drm", True)
    assert by_address["0000:01:00.1"]["driver"] == "snd_hda_intel"
    assert groups[gpu["iommu_group"]] == {"0000:01:00.0", "0000:01:00.1"}
    assert groups[by_address["0000:02:00.0"]["iommu_group"]] == {"0000:02:00.0"}
    assert by_address["0000:02:00.0"]["driver"] == "xhci_hcd"
    stranger_group = by_address["0000:04:01.0"]["iommu_group"]
    assert groups[stranger_group] == {"0000:03:00.0", "0000:04:01.0", "0000:04:02.0"}
    assert {by_address["0000:00:1f.0"]["iommu_group"]} == {by_address["0000:00:1f.3"]["iommu_group"]}
    assert any(d["device_id"] == "100e" and d["driver"] == "e1000" for d in devices["devices"])


def test_intel_layout_and_exit_code_propagation(tmp_path: Path) -> None:
    # The guest's root, remounted read-write by root in the guest, still cannot write the host.
    planted = Path(__file__).parent / f".lab-write-probe-{os.getpid()}"
    root_probe = (f'mount -o remount,rw / && touch {shlex.quote(str(planted))}; '
                  'echo "@@ \\"$(findmnt -n -o FSTYPE /)\\""')
    done = lab_cli("run", "--", "sh", "-c", f"{PROBE}; {root_probe}; exit 7")
    assert done.returncode == 7, done.stderr[-2000:]
    devices, log, root_fstype = result_lines(done.stdout)
    assert devices["iommu_enabled"] is True
    assert_default_layout(devices)
    assert any("DMAR: IOMMU enabled" in line for line in log)
    assert not planted.exists()
    # QEMU's own C virtiofsd, translated by vfiodesk.lab.virtiofs, where it is installed
    assert root_fstype == ("virtiofs" if write_shim(tmp_path) else "9p")


def test_amd_layout_and_the_bogus_amd_iommu_on() -> None:
    done = lab_cli("run", "--iommu", "amd", "--cmdline", "amd_iommu=on", "--", "sh", "-c", PROBE)
    assert done.returncode == 0, done.stderr[-2000:]
    devices, log = result_lines(done.stdout)
    assert_default_layout(devices)
    assert any("AMD-Vi: Unknown option - 'on'" in line for line in log)


# TCG shows SMT siblings only with Intel's CPUID topology leaves (AMD's topoext is not emulated).
SMT_ARGS = "-smp 4,sockets=1,cores=2,threads=2 -cpu max,vendor=GenuineIntel"


def test_bare_machine_with_smt_and_numa_layout() -> None:
    script = ('echo "@@ $(vfiodesk devices --json | tr -d \'\\n\')"; '
              'echo "@@ {\\"siblings\\": '
              '\\"$(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list)\\", '
              '\\"node1\\": \\"$(cat /sys/devices/system/node/node1/cpulist)\\"}"')
    done = lab_cli("run", "--bare", "--cpus", "4", "--numa", "512M,cpus=0-1", "--numa", "512M,cpus=2-3",
                   "--qemu-args", SMT_ARGS, "--", "sh", "-c", script)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    devices, topology = result_lines(done.stdout)
    ids = {d["vendor_id"] + ":" + d["device_id"] for d in devices["devices"]}
    assert "1234:1111" not in ids and "1b36:000d" not in ids  # no default devices
    assert topology == {"siblings": "0-1", "node1": "2-3"}


def test_broken_qemu_args_and_missing_command_are_clear() -> None:
    broken = lab_cli("run", "--qemu-args", "-device no-such-device", "--", "true")
    assert broken.returncode != 0
    assert "QEMU refused to start the lab" in broken.stderr and "no-such-device" in broken.stderr
    missing = lab_cli("run", "--", "no-such-command-here")
    assert missing.returncode == 127
    assert "'no-such-command-here' was not found inside the lab" in missing.stderr


def _qemu_descendants(ancestor: int) -> set[int]:
    """QEMU processes below ``ancestor`` (the CLI -> vng -> virtme -> qemu chain)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            name_end = stat.rindex(")")
            names[int(entry)] = stat[stat.index("(") + 1:name_end]
            parents[int(entry)] = int(stat[name_end + 2:].split()[1])
    found, frontier = set(), {ancestor}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        found |= frontier
    return {pid for pid in found if names.get(pid, "").startswith("qemu-system")}


# Ctrl-C once the guest runs its command; SIGTERM (a CI timeout) while the kernel still boots.
@pytest.mark.parametrize(("sig", "when"), [(signal.SIGINT, "booted"), (signal.SIGTERM, "booting")],
                         ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_no_qemu_behind(sig: signal.Signals, when: str) -> None:
    with lab_slot():
        process = subprocess.Popen([sys.executable, "-m", "vfiodesk", "lab", "run", "--", "sh", "-c",
                                    "echo booted; sleep 600"], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        if when == "booted":
            for line in process.stdout:
                if "booted" in line:
                    break
        deadline = time.monotonic() + 120
        while not (mine := _qemu_descendants(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mine, "the lab's QEMU should be running"
        process.send_signal(sig)
        assert process.wait(timeout=60) == 130
        deadline = time.monotonic() + 15
        while any(os.path.exists(f"/proc/{pid}") for pid in mine) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(os.path.exists(f"/proc/{pid}") for pid in mine)
