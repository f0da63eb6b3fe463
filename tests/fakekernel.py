"""A fake tree that answers like the kernel: drivers come and go with their modules.

``FakeKernel`` is a sysfs writer whose writes have the kernel's effects on a ``FakeHost`` tree
(driver_override, unbind, drivers_probe, platform framebuffers); ``FakeRunner`` is a command
runner whose ``modprobe`` loads and unloads modules in the tree. Together they model what only
exists after a command runs: a driver's sysfs directory appears with ``modprobe nvidia``, and a
probe before that finds no driver (drivers/base/bus.c, drivers/pci/pci-driver.c).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakehost import FakeHost
from vfiodesk.binding.sysfs import SysfsWriter
from vfiodesk.runner import CommandResult, CommandRunner


@dataclass(frozen=True)
class FakeModule:
    name: str
    driver: str | None = None  # the PCI driver it registers
    claims: tuple[str, ...] = ()  # PCI addresses its ID table matches
    depends: tuple[str, ...] = ()


@dataclass
class FakeModules:
    """The modules modprobe can load into one tree, and which are loaded."""

    tree: FakeHost
    known: dict[str, FakeModule] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)

    def add(self, module: FakeModule, *, loaded: bool) -> None:
        self.known[module.name] = module
        if loaded:
            self.load(module.name)

    def load(self, name: str) -> None:
        module = self.known[name]
        for dependency in module.depends:
            self.load(dependency)
        if name in self.loaded:
            return
        self.loaded.append(name)
        if module.driver is not None:
            driver_dir = self.tree.root / "sys/bus/pci/drivers" / module.driver
            driver_dir.mkdir(parents=True, exist_ok=True)
            (self.tree.root / "sys/module" / name).mkdir(parents=True, exist_ok=True)
            if not (driver_dir / "module").is_symlink():
                os.symlink(f"../../../../module/{name}", driver_dir / "module")
            # A new driver is offered every device without one (driver_register -> bus_add_driver).
            for address in module.claims:
                attach(self.tree, address, module.driver)
        self._write_proc_modules()

    def unload(self, name: str) -> str | None:
        """None when unloaded, else why not (as modprobe -r says)."""
        if name not in self.loaded:
            return None
        if any(name in self.known[other].depends for other in self.loaded):
            return f"modprobe: FATAL: Module {name} is in use."
        driver = self.known[name].driver
        if driver is not None:
            # Unloading unregisters the driver, which lets go of its devices first.
            for address in self.known[name].claims:
                if driver_of(self.tree, address) == driver:
                    (_device(self.tree, address) / "driver").unlink()
            shutil.rmtree(self.tree.root / "sys/bus/pci/drivers" / driver)
        self.loaded.remove(name)
        self._write_proc_modules()
        return None

    def _write_proc_modules(self) -> None:
        self.tree.file("proc/modules", "".join(f"{name} 16384 0 - Live 0x0\n" for name in self.loaded))


def _device(tree: FakeHost, address: str) -> Path:
    return tree.root / "sys/bus/pci/devices" / address


def driver_of(tree: FakeHost, address: str) -> str | None:
    link = _device(tree, address) / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def attach(tree: FakeHost, address: str, driver: str) -> bool:
    """Bind an unbound device to ``driver`` if it is loaded and driver_override allows it."""
    device = _device(tree, address)
    override = (device / "driver_override").read_text().strip()
    if driver_of(tree, address) is not None or override not in ("(null)", "", driver):
        return False
    if not (tree.root / "sys/bus/pci/drivers" / driver).is_dir():
        return False
    os.symlink(f"../../../bus/pci/drivers/{driver}", device / "driver")
    if driver == "vfio-pci" and (device / "class").read_text().startswith("0x03") and \
            (device / "boot_vga").exists() and (device / "boot_vga").read_text().strip() == "1":
        # vfio-pci takes a VGA device's memory from the firmware framebuffers for good
        # (aperture_remove_conflicting_pci_devices): their platform devices are removed.
        for platform in (tree.root / "sys/devices/platform").glob("*framebuffer*"):
            shutil.rmtree(platform)
    return True


@dataclass
class FakeKernel(SysfsWriter):
    """Writes whose effects on the tree are the kernel's."""

    modules: FakeModules | None = None

    @property
    def reacts(self) -> bool:
        return True

    def store(self, path: Path, value: str) -> None:
        relative = path.relative_to(self.host.root).as_posix()
        tree = FakeHost(self.host.root)
        parts = relative.split("/")
        if relative == "sys/bus/pci/drivers_probe":
            override = (_device(tree, value) / "driver_override").read_text().strip()
            candidates = [override] if override not in ("(null)", "") else [
                module.driver for module in (self.modules.known.values() if self.modules else ())
                if module.driver and value in module.claims]
            for driver in candidates:
                if attach(tree, value, driver):
                    break
        elif relative.startswith("sys/bus/pci/devices/") and parts[-1] == "unbind":
            (_device(tree, value) / "driver").unlink()
        elif relative.startswith("sys/bus/platform/drivers/"):
            driver_dir = self.host.root.joinpath(*parts[:-1])
            if parts[-1] == "unbind":
                (driver_dir / value).unlink()
            elif not (self.host.root / "sys/devices/platform" / value).exists():
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            else:
                os.symlink(f"../../../../devices/platform/{value}", driver_dir / value)
        else:
            super().store(path, value)


@dataclass
class FakeRunner(CommandRunner):
    """Runs modprobe against the tree's modules and the tree's own stand-in programs
    (usr/bin/NAME, e.g. a prime-select that answers like the real one); records every command."""

    modules: FakeModules | None = None
    ran: list[str] = field(default_factory=list)

    @property
    def will_run(self) -> bool:
        return not self.dry_run

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 600,
            input_text: str | None = None) -> CommandResult:
        if self.dry_run:
            return super().run(argv, check=check, timeout=timeout, input_text=input_text)
        self.ran.append(" ".join(argv))
        error = None
        stand_in = self.host.root / "usr/bin" / argv[0]
        if argv[0] != "modprobe" and stand_in.is_file():
            done = subprocess.run([str(stand_in), *argv[1:]], capture_output=True, text=True,
                                  timeout=timeout, check=False)
            if check and done.returncode != 0:  # as the real runner
                from vfiodesk.errors import VfiodeskError

                raise VfiodeskError(f"{' '.join(argv)} failed (exit {done.returncode}): "
                                    f"{done.stderr.strip()}", "fake")
            return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr, ran=True)
        if argv[0] == "modprobe" and self.modules is not None:
            names = [argv[-1]]
            if argv[1] == "-r":
                error = self.modules.unload(names[0])
            elif names[0] not in self.modules.known:
                error = f"modprobe: FATAL: Module {names[0]} not found."
            else:
                self.modules.load(names[0])
        if error and check:
            from vfiodesk.errors import VfiodeskError

            raise VfiodeskError(f"{' '.join(argv)} failed (exit 1): {error}", "fake")
        return CommandResult(tuple(argv), 1 if error else 0, "", error or "", ran=True)
