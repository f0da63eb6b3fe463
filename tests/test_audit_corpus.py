"""`vm audit` over published passthrough domains (tests/data/realworld, see its SOURCES): it says
what a reader of each XML would, and after `vm tune` no finding fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost
from tests.test_pinning import amd_two_ccds, write_topology
from tests.test_vm_audit import findings
from vfiodesk.errors import ExitStatus

CORPUS = Path(__file__).parent / "data" / "realworld"


def corpus_host(root: Path) -> FakeHost:
    """A Ryzen like most published domains' (two CCDs, invariant TSC), and none of their PCI
    devices: what a reader of the XML alone knows."""
    tree = write_topology(root, amd_two_ccds())
    tree.file("proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
                              "flags\t\t: fpu svm topoext constant_tsc nonstop_tsc\n\n")
    return tree


def test_published_domains_before_and_after_tune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(CORPUS.glob("*.xml"))
    assert len(files) >= 25
    host = corpus_host(tmp_path / "host")
    rows = []
    for path in files:
        text = path.read_text()
        before = run_cli(capsys, "vm", "audit", "--xml", str(path), "--json", "--root", str(host.root))
        found = findings(before)
        failed = any(f["status"] == "fail" for f in found.values())
        assert before.status == (ExitStatus.HOST_NOT_READY if failed else ExitStatus.OK)
        # What a reader sees in the text: hugepages, a balloon, pinning, a TPM, the hostdevs.
        assert (found["hugepages"]["status"] == "pass") == ("<hugepages" in text), path.name
        assert (found["cpu-pinning"]["status"] != "warn" or "cpuset=" not in text
                or "pinned 1:1" in found["cpu-pinning"]["summary"]), path.name
        assert "tpm" not in found or (found["tpm"]["status"] == "pass") == ("<tpm " in text), path.name
        assert (found["gpu-group"]["summary"] != "no PCI device is passed through") == ("<hostdev" in text)
        tuned = run_cli(capsys, "vm", "tune", "--xml", str(path), "--root", str(host.root))
        assert tuned.status == 0, f"{path.name}: {tuned.stderr}"
        tuned_path = tmp_path / path.name
        tuned_path.write_text(tuned.stdout)
        after = run_cli(capsys, "vm", "audit", "--xml", str(tuned_path), "--json", "--root", str(host.root))
        left = {key: f["summary"] for key, f in findings(after).items() if f["status"] == "fail"}
        assert not left and after.status == ExitStatus.OK, f"{path.name}: {left}"
        assert after.json()["score"] >= before.json()["score"], path.name
        rows.append((path.name, before.json()["score"], after.json()["score"]))
    mean = (sum(r[1] for r in rows) / len(rows), sum(r[2] for r in rows) / len(rows))
    with capsys.disabled():
        print(f"\naudit scores of {len(rows)} published domains, before -> after vm tune:")
        for name, old, new in rows:
            print(f"  {old:3d} -> {new:3d}  {name}")
        print(f"  mean {mean[0]:.0f} -> {mean[1]:.0f}")
