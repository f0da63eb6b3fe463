"""Driver binding writes in sysfs, each verified by reading the driver link back.

The sequence is the one Documentation/ABI/testing/sysfs-bus-pci gives for driver_override:
set the override, unbind from the current driver, ask drivers_probe to bind the device.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.sysfs import read_attr, read_link_name

_SETTLE_SECONDS = 5.0  # drivers probe asynchronously; snd_hda_intel can take a moment


@dataclass
class SysfsWriter:
    """Writes under ``host``; with ``dry_run`` it only records what it would write."""

    host: P.HostPaths
    dry_run: bool = False
    log: list[str] = field(default_factory=list)

    def write(self, relative: str, value: str) -> None:
        path = self.host(relative)
        self.log.append(f"echo {value or '(empty)'} > /{relative}")
        if self.dry_run:
            return
        try:
            self.store(path, value)
        except OSError as exc:
            raise VfiodeskError(f"writing {value!r} to /{relative} failed: {exc.strerror}",
                                "the kernel refused the change; see dmesg") from None

    def store(self, path: Path, value: str) -> None:
        """The write itself: one write(2), as the kernel's attribute handlers expect."""
        # O_NONBLOCK: a FIFO planted in a tree fails (ENXIO) instead of hanging the open;
        # O_NOFOLLOW: a link in an attribute's place (in a tree) is not followed;
        # O_CREAT as open("w") did: fake trees lack the write-only files (unbind, bind).
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, (value + "\n" if value else "\n").encode())
        finally:
            os.close(fd)

    @property
    def reacts(self) -> bool:
        """Whether the tree answers writes like the kernel, so bindings can be read back."""
        return self.host.is_real_host

    def driver(self, address: str) -> str | None:
        return read_link_name(self.host.pci_device(address) / "driver")

    def exists(self, address: str) -> bool:
        return self.host.pci_device(address).exists()

    def set_override(self, address: str, driver: str | None) -> None:
        # An empty write clears driver_override (it reads back "(null)").
        self.write(f"{P.SYS_PCI_DEVICES}/{address}/driver_override", driver or "")

    def unbind(self, address: str) -> None:
        current = self.driver(address)
        if current is None:
            return
        self.write(f"{P.SYS_PCI_DEVICES}/{address}/driver/unbind", address)
        self.wait_for(address, None)

    def probe(self, address: str, expected: str | None) -> None:
        self.write(P.SYS_PCI_DRIVERS_PROBE, address)
        if expected is not None:
            self.wait_for(address, expected)

    def wait_for(self, address: str, expected: str | None) -> None:
        """Read the driver link back until it is ``expected``; say what it is otherwise."""
        if self.dry_run or not self.reacts:
            return  # a plain tree's files do not react to writes; the lab proves the kernel's side
        deadline = time.monotonic() + _SETTLE_SECONDS
        while True:
            if not self.exists(address):
                raise VfiodeskError(f"{address} disappeared from the PCI bus",
                                    "was it hot-removed? run vfiodesk restore --all")
            current = self.driver(address)
            if current == expected:
                return
            if time.monotonic() > deadline:
                raise VfiodeskError(
                    f"{address} is on {current or 'no driver'}, expected {expected or 'no driver'}",
                    "see dmesg for the driver's reason")
            time.sleep(0.02)

    def override(self, address: str) -> str | None:
        text = read_attr(self.host.pci_device(address) / "driver_override")
        return None if text in (None, "", "(null)") else text

