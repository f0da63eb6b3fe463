"""`vfiodesk devices --json` on a generated 300-device tree, against lspci on the same tree, the
well-known shell loop over iommu_groups that runs lspci once per device, a bare Python start (the
floor any Python tool pays), and a Python start that imports only what the model's frozen
dataclasses and the JSON output need (this design's floor, before any file is read)."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

from tests.fakehost import PCI_IDS_SAMPLE, FakeHost

from bench.__main__ import Benchmark, Command

DEVICES = 300


def generate_tree(root: Path, count: int = DEVICES) -> FakeHost:
    """``count`` functions: GPU + audio pairs, NVMe, NICs, USB, spread over groups like a server."""
    host = FakeHost(root)
    kinds = [(0x10DE, 0x1B80, 0x030000, "nouveau"), (0x10DE, 0x10F0, 0x040300, "snd_hda_intel"),
             (0x144D, 0xA808, 0x010802, "nvme"), (0x8086, 0x1533, 0x020000, "igb"),
             (0x1B36, 0x000D, 0x0C0330, "xhci_hcd")]
    for index in range(count):
        bus, function = divmod(index, 2)
        vendor, device, cls, driver = kinds[index % len(kinds)]
        host.pci(f"0000:{bus % 256:02x}:{bus // 256:02x}.{function}", vendor, device, cls,
                 driver=driver, group=bus)
    host.file("usr/share/misc/pci.ids", Path("/usr/share/misc/pci.ids").read_text()
              if Path("/usr/share/misc/pci.ids").exists() else PCI_IDS_SAMPLE)
    return host


def benchmarks() -> list[Benchmark]:
    root = Path(tempfile.mkdtemp(prefix="vfiodesk-bench-"))
    generate_tree(root)
    sysfs = f"sysfs.path={root}/sys/bus/pci"
    lspci = ["lspci", "-A", "linux-sysfs", "-O", sysfs, "-i", f"{root}/usr/share/misc/pci.ids"]
    loop = (f'for g in {shlex.quote(str(root))}/sys/kernel/iommu_groups/*; do '
            f'echo "IOMMU group ${{g##*/}}"; for d in "$g"/devices/*; do '
            f'{shlex.join(lspci)} -nns "${{d##*/}}"; done; done')
    vfiodesk = os.path.join(os.path.dirname(sys.executable), "vfiodesk")
    return [Benchmark(
        name=f"devices --json, {DEVICES} devices",
        subject=Command("vfiodesk devices --json", [vfiodesk, "devices", "--json", "--root", str(root)]),
        references=[Command("lspci -nn", [*lspci, "-nn"]),
                    Command("python start", [sys.executable, "-c", ""]),
                    Command("python + dataclasses, json", [sys.executable, "-c", "import dataclasses, json"]),
                    Command("shell loop", ["bash", "-c", loop])],
        goals={"lspci -nn": 2.0, "shell loop": 0.1},
    )]
