"""Bind devices to vfio-pci and give them back: journaled, verified, rolled back on failure."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from vfiodesk import paths as P
from vfiodesk.binding import journal
from vfiodesk.binding.sysfs import SysfsWriter
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.kernel import read_modules
from vfiodesk.host.pci import scan_pci_devices
from vfiodesk.host.usage import read_host_usage
from vfiodesk.model.pci import PciAddress, PciPattern
from vfiodesk.plan.bind import NVIDIA_MODULES, NVIDIA_PERSISTENCED, VFIO_DRIVER, BindPlan, plan_bind
from vfiodesk.runner import CommandRunner

# Tests inject a fault after a given device's unbind: "fail:<address>" raises, "kill:<address>"
# dies by SIGKILL (a crash), so rollback and restore are proven on the real kernel. The file
# form reaches processes libvirt starts with a clean environment (the hook).
FAULT_ENV = "VFIODESK_TEST_FAULT"
FAULT_FILE = "test-fault"


def _injected_fault(host: P.HostPaths) -> str:
    path = host(P.RUN_VFIODESK, FAULT_FILE)
    return os.environ.get(FAULT_ENV) or (path.read_text().strip() if path.exists() else "")


@dataclass
class BindReport:
    plan: BindPlan
    writes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    vfio_groups: list[str] = field(default_factory=list)


def plan_for(host: P.HostPaths, patterns: Sequence[PciPattern], *, force: bool) -> BindPlan:
    devices = scan_pci_devices(host)
    gpus = [device.address for device in devices if device.is_display]
    return plan_bind(devices, patterns, read_host_usage(host, gpus), force=force)


def bind_devices(host: P.HostPaths, patterns: Sequence[PciPattern], *, force: bool = False,
                 dry_run: bool = False, owner: str = "cli") -> BindReport:
    """Move the named devices' groups to vfio-pci, or change nothing."""
    with journal.locked(host, dry_run=dry_run):
        plan = plan_for(host, patterns, force=force)
        writer = SysfsWriter(host, dry_run=dry_run)
        runner = CommandRunner(host, dry_run=dry_run)
        report = BindReport(plan, writes=writer.log)
        if plan.to_bind:
            _ensure_vfio_module(host, runner, report)
            _journal_originals(host, plan, owner, dry_run)
            try:
                _apply(host, plan, writer, runner, report)
            except BaseException:
                if not dry_run:
                    _roll_back(host, [str(d.address) for d in plan.to_bind], writer, runner)
                raise
        report.vfio_groups = [f"/dev/vfio/{view.number}" for view in plan.groups]
        if not dry_run and host.is_real_host:
            missing = [path for path in report.vfio_groups if not os.path.exists(path)]
            if missing:
                raise VfiodeskError(f"{', '.join(missing)} did not appear", "see dmesg for vfio errors")
        return report


def _ensure_vfio_module(host: P.HostPaths, runner: CommandRunner, report: BindReport) -> None:
    if host(P.SYS_PCI_DRIVERS, VFIO_DRIVER).is_dir():
        return
    if not read_modules(host).has(VFIO_DRIVER):
        raise VfiodeskError("vfio-pci is not available in this kernel",
                            "install a kernel built with CONFIG_VFIO_PCI")
    runner.run(["modprobe", VFIO_DRIVER])
    report.commands.append(f"modprobe {VFIO_DRIVER}")


def _journal_originals(host: P.HostPaths, plan: BindPlan, owner: str, dry_run: bool) -> None:
    if dry_run:
        return
    existing = journal.read_records(host)
    for device in plan.to_bind:
        address = str(device.address)
        if address in existing:
            continue  # a crashed earlier run recorded the true original: keep it
        boot_gpu = device.is_display and bool(device.boot_vga)
        journal.record(host, journal.DeviceRecord(
            address, device.driver, device.driver_override, owner,
            plan.free_consoles if boot_gpu else (), plan.unload_nvidia and device.driver == "nvidia",
            plan.free_framebuffers if boot_gpu else ()))


def _apply(host: P.HostPaths, plan: BindPlan, writer: SysfsWriter, runner: CommandRunner,
           report: BindReport) -> None:
    for console in plan.free_consoles:
        # Detach the framebuffer console from the boot GPU first, or unbinding its driver
        # leaves fbcon on a vanished framebuffer.
        writer.write(f"{P.SYS_VTCONSOLE}/{console}/bind", "0")
    for framebuffer in plan.free_framebuffers:
        fb_driver, fb_device = framebuffer.split("/")
        writer.write(f"{P.SYS_PLATFORM_DRIVERS}/{fb_driver}/unbind", fb_device)
    if plan.unload_nvidia:
        runner.run(["systemctl", "stop", NVIDIA_PERSISTENCED], check=False)
        report.commands.append(f"systemctl stop {NVIDIA_PERSISTENCED}")
        for module in NVIDIA_MODULES:
            runner.run(["modprobe", "-r", module])
            report.commands.append(f"modprobe -r {module}")
    fault = _injected_fault(host)
    for device in plan.to_bind:
        address = str(device.address)
        if not writer.exists(address):
            raise VfiodeskError(f"{address} disappeared from the PCI bus", "nothing was left half-done")
        writer.set_override(address, VFIO_DRIVER)
        writer.unbind(address)
        if fault == f"fail:{address}":
            raise VfiodeskError(f"injected fault after unbinding {address}", "test only")
        if fault == f"kill:{address}":
            os.kill(os.getpid(), signal.SIGKILL)
        writer.probe(address, VFIO_DRIVER)
        report.bound.append(address)


def _roll_back(host: P.HostPaths, addresses: list[str], writer: SysfsWriter,
               runner: CommandRunner) -> None:
    """Put every device of a failed operation back; errors here must not hide the first one."""
    # If this fails too, the journal still holds them: `vfiodesk restore` finishes the job.
    with contextlib.suppress(VfiodeskError):
        release_devices(host, [PciAddress.parse(a) for a in addresses], writer=writer, runner=runner,
                        lock=False)


def release_devices(host: P.HostPaths, addresses: Sequence[PciAddress] | None, *,
                    owner: str | None = None, dry_run: bool = False, writer: SysfsWriter | None = None,
                    runner: CommandRunner | None = None, lock: bool = True) -> list[str]:
    """Give journaled devices back to their original drivers, verified; returns what it did."""
    writer = writer or SysfsWriter(host, dry_run=dry_run)
    runner = runner or CommandRunner(host, dry_run=dry_run)
    if lock:
        with journal.locked(host, dry_run=writer.dry_run):
            return _release(host, addresses, owner, writer, runner)
    return _release(host, addresses, owner, writer, runner)


def _release(host: P.HostPaths, addresses: Sequence[PciAddress] | None, owner: str | None,
             writer: SysfsWriter, runner: CommandRunner) -> list[str]:
    records = journal.read_records(host)
    wanted = set(records) if addresses is None else {str(a) for a in addresses}
    chosen = [r for address, r in sorted(records.items())
              if address in wanted and (owner is None or r.owner == owner)]
    done = []
    for entry in chosen:
        if not writer.exists(entry.address):
            done.append(f"{entry.address}: gone from the bus; forgotten")
            if not writer.dry_run:
                journal.forget(host, entry.address)
            continue
        writer.set_override(entry.address, entry.original_override)
        if writer.driver(entry.address) != entry.original_driver:
            writer.unbind(entry.address)
            writer.probe(entry.address, entry.original_driver)
        done.append(f"{entry.address}: back on {entry.original_driver or 'no driver'}")
    if any(entry.nvidia_unloaded for entry in chosen):
        runner.run(["modprobe", "nvidia_drm"])  # pulls nvidia_modeset and nvidia back in
        runner.run(["modprobe", "nvidia_uvm"], check=False)
        runner.run(["systemctl", "start", NVIDIA_PERSISTENCED], check=False)
    for framebuffer in sorted({f for entry in chosen for f in entry.framebuffers}):
        fb_driver, fb_device = framebuffer.split("/")
        writer.write(f"{P.SYS_PLATFORM_DRIVERS}/{fb_driver}/bind", fb_device)
    for console in sorted({c for entry in chosen for c in entry.consoles}):
        writer.write(f"{P.SYS_VTCONSOLE}/{console}/bind", "1")
    if not writer.dry_run:
        for entry in chosen:
            journal.forget(host, entry.address)
    return done
