"""Single-GPU hand-off: the host's only GPU goes to a VM and always comes back.

prepare is one transaction: a state file is written before anything changes, then the
display manager stops, the GPU's device nodes are waited free, and the binding engine frees
the console and framebuffer and binds the group (unloading the NVIDIA stack when needed). Any
failure gives everything back and starts the display manager again before the error leaves.

release (also after a failed start, from the watchdog, or `vfiodesk restore --all`) gives the
group back, reloads the driver, rebinds the console, starts the display manager, and verifies
each; a device that does not come back is tried again by a direct driver bind, then by PCI
remove + rescan (Documentation/ABI/testing/sysfs-bus-pci: remove, rescan).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.binding import journal
from vfiodesk.binding.display import (
    DISPLAY_MANAGER,
    HOLDERS_TIMEOUT,
    DisplayManager,
    gpu_device_nodes,
    wait_for_holders,
)
from vfiodesk.binding.engine import bind_devices, release_devices
from vfiodesk.binding.sysfs import SysfsWriter
from vfiodesk.errors import HostReadError, VfiodeskError
from vfiodesk.host.sysfs import read_attr, read_bytes
from vfiodesk.host.usage import read_fb_consoles
from vfiodesk.hostfiles.atomic import write_atomic
from vfiodesk.model.pci import PciAddress, PciPattern
from vfiodesk.runner import CommandRunner

STATE_FILE = "single-gpu.json"
LOG_FILE = "handoff.log"  # every step of every hand-off, beside what goes to syslog
RESTORE_HINT = "from SSH or a text console: vfiodesk restore --all (or systemctl start vfiodesk-restore)"

Say = Callable[[str], None]


@dataclass(frozen=True)
class HandoffState:
    """What a hand-off changed, written before the change (run/ is a tmpfs: a reboot forgets it)."""

    vm: str
    devices: tuple[str, ...]
    display_manager_was_active: bool
    phase: str  # preparing, prepared, started (QEMU runs), releasing, failed
    qemu_pid: int | None = None
    since: float = 0.0  # time.time() of the last phase change
    # libvirtd (or virtqemud), the hook's parent at `started`: while it lives, QEMU's exit is
    # followed by its release hook, however long its teardown takes on a loaded host.
    daemon_pid: int | None = None


def state_path(host: P.HostPaths) -> Path:
    return host(P.RUN_VFIODESK, STATE_FILE)


def read_state(host: P.HostPaths) -> HandoffState | None:
    path = state_path(host)
    if not path.exists():
        return None
    try:
        raw = json.loads(read_bytes(path, 64 * 1024))
        return HandoffState(str(raw["vm"]), tuple(str(a) for a in raw["devices"]),
                            bool(raw["display_manager_was_active"]), str(raw["phase"]),
                            _pid(raw.get("qemu_pid")), float(raw.get("since", 0.0)),
                            _pid(raw.get("daemon_pid")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HostReadError(f"the hand-off state {path} is damaged ({exc})",
                            "start the display manager by hand (systemctl start display-manager), "
                            "then delete the file") from None


def _pid(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def write_state(host: P.HostPaths, state: HandoffState) -> HandoffState:
    state = replace(state, since=time.time())
    path = state_path(host)
    write_atomic(path, json.dumps(asdict(state)).encode(), str(path))
    return state


def logged(host: P.HostPaths, vm: str, say: Say) -> Say:
    """``say`` that also appends the line to run/vfiodesk/handoff.log (readable over SSH, and
    where no syslog daemon runs)."""
    path = host(P.RUN_VFIODESK, LOG_FILE)

    def both(line: str) -> None:
        say(line)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as handle:
                handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {vm}: {line}\n")
    return both


def prepare_single_gpu(host: P.HostPaths, vm: str, addresses: Sequence[PciAddress], say: Say,
                       holders_timeout: float = HOLDERS_TIMEOUT) -> None:
    """Stop the desktop and bind the GPU's group to vfio-pci, or change nothing."""
    runner = CommandRunner(host)
    manager = DisplayManager(runner)
    existing = read_state(host)
    if existing is not None and existing.phase != "failed":
        raise VfiodeskError(f"the host's GPU is already handed to {existing.vm} ({existing.phase})",
                            f"stop that VM first, or {RESTORE_HINT}")
    was_active = manager.is_active()
    state = write_state(host, HandoffState(vm, tuple(map(str, addresses)), was_active, "preparing"))
    try:
        spawn_watchdog(host, vm, say)
        if was_active:
            say(f"stopping {DISPLAY_MANAGER}")
            manager.stop()
        else:
            say(f"{DISPLAY_MANAGER} is not active; nothing to stop")
        nodes = gpu_device_nodes(host, addresses)
        say(f"waiting until nothing holds {', '.join(sorted(nodes)) or 'the GPU (it has no nodes)'}")
        holders = wait_for_holders(host, nodes, holders_timeout)
        if holders:
            raise VfiodeskError(f"the GPU is still held by {', '.join(holders)} after the display "
                                "manager stopped",
                                "close those programs (or make them part of the graphical session)")
        report = bind_devices(host, [PciPattern(a.domain, a.bus, a.slot, a.function) for a in addresses],
                              owner=vm)
        for line in report.writes:
            say(line)
        for command in report.commands:
            say(command)
        say(f"bound {', '.join(report.bound) or 'nothing new'} to vfio-pci")
        write_state(host, replace(state, phase="prepared"))
    except BaseException as exc:
        say(f"prepare failed ({exc}); giving the host its display back")
        with contextlib.suppress(VfiodeskError):
            release_single_gpu(host, vm, say)
        raise


def watchdog_argv(host: P.HostPaths, vm: str) -> list[str]:
    """The helper's command line; outside libvirtd's cgroup through systemd-run where systemd runs."""
    # The watchdog module (vfiodesk.binding.watchdog) imports this one, hence the late name.
    helper = [sys.executable, "-m", "vfiodesk.binding.watchdog", "--root", str(host.root), vm]
    if host.is_real_host and host("run/systemd/system").is_dir():
        # A transient unit: a libvirtd restart (or its cgroup being stopped) does not take it along.
        return ["systemd-run", "--no-block", "--collect", "--quiet",
                "--description", f"vfiodesk watchdog for {vm}", *helper]
    return helper


def spawn_watchdog(host: P.HostPaths, vm: str, say: Say) -> None:
    """Start the watchdog and return at once: no pipes shared with the hook, its own session."""
    argv = watchdog_argv(host, vm)
    if not host.is_real_host:
        say(f"would start the watchdog: {shlex.join(argv)}")
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True, env=env)


def mark_started(host: P.HostPaths, vm: str, qemu_pid: int | None, daemon_pid: int | None = None) -> None:
    state = read_state(host)
    if state is not None and state.vm == vm and state.phase == "prepared":
        write_state(host, replace(state, phase="started", qemu_pid=qemu_pid, daemon_pid=daemon_pid))


def release_single_gpu(host: P.HostPaths, vm: str | None, say: Say) -> None:
    """Give the GPU back and bring the desktop back, verified; raises naming what is not back.

    One at a time (the hook's release, the watchdog, restore --all may meet): the second finds
    the state gone and the journal empty, and has nothing left to do."""
    lock = host(P.RUN_VFIODESK, "handoff.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _release(host, vm, say)


def _release(host: P.HostPaths, vm: str | None, say: Say) -> None:
    state = read_state(host)
    if vm is None and state is not None:
        vm = state.vm
    if state is not None and state.vm != vm:
        state = None  # another VM's hand-off: not ours to undo
    if state is not None:
        state = write_state(host, replace(state, phase="releasing"))
    records = {a: r for a, r in journal.read_records(host).items() if vm is None or r.owner == vm}
    runner = CommandRunner(host)
    writer = SysfsWriter(host)
    try:
        report = release_devices(host, [PciAddress.parse(a) for a in records], owner=vm, writer=writer,
                                 runner=runner)
        done = report.done + report.notices
    except VfiodeskError as exc:
        done = [f"giving the devices back failed: {exc.message}; trying the alternatives"]
    for line in [*writer.log, *done]:
        say(line)
    for record in records.values():
        _bring_back(host, record, writer, runner, say)
    # release_devices rebinds these last; after its failure they are still unbound.
    for framebuffer in sorted({f for record in records.values() for f in record.framebuffers}):
        fb_driver, fb_device = framebuffer.split("/")
        with contextlib.suppress(VfiodeskError):
            if not host(P.SYS_PLATFORM_DRIVERS, fb_driver, fb_device).exists():
                writer.write(f"{P.SYS_PLATFORM_DRIVERS}/{fb_driver}/bind", fb_device)
    for console in sorted({c for record in records.values() for c in record.consoles}):
        with contextlib.suppress(VfiodeskError):
            if read_attr(host(P.SYS_VTCONSOLE, console, "bind")) != "1":
                writer.write(f"{P.SYS_VTCONSOLE}/{console}/bind", "1")
    if state is not None and state.display_manager_was_active:
        say(f"starting {DISPLAY_MANAGER}")
        with contextlib.suppress(VfiodeskError):
            DisplayManager(runner).start()
    missing = _verify(host, records, state, runner, say)
    if missing:
        if state is not None:
            write_state(host, replace(state, phase="failed"))
        say(f"THE HOST DISPLAY IS NOT BACK: {'; '.join(missing)}")
        raise VfiodeskError(f"the host display is not back: {'; '.join(missing)}", RESTORE_HINT)
    with journal.locked(host):
        for address in records:
            journal.forget(host, address)
    if state is not None:  # never another VM's hand-off (a refused second start's release)
        state_path(host).unlink(missing_ok=True)


def _bring_back(host: P.HostPaths, record: journal.DeviceRecord, writer: SysfsWriter,
                runner: CommandRunner, say: Say) -> None:
    """The device on its original driver: load the driver, bind it directly, then remove +
    rescan; each tried only when the one before did not work."""
    address, wanted = record.address, record.original_driver
    if wanted is None or not host.is_real_host or writer.driver(address) == wanted:
        return
    if not host(P.SYS_PCI_DRIVERS, wanted).is_dir():
        # The driver's module was unloaded: the device's modalias names the module to load.
        alias = read_attr(host.pci_device(address) / "modalias")
        if alias:
            say(f"{address}: {wanted} is not loaded; modprobe {alias}")
            runner.run(["modprobe", alias], check=False)
            with contextlib.suppress(VfiodeskError):
                writer.wait_for(address, wanted)  # a loaded driver probes its devices itself
                say(f"{address}: back on {wanted}")
                return

    def bind_directly() -> None:
        writer.set_override(address, record.original_override)
        writer.unbind(address)  # still on vfio-pci when the release stopped before it
        writer.write(f"{P.SYS_PCI_DRIVERS}/{wanted}/bind", address)

    def remove_and_rescan() -> None:
        # A rescanned device is a new one: no driver_override, the kernel's own driver choice.
        writer.write(f"{P.SYS_PCI_DEVICES}/{address}/remove", "1")
        writer.write(P.SYS_PCI_RESCAN, "1")

    for title, attempt in ((f"binding {address} to {wanted} directly", bind_directly),
                           (f"removing {address} from the PCI bus and rescanning", remove_and_rescan)):
        say(title)
        try:
            attempt()
            writer.wait_for(address, wanted)
        except VfiodeskError as exc:
            say(f"{address}: {exc.message}")
            continue
        say(f"{address}: back on {wanted}")
        return


def _verify(host: P.HostPaths, records: dict[str, journal.DeviceRecord], state: HandoffState | None,
            runner: CommandRunner, say: Say) -> list[str]:
    """What is not back: a device off its driver, no framebuffer console, no display manager."""
    if not host.is_real_host:
        return []  # a tree's files do not react to writes; the lab proves the kernel's side
    writer = SysfsWriter(host)
    missing = [f"{r.address} is on {writer.driver(r.address) or 'no driver'}, not {r.original_driver}"
               for r in records.values() if writer.driver(r.address) != r.original_driver]
    if any(r.consoles for r in records.values()) and not read_fb_consoles(host):
        missing.append("no framebuffer console is bound")
    if state is not None and state.display_manager_was_active and not DisplayManager(runner).is_active():
        missing.append(f"{DISPLAY_MANAGER} is not active")
    if not missing:
        say("verified: the GPU is on its driver, the console is bound, the display manager runs")
    return missing
