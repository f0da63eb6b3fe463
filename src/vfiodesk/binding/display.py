"""The host's graphical session around a single-GPU hand-off: the display manager and the
processes that still hold the GPU's device nodes.

Every display manager's unit installs the alias ``display-manager.service`` (gdm, sddm,
lightdm: ``Alias=display-manager.service`` in their [Install] sections), so stopping and
starting that name works whichever one the host runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vfiodesk import paths as P
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.sysfs import read_attr
from vfiodesk.host.usage import holders_of, read_open_files
from vfiodesk.model.pci import PciAddress
from vfiodesk.plan.bind import NVIDIA_VENDOR
from vfiodesk.runner import CommandRunner

DISPLAY_MANAGER = "display-manager.service"
# After the unit stops, the session's own processes (compositor, PipeWire on the HDMI audio)
# take a few seconds to exit; a holder still there after this is named and the start refused.
HOLDERS_TIMEOUT = 15.0


def gpu_device_nodes(host: P.HostPaths, addresses: Sequence[PciAddress]) -> set[str]:
    """Device nodes that keep the GPU and its audio function busy: /dev/dri/cardN and
    renderDN (the function's drm/ children), the ALSA nodes of its sound card (sound/cardN:
    controlCN, pcmCND*, hwCND*), and /dev/nvidia* for an NVIDIA card. A ``*`` ends a prefix."""
    nodes: set[str] = set()
    for address in addresses:
        base = host.pci_device(str(address))
        for sub, make in (("drm", _drm_nodes), ("sound", _sound_nodes)):
            try:
                names = os.listdir(base / sub)
            except OSError:
                continue
            for name in names:
                nodes |= make(name)
        vendor = read_attr(base / "vendor")
        if vendor is not None and vendor.lower() == f"0x{NVIDIA_VENDOR:04x}":
            nodes.add("/dev/nvidia*")
    return nodes


def _drm_nodes(name: str) -> set[str]:
    return {f"/dev/dri/{name}"} if name.startswith(("card", "renderD")) else set()


def _sound_nodes(name: str) -> set[str]:
    if not (name.startswith("card") and name[4:].isdigit()):
        return set()
    number = name[4:]
    return {f"/dev/snd/controlC{number}", f"/dev/snd/pcmC{number}D*", f"/dev/snd/hwC{number}D*"}


def wait_for_holders(host: P.HostPaths, nodes: set[str], timeout: float = HOLDERS_TIMEOUT,
                     sleep: Callable[[float], None] = time.sleep) -> tuple[str, ...]:
    """Poll until no process holds ``nodes``; the ``pid comm`` of those still there at the end.

    A tree's proc/ never changes by itself: it is read once."""
    deadline = time.monotonic() + timeout
    while True:
        holders = holders_of(read_open_files(host), nodes)
        if not holders or time.monotonic() >= deadline or not host.is_real_host:
            return holders
        sleep(0.2)


@dataclass
class DisplayManager:
    """``display-manager.service`` through systemctl (printed, not run, under a fake root)."""

    runner: CommandRunner

    def is_active(self) -> bool:
        result = self.runner.run(["systemctl", "is-active", "--quiet", DISPLAY_MANAGER], check=False)
        return result.returncode == 0

    def stop(self) -> None:
        self.runner.run(["systemctl", "stop", DISPLAY_MANAGER], timeout=90)

    def start(self) -> None:
        self.runner.run(["systemctl", "start", DISPLAY_MANAGER], timeout=90)
        if self.runner.will_run and not self.is_active():
            raise VfiodeskError(f"{DISPLAY_MANAGER} did not stay active after starting",
                                f"see journalctl -u {DISPLAY_MANAGER}")
