"""Bind + restore of the lab's GPU pair with vfiodesk vs the same sysfs writes from plain sh,
timed inside one lab boot (real kernel, real drivers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.labkit import run_lab

SH_SCRIPT = r"""
for d in 0000:01:00.0 0000:01:00.1; do
  echo vfio-pci > /sys/bus/pci/devices/$d/driver_override
  echo $d > /sys/bus/pci/devices/$d/driver/unbind
  echo $d > /sys/bus/pci/drivers_probe
done
for d in 0000:01:00.0 0000:01:00.1; do
  echo > /sys/bus/pci/devices/$d/driver_override
  echo $d > /sys/bus/pci/devices/$d/driver/unbind
  echo $d > /sys/bus/pci/drivers_probe
done
"""

GUEST = r"""
import json, statistics, subprocess, sys, time
vfiodesk = [sys.executable, "-m", "vfiodesk"]
subprocess.run(["modprobe", "vfio-pci"], check=True)
def timed(commands):
    samples = []
    for index in range(REPEAT + 1):
        started = time.perf_counter()
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        if index:
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)
from vfiodesk.binding.engine import bind_devices, release_devices
from vfiodesk.model.pci import parse_pci_pattern
from vfiodesk.paths import HostPaths
def engine_round():
    started = time.perf_counter()
    bind_devices(HostPaths(), [parse_pci_pattern("01:00")])
    release_devices(HostPaths(), None)
    return time.perf_counter() - started
engine_round()
engine = statistics.median(engine_round() for _ in range(REPEAT))
cli = timed([vfiodesk + ["bind", "01:00"], vfiodesk + ["unbind", "01:00"]])
plain = timed([["sh", "-c", SH_SCRIPT]])
print("@@ " + json.dumps({"engine": engine, "cli": cli, "sh": plain}))
"""


def report(repeat: int) -> list[str]:
    script = GUEST.replace("REPEAT", str(repeat)).replace("SH_SCRIPT", repr(SH_SCRIPT))
    path = Path("/tmp/vfiodesk-bench-bind.py")
    path.write_text(script)
    result = run_lab([sys.executable, str(path)])
    line = next(line for line in result.output.splitlines() if line.startswith("@@ "))
    times = json.loads(line[3:])
    ratio = times["engine"] / times["sh"]
    return [f"bind + restore of the GPU pair (lab, TCG): engine {times['engine'] * 1000:.0f} ms",
            f"  vs plain sh writes {times['sh'] * 1000:.0f} ms: ratio {ratio:.2f}x "
            f"(goal <= 1.20x: {'met' if ratio <= 1.2 else 'MISSED'})",
            f"  (two CLI runs incl. Python start-up under TCG: {times['cli'] * 1000:.0f} ms, "
            f"{times['cli'] / times['sh']:.1f}x)"]
