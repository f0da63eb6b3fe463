"""The benchmark runner works (its numbers are read by people, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import Benchmark, Command, run
from bench.bench_devices import generate_tree

from vfiodesk.host.archive import extract_archive


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
    # A wide margin: on a busy machine starting `true` can take tens of milliseconds.
    benchmark = Benchmark("smoke", Command("true", ["true"]), [Command("sleep", ["sleep", "0.5"])],
                          goals={"sleep": 1.0})
    lines = run(benchmark, repeat=1)
    assert lines[0].startswith("smoke: true ")
    assert "vs sleep" in lines[1] and "ratio" in lines[1] and "goal <= 1.00x: met" in lines[1]


def _fast_and_full(root: Path) -> tuple[str, str, set[str]]:
    """`devices --json` through the fast path and through the click CLI, and what the fast
    path imported."""
    argv = ["devices", "--json", "--root", str(root)]
    fast = subprocess.run([sys.executable, "-X", "importtime", "-m", "vfiodesk", *argv],
                          capture_output=True, text=True, check=True)
    full = subprocess.run([sys.executable, "-c", "from vfiodesk.cli.main import run; run()", *argv],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in fast.stderr.splitlines()}
    return fast.stdout, full.stdout, imported


def test_devices_json_fast_path_says_what_the_full_cli_says_without_click(tmp_path: Path) -> None:
    generate_tree(tmp_path, count=12)
    fast, full, imported = _fast_and_full(tmp_path)
    assert fast == full and len(json.loads(fast)["devices"]) == 12
    assert not {name for name in imported if name.split(".")[0] in ("click", "rich", "typing", "lxml")}
    # What the fast path does not handle goes to the full CLI: errors keep their hint.
    missing = subprocess.run([sys.executable, "-m", "vfiodesk", "devices", "--json", "--root",
                              str(tmp_path / "nowhere")], capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "hint:" in missing.stderr


@pytest.mark.parametrize("snapshot", sorted((Path(__file__).parent / "data/snapshots").glob("*.tar.gz")),
                         ids=lambda path: path.name)
def test_devices_json_fast_and_full_agree_on_captured_hosts(snapshot: Path, tmp_path: Path) -> None:
    """The captured trees of real hosts (extracted: the fast path reads directories only)."""
    (tmp_path / "host").mkdir()
    extract_archive(snapshot, tmp_path / "host")
    fast, full, _ = _fast_and_full(tmp_path / "host")
    assert fast == full and json.loads(fast)["devices"]
