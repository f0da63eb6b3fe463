"""`vfiodesk setup --yes` in the lab across a real reboot: two boots share a state directory.

The first boots with the IOMMU off: setup writes intel_iommu=on into the guest's GRUB file and
says reboot. The test then boots again with the command line that GRUB file gives (after an
intel_iommu=off, so only setup's edit can turn the IOMMU on): setup sees the IOMMU groups,
goes on to a defined VM with the hook installed, `up`/`down` hand the GPU over and back, and
`setup undo` puts everything back.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.labkit import SCENARIOS, results_by_key, run_lab
from vfiodesk.lab.boot import LabSpec

pytestmark = pytest.mark.lab
GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'


def boot(phase: str, shared: Path, cmdline: str) -> dict[str, Any]:
    # An Intel CPU model to go with the emulated VT-d (TCG's default CPU says AuthenticAMD).
    spec = LabSpec(cmdline=cmdline, rw_dirs=(shared,), qemu_args="-cpu max,vendor=GenuineIntel")
    result = run_lab([sys.executable, str(SCENARIOS / "setup_reboot.py"), phase, str(shared)], spec,
                     timeout=1500)  # TCG on a busy 2-core machine
    found = results_by_key(result)
    assert found, result.output[-4000:]
    return found


def grub_cmdline(grub: str) -> str:
    match = re.search(r'^GRUB_CMDLINE_LINUX_DEFAULT=(.*)$', grub, re.MULTILINE)
    assert match is not None, grub
    return " ".join(shlex.split(match[1]))


@pytest.fixture
def shared() -> Iterator[Path]:
    """Both boots' directory. Not under /tmp, /var, /etc...: virtme-ng overlays those in the
    guest, and a write there would stay in the first boot's memory."""
    directory = Path(tempfile.mkdtemp(prefix="vfiodesk-lab-", dir=Path(__file__).parent.parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_setup_across_a_reboot(shared: Path) -> None:
    for directory in ("state", "default", "sbin"):
        (shared / directory).mkdir(parents=True)
    (shared / "default/grub").write_text(GRUB)
    update_grub = shared / "sbin/update-grub"
    update_grub.write_text(f"#!/bin/sh\necho ran > {shared}/update-grub.ran\n")
    update_grub.chmod(0o755)
    for iso in ("win10.iso", "virtio-win.iso"):
        (shared / iso).write_text("iso")
    shared.chmod(0o755)

    first = boot("before", shared, "intel_iommu=off")["setup-before"]
    assert first["groups"] == [], first
    assert first["rc"] == 0, first
    assert "reboot now" in first["out"], first
    assert first["status"]["next"] == "reboot"
    steps = {step["id"]: step["status"] for step in first["status"]["steps"]}
    assert steps["iommu"] == "done" and steps["gpu"] == "blocked"
    grub = (shared / "default/grub").read_text()
    assert grub_cmdline(grub) == "quiet intel_iommu=on", first
    assert (shared / "update-grub.ran").exists()

    found = boot("after", shared, "intel_iommu=off " + grub_cmdline(grub))
    second = found["setup-after"]
    assert second["rc"] == 0, second
    assert "next: install Windows" in second["out"], second
    steps = {step["id"]: step for step in second["status"]["steps"]}
    assert steps["reboot"]["status"] == "done" and "IOMMU groups" in steps["reboot"]["summary"]
    assert steps["gpu"]["status"] == "done" and steps["vm"]["status"] == "done"
    assert second["status"]["next"] == "windows"
    assert second["defined"] and second["hook"]
    assert found["up"]["rc"] == 0, found["up"]
    assert set(found["up"]["drivers"].values()) == {"vfio-pci"}
    assert found["down"]["rc"] == 0 and found["down"]["drivers"] == found["down"]["original"]
    undo = found["undo"]
    assert undo["rc"] == 0, undo
    assert not undo["defined"] and not undo["hook"]
    assert undo["grub"] == GRUB
