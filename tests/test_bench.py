"""The benchmark runner works (its numbers are read by people, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.__main__ import Benchmark, Command, run
from bench.bench_devices import generate_tree


def test_generated_tree_reads_the_same_through_vfiodesk_and_lspci(tmp_path: Path) -> None:
    generate_tree(tmp_path, count=20)
    listing = subprocess.run([sys.executable, "-m", "vfiodesk", "devices", "--json", "--root", str(tmp_path)],
                             capture_output=True, text=True, check=True)
    ours = {d["address"]: f"{d['vendor_id']}:{d['device_id']}" for d in json.loads(listing.stdout)["devices"]}
    lspci = subprocess.run(["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={tmp_path}/sys/bus/pci", "-Dn"],
                           capture_output=True, text=True, check=True)
    theirs = {line.split()[0]: line.split()[2] for line in lspci.stdout.splitlines()}
    assert len(ours) == 20 and ours == theirs


def test_runner_prints_ratios_against_references() -> None:
    benchmark = Benchmark("smoke", Command("true", ["true"]), [Command("sleep", ["sleep", "0.01"])],
                          goals={"sleep": 1.0})
    lines = run(benchmark, repeat=1)
    assert lines[0].startswith("smoke: true ")
    assert "vs sleep" in lines[1] and "ratio" in lines[1] and "goal <= 1.00x: met" in lines[1]
