"""Demo steps: a single-GPU host. The lab's boot GPU (bochs-drm with the framebuffer console)
is the only GPU, a display-server stand-in holds /dev/dri/card0 under a `display-manager`
unit, and the hook hands the GPU to the VM and always gives the desktop back."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

from vfiodesk.lab import display_standin
from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS
from vfiodesk.lab.steps.common import driver_of, start_libvirtd, vfiodesk, virsh

VM = "vfiodesk-single"
BROKEN_VM = "vfiodesk-single-broken"
RUN = "/run/vfiodesk"
FAULT = f"{RUN}/test-fault"
HOOK = "/etc/libvirt/hooks/qemu.d/vfiodesk"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# What the hand-off log must show for one start and stop, in words from binding/handoff.py.
HANDOFF_STEPS = ("stopping display-manager.service", "waiting until nothing holds /dev/dri/card0",
                 "> /sys/class/vtconsole/", "bound 0000:01:00.0, 0000:01:00.1 to vfio-pci",
                 "starting display-manager.service", "verified: the GPU is on its driver")


def host_display() -> dict[str, object]:
    """What a user of the host would look at: the pair's drivers, the console, the desktop."""
    base = "/sys/class/vtconsole"
    fbcon = any("frame buffer" in _read(f"{base}/{name}/name") and _read(f"{base}/{name}/bind") == "1"
                for name in sorted(os.listdir(base)))
    pid = display_standin.running_pid()
    holds = pid is not None and display_standin.holds_card(pid)
    journal = f"{RUN}/devices"
    return {"gpu": driver_of(GPU_ADDRESS), "audio": driver_of(GPU_AUDIO_ADDRESS), "fbcon": fbcon,
            "desktop_holds_card0": holds,
            "journal": sorted(os.listdir(journal)) if os.path.isdir(journal) else [],
            "handoff_pending": os.path.exists(f"{RUN}/single-gpu.json")}


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def wait_for_display(expected: dict[str, object], seconds: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        now = host_display()
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def handoff_log() -> list[str]:
    """handoff.log's lines as "VM: what was done", without their timestamps (binding/handoff.py)."""
    try:
        return [line.partition(" ")[2] for line in _read(f"{RUN}/handoff.log").splitlines()]
    except OSError:
        return []


def _before(state: dict[str, object]) -> dict[str, object]:
    """The host as single-gpu-create found it (the desktop running, the console bound)."""
    before = state.get("single_before")
    return before if isinstance(before, dict) else {}


def _changes(before: dict[str, object], after: dict[str, object]) -> str:
    """What differs from the host as it was, and the hand-off log's last lines (why)."""
    changed = ", ".join(f"{key}: {before.get(key)} -> {value}" for key, value in after.items()
                        if before.get(key) != value) or "nothing changed"
    return f"{changed}; log: {' | '.join(handoff_log()[-5:])}"


@step("single-gpu-create", "vm create --single-gpu: the only GPU, with a desktop holding card0")
def single_gpu_create(state: dict[str, object]) -> StepOutcome:
    standin = display_standin.install()  # on libvirtd's PATH (common.start_libvirtd)
    subprocess.run([f"{standin}/systemctl", "start", display_standin.UNIT], check=False, timeout=60)
    # vm-create installed the hook before libvirtd started (it looks for hooks only then).
    installed = vfiodesk("hook", "install") if not os.path.exists(HOOK) else None
    if (installed is not None and installed.returncode != 0) or not start_libvirtd():
        return StepOutcome(False, (installed.stderr if installed else "libvirtd did not start")[-300:])
    made = vfiodesk("vm", "create", VM, "--domain-type", "qemu", "--memory", "256M", "--network", "",
                    "--single-gpu", "--gpu", GPU_ADDRESS[5:12], "--os", "win10")  # no TPM/Secure Boot here
    xml = virsh("dumpxml", "--inactive", VM).stdout
    before = host_display()
    state["single_before"] = before
    ok = (made.returncode == 0 and 'single-gpu="yes"' in xml and "managed='no'" in xml.replace('"', "'")
          and before["desktop_holds_card0"] is True and before["fbcon"] is True)
    return StepOutcome(ok, f"{(made.stdout or made.stderr).strip()[-200:]}; host: {before}")


@step("single-gpu-start", "start: the desktop stops, the console detaches, the VM gets the pair")
def single_gpu_start(state: dict[str, object]) -> StepOutcome:
    state["single_log_from"] = len(handoff_log())
    started = virsh("start", VM)
    time.sleep(2)
    qtree = virsh("qemu-monitor-command", VM, "--hmp", "info qtree").stdout
    held = [a for a in (GPU_ADDRESS, GPU_AUDIO_ADDRESS) if f'host = "{a}"' in qtree]
    now = host_display()
    ok = (started.returncode == 0 and now["gpu"] == now["audio"] == "vfio-pci" and len(held) == 2
          and now["fbcon"] is False and now["desktop_holds_card0"] is False)
    return StepOutcome(ok, f"{', '.join(held)} inside QEMU; host: {now}" if ok
                       else f"{started.stderr.strip()[-300:]} {_changes(_before(state), now)}")


@step("single-gpu-stop", "destroy: the pair, the console and the desktop come back, every step logged")
def single_gpu_stop(state: dict[str, object]) -> StepOutcome:
    virsh("destroy", VM)
    before = _before(state)
    now = wait_for_display(before)
    start = state.get("single_log_from")
    logged = handoff_log()[start if isinstance(start, int) else 0:]
    missing = [step for step in HANDOFF_STEPS if not any(step in line for line in logged)]
    # libvirt's release hook gives the display back; the watchdog only stands by.
    watchdog = [line for line in logged if "no release followed" in line]
    ok = now == before and not missing and not watchdog
    return StepOutcome(ok, f"the hand-off logged {len(logged)} steps, from stopping the desktop to "
                       "verifying it is back" if ok else f"missing from the log: {missing}; "
                       f"{' '.join(watchdog[:1])} " + _changes(before, now))


def _define_broken() -> subprocess.CompletedProcess[str]:
    """The same VM with an extra QEMU argument QEMU rejects: it fails after prepare."""
    ET.register_namespace("qemu", QEMU_NS)
    root = ET.fromstring(virsh("dumpxml", "--inactive", VM).stdout)
    name = root.find("name")
    assert name is not None
    name.text = BROKEN_VM
    for uuid in root.findall("uuid"):
        root.remove(uuid)
    for os_element in root.findall("os"):
        for nvram in os_element.findall("nvram"):
            os_element.remove(nvram)  # libvirt makes the broken VM its own
    commandline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value="-vfiodesk-no-such-option")
    path = "/tmp/vfiodesk-single-broken.xml"
    with open(path, "w") as handle:
        handle.write(ET.tostring(root, encoding="unicode"))
    return virsh("define", path)


@step("single-gpu-qemu-fails", "QEMU fails after prepare: the host is exactly as before")
def single_gpu_qemu_fails(state: dict[str, object]) -> StepOutcome:
    defined = _define_broken()
    if defined.returncode != 0:
        return StepOutcome(False, defined.stderr[-300:])
    started = virsh("start", BROKEN_VM)
    before = _before(state)
    now = wait_for_display(before)
    virsh("undefine", BROKEN_VM, "--nvram")
    ok = started.returncode != 0 and now == before
    return StepOutcome(ok, f"start refused ({started.stderr.strip()[-120:]}); host as before" if ok
                       else f"rc {started.returncode}: " + _changes(before, now))


@step("single-gpu-prepare-fails", "prepare fails halfway: the display manager is started again")
def single_gpu_prepare_fails(state: dict[str, object]) -> StepOutcome:
    os.makedirs(RUN, exist_ok=True)
    with open(FAULT, "w") as handle:
        handle.write(f"fail:{GPU_AUDIO_ADDRESS}\n")
    try:
        started = virsh("start", VM)
    finally:
        os.unlink(FAULT)
    before = _before(state)
    now = wait_for_display(before)
    ok = started.returncode != 0 and "injected fault" in started.stderr and now == before
    return StepOutcome(ok, "refused with the injected fault; desktop running again" if ok
                       else f"rc {started.returncode} {started.stderr[-200:]}: " + _changes(before, now))


@step("single-gpu-holder", "a program still holding card0 is named, and the desktop comes back")
def single_gpu_holder(state: dict[str, object]) -> StepOutcome:
    # A program outside the graphical session (a capture tool, a compute job) keeps card0 open.
    stray = subprocess.Popen(["sh", "-c", f"exec 3<>{display_standin.CARD}; exec sleep 600"],
                             start_new_session=True)
    try:
        time.sleep(1)
        started = virsh("start", VM)
    finally:
        stray.kill()
        stray.wait()
    before = _before(state)
    now = wait_for_display(before)
    named = f"{stray.pid} sleep" in started.stderr
    ok = started.returncode != 0 and named and now == before
    return StepOutcome(ok, f"refused naming pid {stray.pid}; desktop back" if ok
                       else f"rc {started.returncode} {started.stderr[-300:]}: " + _changes(before, now))


def _start_and_kill(watchdog_too: bool) -> tuple[dict[str, object], str]:
    """Start the VM, then SIGKILL libvirtd first (alive, it would see QEMU exit and run release
    itself), QEMU, and with ``watchdog_too`` the watchdog prepare started: no release can come.
    Returns the host while the VM ran, and what went wrong ("" when all was killed)."""
    started = virsh("start", VM)
    time.sleep(2)
    during = host_display()
    try:
        daemon, qemu = int(_read("/run/libvirtd.pid")), int(_read(f"/run/libvirt/qemu/{VM}.pid"))
    except (OSError, ValueError) as exc:
        return during, f"rc {started.returncode} {started.stderr.strip()[-200:]}; {exc}"
    watchdogs = _watchdog_pids() if watchdog_too else []
    if watchdog_too and not watchdogs:
        return during, "no watchdog process runs for the VM"
    for pid in (*watchdogs, daemon, qemu):
        os.kill(pid, signal.SIGKILL)
    return during, ""


def _watchdog_pids() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if b"vfiodesk.binding.watchdog" in argv and VM.encode() in argv:
            found.append(int(name))
    return found


@step("single-gpu-daemon-killed", "libvirtd killed, then QEMU: the watchdog gives the desktop back")
def single_gpu_daemon_killed(state: dict[str, object]) -> StepOutcome:
    """The watchdog that prepare started sees QEMU gone and gives the display back; the libvirtd
    started afterwards finds the domain dead and runs its late release: nothing left to do."""
    log_from = len(handoff_log())
    during, problem = _start_and_kill(watchdog_too=False)
    if problem:
        return StepOutcome(False, problem)
    before = _before(state)
    now = wait_for_display(before, seconds=60)
    fired = [line for line in handoff_log()[log_from:] if "exited and no release followed" in line]
    restarted = start_libvirtd()
    after = wait_for_display(before)
    domain_state = virsh("domstate", VM).stdout.strip()
    ok = (during["gpu"] == "vfio-pci" and now == before and bool(fired) and restarted and after == before
          and domain_state == "shut off")
    return StepOutcome(ok, f"{fired[0]}; libvirtd restarted, {VM} {domain_state}, desktop still back"
                       if ok else f"libvirtd {'restarted' if restarted else 'did not restart'}, {VM} "
                       f"{domain_state}: " + _changes(before, after))


@step("single-gpu-restore", "libvirtd, QEMU and the watchdog killed: restore --all gives it all back")
def single_gpu_restore(state: dict[str, object]) -> StepOutcome:
    """The README's way back from SSH when nothing else will run."""
    during, problem = _start_and_kill(watchdog_too=True)
    if problem:
        return StepOutcome(False, problem)
    time.sleep(8)  # longer than the watchdog's grace: nothing gives the display back by itself
    stranded = host_display()
    restored = vfiodesk("restore", "--all", env=display_standin.env_with_systemctl())  # a user's shell
    before = _before(state)
    now = wait_for_display(before)
    restarted = start_libvirtd()
    after = wait_for_display(before)
    ok = (during["gpu"] == stranded["gpu"] == "vfio-pci" and stranded["handoff_pending"] is True
          and restored.returncode == 0 and now == before and restarted and after == before)
    return StepOutcome(ok, f"stranded on vfio-pci with the desktop stopped; restore --all: "
                       f"{(restored.stdout.strip().splitlines() or ['?'])[-1]}" if ok else
                       f"stranded: {stranded}; restore rc {restored.returncode} "
                       f"{(restored.stderr or restored.stdout).strip()[-200:]}: " + _changes(before, after))
