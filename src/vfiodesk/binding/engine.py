"""Bind devices to vfio-pci and give them back: journaled, verified, rolled back on failure."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from vfiodesk import paths as P
from vfiodesk.binding import journal
from vfiodesk.binding.sysfs import SysfsWriter
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.kernel import read_modules
from vfiodesk.host.pci import scan_pci_devices
from vfiodesk.host.services import read_driver_module
from vfiodesk.host.sysfs import read_attr
from vfiodesk.host.usage import read_host_usage
from vfiodesk.model.pci import PciAddress, PciPattern
from vfiodesk.plan.bind import (
    NVIDIA_LOAD_ORDER,
    NVIDIA_MODULES,
    NVIDIA_PERSISTENCED,
    VFIO_DRIVER,
    BindPlan,
    plan_bind,
)
from vfiodesk.runner import CommandRunner

# Tests inject a fault after a given device's unbind: "fail:<address>" raises, "kill:<address>"
# dies by SIGKILL (a crash), so rollback and restore are proven on the real kernel. The file
# form reaches processes libvirt starts with a clean environment (the hook).
FAULT_ENV = "VFIODESK_TEST_FAULT"
FAULT_FILE = "test-fault"


def _injected_fault(host: P.HostPaths) -> str:
    path = host(P.RUN_VFIODESK, FAULT_FILE)
    return os.environ.get(FAULT_ENV) or read_attr(path) or ""


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
                 dry_run: bool = False, owner: str = "cli", writer: SysfsWriter | None = None,
                 runner: CommandRunner | None = None) -> BindReport:
    """Move the named devices' groups to vfio-pci, or change nothing."""
    writer = writer or SysfsWriter(host, dry_run=dry_run)
    dry_run = writer.dry_run
    runner = runner or CommandRunner(host, dry_run=dry_run)
    with journal.locked(host, dry_run=dry_run):
        plan = plan_for(host, patterns, force=force)
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
            plan.free_framebuffers if boot_gpu else (),
            read_driver_module(host, device.driver) if device.driver else None))


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


@dataclass
class ReleaseReport:
    done: list[str] = field(default_factory=list)  # one line per device: where it is (or would be)
    notices: list[str] = field(default_factory=list)  # what could not be put back, and what will
    steps: list[str] = field(default_factory=list)  # the writes and commands, in order


def release_devices(host: P.HostPaths, addresses: Sequence[PciAddress] | None, *,
                    owner: str | None = None, dry_run: bool = False, writer: SysfsWriter | None = None,
                    runner: CommandRunner | None = None, lock: bool = True) -> ReleaseReport:
    """Give journaled devices back to their original drivers, verified."""
    writer = writer or SysfsWriter(host, dry_run=dry_run)
    runner = runner or CommandRunner(host, dry_run=writer.dry_run)
    if lock:
        with journal.locked(host, dry_run=writer.dry_run):
            return _release(host, addresses, owner, writer, runner)
    return _release(host, addresses, owner, writer, runner)


def _release(host: P.HostPaths, addresses: Sequence[PciAddress] | None, owner: str | None,
             writer: SysfsWriter, runner: CommandRunner) -> ReleaseReport:
    """The order mirrors a boot: devices off vfio-pci, firmware framebuffers, the drivers'
    modules, then each device probed and verified, consoles last."""
    records = journal.read_records(host)
    wanted = set(records) if addresses is None else {str(a) for a in addresses}
    chosen = [r for address, r in sorted(records.items())
              if address in wanted and (owner is None or r.owner == owner)]
    report = ReleaseReport(steps=writer.log)
    present = []
    for entry in chosen:
        if not writer.exists(entry.address):
            report.done.append(f"{entry.address}: gone from the bus; forgotten")
            if not writer.dry_run:
                journal.forget(host, entry.address)
            continue
        present.append(entry)
        writer.set_override(entry.address, entry.original_override)
        if writer.driver(entry.address) != entry.original_driver:
            writer.unbind(entry.address)
    for framebuffer in sorted({f for entry in present for f in entry.framebuffers}):
        _reattach_framebuffer(host, framebuffer, present, writer, report)
    for module in _modules_to_load(host, present):
        _command(runner, writer, ["modprobe", module], check=module != "nvidia_uvm")
    for entry in present:
        if writer.driver(entry.address) != entry.original_driver:
            _require_driver(host, entry, writer)
            writer.probe(entry.address, entry.original_driver)
        where = entry.original_driver or "no driver"
        report.done.append(f"{entry.address}: would go back to {where}" if writer.dry_run
                           else f"{entry.address}: back on {where}")
    for console in sorted({c for entry in present for c in entry.consoles}):
        try:
            writer.write(f"{P.SYS_VTCONSOLE}/{console}/bind", "1")
        except VfiodeskError as exc:
            _notice(host, report, f"the text console {console} could not be re-attached "
                                  f"({exc.message}); a reboot gives it back")
    if any(entry.nvidia_unloaded for entry in present):
        _command(runner, writer, ["systemctl", "start", NVIDIA_PERSISTENCED], check=False)
    if not writer.dry_run:
        for entry in present:
            journal.forget(host, entry.address)
    return report


def _modules_to_load(host: P.HostPaths, entries: Sequence[journal.DeviceRecord]) -> list[str]:
    """Modules to load before probing: the NVIDIA stack bind unloaded (in dependency order),
    and the module of any original driver that is gone now (unloaded while on vfio-pci)."""
    modules: list[str] = []
    if any(entry.nvidia_unloaded for entry in entries):
        modules += NVIDIA_LOAD_ORDER
    for entry in entries:
        driver = entry.original_driver
        if driver and entry.module and not host(P.SYS_PCI_DRIVERS, driver).is_dir():
            modules.append(entry.module)
    return list(dict.fromkeys(modules))


def _require_driver(host: P.HostPaths, entry: journal.DeviceRecord, writer: SysfsWriter) -> None:
    """A probe for a driver that is not there would leave the device on no driver, unexplained."""
    driver = entry.original_driver
    if driver is None or writer.dry_run or not writer.reacts or host(P.SYS_PCI_DRIVERS, driver).is_dir():
        return
    why = (f"modprobe {entry.module} did not bring it back" if entry.module
           else "the journal does not say which module provides it")
    raise VfiodeskError(f"{entry.address} waits on no driver: its driver {driver} is not loaded "
                        f"({why})", f"load it (modprobe MODULE), then run vfiodesk restore {entry.address}")


def _command(runner: CommandRunner, writer: SysfsWriter, argv: list[str], *, check: bool) -> None:
    """Run a command as one step of the ordered log; a dry run only records it."""
    writer.log.append(shlex.join(argv))
    if writer.dry_run:
        return
    try:
        runner.run(argv, check=check)
    except VfiodeskError as exc:
        raise VfiodeskError(exc.message, "the devices wait on no driver and the journal keeps "
                                         "them: fix the cause, then run vfiodesk restore --all") from None


def _reattach_framebuffer(host: P.HostPaths, framebuffer: str, entries: Sequence[journal.DeviceRecord],
                          writer: SysfsWriter, report: ReleaseReport) -> None:
    """Bind a firmware framebuffer back; the kernel may refuse for good (vfio-pci removes the
    framebuffers on a VGA device's memory when it takes it, drivers/vfio/pci/vfio_pci_core.c,
    and a removed sysfb device does not come back), and that must not fail the release."""
    fb_driver, fb_device = framebuffer.split("/")
    try:
        writer.write(f"{P.SYS_PLATFORM_DRIVERS}/{fb_driver}/bind", fb_device)
    except VfiodeskError as exc:
        owner = next(entry for entry in entries if framebuffer in entry.framebuffers)
        comes_back = (f"when {owner.address}'s own driver ({owner.original_driver}) takes the screen "
                      "over, or after a reboot" if owner.original_driver else "after a reboot")
        _notice(host, report, f"the console framebuffer {fb_device} could not be re-attached "
                              f"({exc.message}); the devices are back, and the screen comes back "
                              f"{comes_back}")


def _notice(host: P.HostPaths, report: ReleaseReport, message: str) -> None:
    report.notices.append(message)
    if host.is_real_host:
        import syslog

        syslog.openlog("vfiodesk", syslog.LOG_PID, syslog.LOG_USER)
        syslog.syslog(syslog.LOG_WARNING, message)
