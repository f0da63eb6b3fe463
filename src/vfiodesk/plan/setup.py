"""`vfiodesk setup`: the seed's story as a graph of steps, planned from probed facts.

Pure: ``plan_setup`` takes what the host looks like now (``SetupFacts``), what setup already did
(its state) and the user's answers, and says for every step whether it is done, to do, blocked
(and why) or skipped, with the exact vfiodesk command that does it. The CLI runs the commands.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vfiodesk.checks.doctor import PRIME_FREE_PROFILES, Finding, Status
from vfiodesk.checks.groups import Role, classify_group, find_host_display
from vfiodesk.errors import InputError
from vfiodesk.host.pci import group_devices
from vfiodesk.model.cmdline import KernelCmdline
from vfiodesk.model.pci import PciAddress, PciDevice, parse_pci_pattern
from vfiodesk.plan.bind import NVIDIA_VENDOR, VFIO_DRIVER
from vfiodesk.plan.vm import VIRTIO_DRIVER_FOLDER, VmRequest

BINDING_MODES: dict[str, str] = {
    "libvirt": "libvirt binds the devices when the VM starts and gives them back when it stops "
               "(managed='yes'); the simplest choice for AMD and Intel cards",
    "vfiodesk": "vfiodesk's hook binds them at start, unloading the NVIDIA driver and the boot "
                "console first, and gives them back at stop; best for NVIDIA cards",
    "vfio-early": "vfio-pci takes the card at boot and the host never uses it (modprobe.d + "
                  "initramfs, then a reboot); for cards that misbehave when handed over live",
}
INPUT_MODES = ("synergy", "inputleap", "none")
# Doctor checks that stop setup at the first step; KVM is only advice for --domain-type qemu.
_HARDWARE_CHECKS = ("iommu-firmware", "vfio-modules", "qemu", "ovmf", "libvirt")
_KVM_CHECKS = ("cpu-virtualization", "kvm")
SETUP_DIR = "var/lib/vfiodesk/setup"  # under the root, beside the change journal
# virt-manager's default place and format; the pool of that directory is made if missing.
DEFAULT_DISK = "path=/var/lib/libvirt/images/{name}.qcow2,size=80G,format=qcow2"


class StepStatus(enum.StrEnum):
    DONE = "done"
    TODO = "todo"
    BLOCKED = "blocked"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Answers:
    """Everything setup asks; from options, a TOML profile, prompts or the saved state."""

    name: str = "win10"
    gpu: str | None = None
    usb_controller: str | None = None
    memory: str = "8G"
    cpus: int | None = None
    disk: str | None = None
    iso: str | None = None
    virtio_iso: str | None = None
    binding: str | None = None  # None: chosen from the GPU's vendor
    network: str | None = None
    domain_type: str | None = None
    os: str | None = None  # None: vm create's default (win11)
    passthrough_mode: bool = False
    input: str = "synergy"
    windows_installed: bool = False

    def validate(self) -> None:
        if self.binding is not None and self.binding not in BINDING_MODES:
            raise InputError(f"unknown binding mode {self.binding!r}",
                             f"use one of {', '.join(BINDING_MODES)}")
        if self.input not in INPUT_MODES:
            raise InputError(f"unknown input mode {self.input!r}", f"use one of {', '.join(INPUT_MODES)}")
        # What vm create checks, checked now: a bad answer stops setup before its first step,
        # with the words vm create would use.
        VmRequest(name=self.name, cpus=self.cpus, memory=self.memory, disk=self.disk, iso=self.iso,
                  virtio_iso=self.virtio_iso, gpu=self.gpu, usb_controller=self.usb_controller,
                  network=self.network, domain_type=self.domain_type, os=self.os).validate()

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class Applied:
    """What setup did in one step, and what takes it back (a journal id, a file, a name)."""

    step: str
    boot_id: str | None = None
    change: str | None = None  # host-change journal id (vfiodesk host undo)
    file: str | None = None  # a file setup wrote (host path)
    previous: str | None = None  # a setting before (prime-select)
    name: str | None = None  # the domain a step defined
    undone: bool = False


@dataclass(frozen=True)
class SetupFacts:
    """The host as probed now; the CLI reads it (host layer + libvirt)."""

    findings: Sequence[Finding]
    devices: Sequence[PciDevice]
    iommu_groups: int
    iommu_evidence: str | None
    cpu_vendor: str  # intel, amd, unknown
    boot_id: str | None
    cmdline: KernelCmdline | None = None  # the running kernel's
    prime: str | None = None  # prime-select query (nvidia, intel, on-demand, unknown); None: none
    hook_installed: bool = False
    systemd: bool = False  # systemd runs the host (sd_booted: /run/systemd/system exists)
    domain_defined: bool | None = None  # None: libvirt could not be asked
    libvirt_error: str = ""
    applied: Mapping[str, Applied] = field(default_factory=dict)


@dataclass(frozen=True)
class SetupStep:
    id: str
    title: str
    status: StepStatus
    summary: str
    command: tuple[str, ...] | None = None  # the vfiodesk (or system) command the step runs
    automatic: bool = True  # setup runs the command itself (False: the user does, e.g. reboot)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status.value, "summary": self.summary,
                "command": shlex.join(self.command) if self.command else None}


def next_step(steps: Sequence[SetupStep]) -> SetupStep | None:
    """The first step that is neither done nor skipped."""
    return next((s for s in steps if s.status not in (StepStatus.DONE, StepStatus.SKIPPED)), None)


@dataclass(frozen=True)
class _Gpu:
    device: PciDevice | None
    problem: str  # why there is no usable GPU (empty when there is)
    companions: tuple[PciDevice, ...] = ()
    host_display: bool = False  # the user named the host's own display


def card_address(device: PciDevice) -> str:
    """``01:00``: every function of the card (what vm create and vfio-early take)."""
    address = device.address
    prefix = f"{address.domain:04x}:" if address.domain else ""
    return f"{prefix}{address.bus:02x}:{address.slot:02x}"


def setup_file(root: str | None, name: str) -> str:
    """Where setup keeps a file it writes (the MSI script, the input config), as a host path."""
    return f"{(root or '').rstrip('/')}/{SETUP_DIR}/{name}"


def input_config(root: str | None, answers: Answers) -> str:
    return setup_file(root, f"{answers.name}-{answers.input}.conf")


def msi_script_file(root: str | None, answers: Answers) -> str:
    return setup_file(root, f"{answers.name}-enable-msi.ps1")


def _find(devices: Sequence[PciDevice], text: str) -> list[PciDevice]:
    pattern = parse_pci_pattern(text)
    return [d for d in devices if pattern.matches(d.address)]


def choose_gpu(devices: Sequence[PciDevice], wanted: str | None) -> _Gpu:
    """The GPU to pass: the one named, else the only one that is not the host's own display."""
    gpus = [d for d in devices if d.is_display]
    host_display = find_host_display(devices)
    if wanted:
        named = [d for d in _find(devices, wanted) if d.is_display]
        if not named:
            return _Gpu(None, f"{wanted} is not a GPU on this host (vfiodesk devices lists them)")
        return _gpu_group(devices, named[0], host_display)
    if not gpus:
        return _Gpu(None, "no GPU found on this host")
    spare = [d for d in gpus if d.address != host_display]
    if not spare:
        return _Gpu(None, f"the only GPU ({gpus[0].address}) is the host's display: the host would "
                          "have no picture while the VM runs; if that is what you want, name it with "
                          f"--gpu {card_address(gpus[0])}")
    if len(spare) > 1:
        listed = ", ".join(str(d.address) for d in spare)
        return _Gpu(None, f"several GPUs could be passed ({listed}): choose one with --gpu")
    return _gpu_group(devices, spare[0], host_display)


def _gpu_group(devices: Sequence[PciDevice], gpu: PciDevice, host_display: PciAddress | None) -> _Gpu:
    if gpu.iommu_group is None:
        return _Gpu(None, f"{gpu.address} has no IOMMU group (the IOMMU is off)")
    members = group_devices(devices).get(gpu.iommu_group, [])
    view = classify_group(gpu.iommu_group, members, [gpu.address], host_display)
    if view.strangers:
        strangers = ", ".join(f"{d.address} ({d.ids})" for d in view.strangers)
        return _Gpu(None, f"{gpu.address}'s IOMMU group {gpu.iommu_group} also holds {strangers}: "
                          "VFIO passes whole groups; move the card to a slot wired to the CPU")
    companions = tuple(d for d, role in view.roles if role is Role.COMPANION)
    return _Gpu(gpu, "", companions, host_display=gpu.address == host_display)


def _usb_problem(devices: Sequence[PciDevice], wanted: str) -> str:
    found = [d for d in _find(devices, wanted) if not d.is_bridge]
    if not found:
        return f"no USB controller {wanted} on this host (vfiodesk devices lists them)"
    device = found[0]
    if device.iommu_group is None:
        return f"{device.address} has no IOMMU group (the IOMMU is off)"
    members = group_devices(devices).get(device.iommu_group, [])
    view = classify_group(device.iommu_group, members, [d.address for d in found])
    if view.strangers:
        return (f"{device.address}'s IOMMU group {device.iommu_group} also holds "
                f"{', '.join(str(d.address) for d in view.strangers)}: pick another USB controller")
    return ""


def _binding_mode(answers: Answers, gpu: PciDevice | None) -> str:
    if answers.binding:
        return answers.binding
    return "vfiodesk" if gpu is not None and gpu.vendor_id == NVIDIA_VENDOR else "libvirt"


class _Graph:
    """Builds the steps in story order; a step that is not done blocks the ones after it."""

    def __init__(self, root: str | None, connect: str | None) -> None:
        self.steps: list[SetupStep] = []
        self.root = root
        root_args = ("--root", root) if root else ()
        connect_args = ("--connect", connect) if connect else ()
        self.root_args = root_args
        self.connect_args = connect_args

    def vfiodesk(self, *args: str, libvirt: bool = False) -> tuple[str, ...]:
        return ("vfiodesk", *args, *self.root_args, *(self.connect_args if libvirt else ()))

    def add(self, step: SetupStep) -> SetupStep:
        self.steps.append(step)
        return step


def plan_setup(facts: SetupFacts, answers: Answers, *, root: str | None = None,
               connect: str | None = None) -> list[SetupStep]:
    """Every step of the story with its status; ``root``/``connect`` go into each command."""
    graph = _Graph(root, connect)
    failed = [f for f in facts.findings if f.status is Status.FAIL and (
        f.id in _HARDWARE_CHECKS or (f.id in _KVM_CHECKS and answers.domain_type != "qemu"))]
    if failed:
        hardware = graph.add(SetupStep(
            "hardware", "check the hardware", StepStatus.BLOCKED,
            "; ".join(f"{f.summary} ({f.hint})" if f.hint else f.summary for f in failed),
            graph.vfiodesk("doctor")))
    else:
        hardware = graph.add(SetupStep("hardware", "check the hardware", StepStatus.DONE,
                                       "virtualization, the firmware's IOMMU, vfio, QEMU, OVMF and "
                                       "libvirt are there", graph.vfiodesk("doctor")))
    iommu_on = facts.iommu_groups > 0
    _iommu_steps(graph, facts, answers, hardware, iommu_on)
    gpu = _gpu_step(graph, facts, answers, iommu_on)
    _prime_step(graph, facts, gpu)
    binding = _binding_step(graph, facts, answers, gpu)
    _hook_step(graph, facts)
    _vm_steps(graph, facts, answers, gpu, binding)
    return graph.steps


def _blocked_by(graph: _Graph, *ids: str) -> str | None:
    """Why a step must wait: the first of ``ids`` that is not done (or skipped)."""
    for step in graph.steps:
        if step.id in ids and step.status not in (StepStatus.DONE, StepStatus.SKIPPED):
            return f"waits for step {step.id!r}"
    return None


def _iommu_steps(graph: _Graph, facts: SetupFacts, answers: Answers, hardware: SetupStep,
                 iommu_on: bool) -> None:
    applied = facts.applied.get("iommu")
    flags = ("--passthrough-mode",) if answers.passthrough_mode else ()
    command = graph.vfiodesk("host", "iommu", *flags, "--apply")
    word = {"intel": "intel_iommu=on", "amd": "AMD-Vi"}.get(facts.cpu_vendor, "the IOMMU")
    if iommu_on:
        graph.add(SetupStep("iommu", "turn the IOMMU on", StepStatus.DONE,
                            f"the IOMMU is on ({facts.iommu_groups} groups)", command))
    elif applied is not None:
        graph.add(SetupStep("iommu", "turn the IOMMU on", StepStatus.DONE,
                            f"{word} is in the boot loader's configuration (change {applied.change}); "
                            "it takes effect at the next boot", command))
    elif hardware.status is not StepStatus.DONE:
        graph.add(SetupStep("iommu", "turn the IOMMU on", StepStatus.BLOCKED,
                            "waits for step 'hardware'", command))
    elif (firmware := _firmware_keeps_iommu_off(facts)) is not None:
        graph.add(SetupStep("iommu", "turn the IOMMU on", StepStatus.BLOCKED, firmware, command))
    else:
        graph.add(SetupStep("iommu", "turn the IOMMU on", StepStatus.TODO,
                            f"add {word} to the kernel command line of future boots", command))
    if iommu_on:
        evidence = f"; kernel log: {facts.iommu_evidence!r}" if facts.iommu_evidence else ""
        graph.add(SetupStep("reboot", "reboot with the IOMMU on", StepStatus.DONE,
                            f"the kernel made {facts.iommu_groups} IOMMU groups{evidence}"))
    elif applied is None:
        graph.add(SetupStep("reboot", "reboot with the IOMMU on", StepStatus.BLOCKED,
                            "waits for step 'iommu'"))
    elif applied.boot_id is not None and applied.boot_id == facts.boot_id:
        graph.add(SetupStep("reboot", "reboot with the IOMMU on", StepStatus.TODO,
                            "reboot now to turn the IOMMU on, then run vfiodesk setup again",
                            ("reboot",), automatic=False))
    else:
        graph.add(SetupStep("reboot", "reboot with the IOMMU on", StepStatus.BLOCKED,
                            "the host rebooted but the IOMMU is still off (no IOMMU groups): enable "
                            "VT-d / AMD-Vi in the firmware setup, and check that /proc/cmdline has "
                            f"{word if facts.cpu_vendor == 'intel' else 'no iommu=off'}"))


def _firmware_keeps_iommu_off(facts: SetupFacts) -> str | None:
    """No groups although the running command line already asks for the IOMMU: no boot
    parameter can help, the firmware has it off (kernel-parameters.txt: AMD-Vi is on unless
    amd_iommu=off; Intel needs intel_iommu=on unless the kernel defaults it on)."""
    line = facts.cmdline
    if line is None:
        return None
    # The kernel reads every intel_iommu= in order: the last on/off wins.
    if facts.cpu_vendor == "intel" and "on" in (line.last("intel_iommu") or "").split(","):
        return ("intel_iommu=on is on the command line, yet there are no IOMMU groups: enable VT-d "
                "in the firmware setup (BIOS/UEFI), then run vfiodesk setup again")
    if facts.cpu_vendor == "amd" and "off" not in line.options("amd_iommu") and \
            line.last("iommu") != "off":
        return ("AMD-Vi is on by default, yet there are no IOMMU groups: enable the IOMMU (AMD-Vi, "
                "sometimes 'IOMMU' or 'SVM') in the firmware setup, then run vfiodesk setup again")
    return None


def _gpu_step(graph: _Graph, facts: SetupFacts, answers: Answers, iommu_on: bool) -> _Gpu:
    command = graph.vfiodesk("devices")
    if not iommu_on:
        graph.add(SetupStep("gpu", "choose the GPU (and what goes with it)", StepStatus.BLOCKED,
                            "the IOMMU groups appear after the reboot", command))
        graph.add(SetupStep("usb", "choose a USB controller for the VM", StepStatus.BLOCKED,
                            "waits for step 'gpu'", command))
        return _Gpu(None, "the IOMMU is off")
    gpu = choose_gpu(facts.devices, answers.gpu)
    if gpu.device is None:
        graph.add(SetupStep("gpu", "choose the GPU (and what goes with it)", StepStatus.BLOCKED,
                            gpu.problem, command))
    else:
        device = gpu.device
        with_it = (" with " + ", ".join(f"{d.address} ({d.ids})" for d in gpu.companions)
                   if gpu.companions else "")
        note = " (the host's own display: no host picture while the VM runs)" if gpu.host_display else ""
        graph.add(SetupStep("gpu", "choose the GPU (and what goes with it)", StepStatus.DONE,
                            f"{device.address} ({device.ids}){with_it}, IOMMU group "
                            f"{device.iommu_group}, nothing else in it{note}", command))
    if not answers.usb_controller:
        graph.add(SetupStep("usb", "choose a USB controller for the VM", StepStatus.SKIPPED,
                            "none passed: keyboard and mouse are shared over the network instead",
                            command))
    else:
        problem = _usb_problem(facts.devices, answers.usb_controller)
        graph.add(SetupStep("usb", "choose a USB controller for the VM",
                            StepStatus.BLOCKED if problem else StepStatus.DONE,
                            problem or f"{answers.usb_controller} goes to the VM with its whole group",
                            command))
    return gpu


def _prime_step(graph: _Graph, facts: SetupFacts, gpu: _Gpu) -> None:
    title = "free the NVIDIA GPU from the desktop (prime-select)"
    nvidia = gpu.device is not None and gpu.device.vendor_id == NVIDIA_VENDOR
    waiting = _blocked_by(graph, "gpu")
    if waiting:
        graph.add(SetupStep("prime", title, StepStatus.BLOCKED, waiting))
        return
    if not nvidia or facts.prime is None:
        graph.add(SetupStep("prime", title, StepStatus.SKIPPED,
                            "not an NVIDIA card with prime-select" if not nvidia else
                            "prime-select is not installed: the desktop does not use the NVIDIA card"))
        return
    if facts.prime in PRIME_FREE_PROFILES or "prime" in facts.applied:
        graph.add(SetupStep("prime", title, StepStatus.DONE,
                            f"prime-select: {facts.prime} (the desktop leaves the NVIDIA card free "
                            "once you log in again)", ("prime-select", "intel")))
        return
    graph.add(SetupStep("prime", title, StepStatus.TODO,
                        f"prime-select query says {facts.prime}: the desktop would hold the card; "
                        "select the integrated GPU, then log out and back in (or restart the "
                        "display manager)", ("prime-select", "intel")))


def _binding_step(graph: _Graph, facts: SetupFacts, answers: Answers, gpu: _Gpu) -> str:
    mode = _binding_mode(answers, gpu.device)
    title = "choose who binds the GPU to vfio-pci"
    waiting = _blocked_by(graph, "gpu")
    if mode != "vfio-early":
        graph.add(SetupStep("binding", title, StepStatus.BLOCKED if waiting else StepStatus.DONE,
                            waiting or f"{mode}: {BINDING_MODES[mode]}"))
        return mode
    if waiting or gpu.device is None:
        graph.add(SetupStep("binding", title, StepStatus.BLOCKED, waiting or gpu.problem))
        return mode
    device = gpu.device
    command = graph.vfiodesk("host", "vfio-early", card_address(device), "--apply")
    applied = facts.applied.get("binding")
    if device.driver == VFIO_DRIVER:
        status, summary = StepStatus.DONE, f"vfio-pci took {device.address} at boot"
    elif applied is None:
        status, summary = StepStatus.TODO, f"vfio-early: {BINDING_MODES['vfio-early']}"
    elif applied.boot_id == facts.boot_id:
        graph.add(SetupStep("binding", title, StepStatus.TODO,
                            f"reboot now so vfio-pci takes {device.address} at boot (change "
                            f"{applied.change}), then run vfiodesk setup again", ("reboot",),
                            automatic=False))
        return mode
    else:
        status, summary = StepStatus.BLOCKED, (
            f"after the reboot {device.address} is on {device.driver or 'no driver'}, not vfio-pci: "
            "check the initramfs was rebuilt (vfiodesk host history)")
    graph.add(SetupStep("binding", title, status, summary, command))
    return mode


def _hook_step(graph: _Graph, facts: SetupFacts) -> None:
    restart = ("--restart",) if facts.systemd else ()
    command = graph.vfiodesk("hook", "install", *restart)
    if facts.hook_installed:
        graph.add(SetupStep("hook", "install the libvirt hook", StepStatus.DONE,
                            "the hook is installed (etc/libvirt/hooks/qemu.d/vfiodesk)", command))
        return
    later = "" if facts.systemd else "; then restart libvirtd (or virtqemud) so it sees the hook"
    waiting = _blocked_by(graph, "hardware")
    status = StepStatus.BLOCKED if waiting else StepStatus.TODO
    graph.add(SetupStep("hook", "install the libvirt hook", status,
                        waiting or "the hook hands the GPU to the VM as it starts and takes it back "
                                   f"as it stops{later}", command))


def _vm_steps(graph: _Graph, facts: SetupFacts, answers: Answers, gpu: _Gpu, binding: str) -> None:
    name = answers.name
    create = _create_command(graph, answers, gpu, binding)
    missing = [label for label, value in (("--iso (the Windows installer)", answers.iso),
                                          ("--virtio-iso (the virtio-win drivers)", answers.virtio_iso))
               if not value]
    waiting = _blocked_by(graph, "hardware", "iommu", "reboot", "gpu", "usb", "prime", "binding", "hook")
    if facts.domain_defined:
        vm = SetupStep("vm", "create the VM", StepStatus.DONE, f"the domain {name} is defined", create)
    elif waiting:
        vm = SetupStep("vm", "create the VM", StepStatus.BLOCKED, waiting, create)
    elif facts.domain_defined is None:
        vm = SetupStep("vm", "create the VM", StepStatus.BLOCKED,
                       f"cannot ask libvirt whether {name} exists: {facts.libvirt_error}", create)
    elif missing:
        vm = SetupStep("vm", "create the VM", StepStatus.BLOCKED, f"give {' and '.join(missing)}", create)
    else:
        vm = SetupStep("vm", "create the VM", StepStatus.TODO,
                       f"define {name}: UEFI, the GPU's group, VirtIO SCSI, pinned CPUs", create)
    graph.add(vm)
    up = graph.vfiodesk("up", name, libvirt=True)
    installed = answers.windows_installed or "windows" in facts.applied
    graph.add(SetupStep(
        "windows", "install Windows", StepStatus.DONE if installed else
        StepStatus.BLOCKED if vm.status is not StepStatus.DONE else StepStatus.TODO,
        "Windows is installed" if installed else
        f"start the VM ({shlex.join(up)}) and open its screen (virt-manager, or virt-viewer {name}); "
        "boot the installer (if the UEFI shell appears: FS0:\\EFI\\BOOT\\BOOTX64.EFI); at 'Where do "
        "you want to install Windows?' choose Load driver and browse the virtio-win CD to "
        f"{VIRTIO_DRIVER_FOLDER}; when Windows is installed, shut it down and run: vfiodesk setup "
        "--windows-installed", up, automatic=False))
    _done_or(graph, facts, "post-install", "clean up after the install",
             "drop the install-time devices (extra CD-ROMs, serial, IDE)",
             graph.vfiodesk("vm", "tune", name, "--post-install", libvirt=True), "windows")
    script = msi_script_file(graph.root, answers)
    _done_or(graph, facts, "msi", "MSI interrupts for the passed devices",
             f"write the PowerShell script that turns MSI on for the passed devices to {script}",
             graph.vfiodesk("desktop", "msi", name, libvirt=True), "post-install",
             done_summary=f"copy {script} into the VM, run it there as Administrator (powershell "
                          "-ExecutionPolicy Bypass -File enable-msi.ps1), then reboot the VM")
    if answers.input == "none":
        graph.add(SetupStep("input", "share keyboard and mouse", StepStatus.SKIPPED,
                            "no input sharing asked (a passed USB controller or evdev instead)"))
    else:
        graph.add(_maybe_done(graph, facts, "input", "share keyboard and mouse",
                              f"write the {answers.input} server config (the VM is the screen beside "
                              "the host's)",
                              graph.vfiodesk("desktop", "input", name, "--mode", answers.input,
                                             "--output", input_config(graph.root, answers),
                                             libvirt=True), "vm"))
    synergy = ("--synergy-config", input_config(graph.root, answers)) if answers.input == "synergy" else ()
    start = graph.vfiodesk("up", name, *synergy, libvirt=True)
    waiting = _blocked_by(graph, "msi", "input")
    graph.add(SetupStep("up", "start the desktop", StepStatus.BLOCKED if waiting else StepStatus.TODO,
                        waiting or f"the desktop is ready: {shlex.join(start)}", start, automatic=False))


def _maybe_done(graph: _Graph, facts: SetupFacts, step_id: str, title: str, summary: str,
                command: tuple[str, ...], after: str, done_summary: str = "") -> SetupStep:
    applied = facts.applied.get(step_id)
    if applied is not None:
        where = f" ({applied.file})" if applied.file else ""
        return SetupStep(step_id, title, StepStatus.DONE, done_summary or f"done{where}", command)
    waiting = _blocked_by(graph, after)
    return SetupStep(step_id, title, StepStatus.BLOCKED if waiting else StepStatus.TODO,
                     waiting or summary, command)


def _done_or(graph: _Graph, facts: SetupFacts, step_id: str, title: str, summary: str,
             command: tuple[str, ...], after: str, done_summary: str = "") -> None:
    graph.add(_maybe_done(graph, facts, step_id, title, summary, command, after, done_summary))


def _create_command(graph: _Graph, answers: Answers, gpu: _Gpu, binding: str) -> tuple[str, ...]:
    args: list[str] = ["vm", "create", answers.name]
    if gpu.device is not None:
        args += ["--gpu", card_address(gpu.device)]
    elif answers.gpu:
        args += ["--gpu", answers.gpu]
    disk = answers.disk or DEFAULT_DISK.format(name=answers.name)
    options = (("--usb-controller", answers.usb_controller), ("--memory", answers.memory),
               ("--cpus", str(answers.cpus) if answers.cpus else None), ("--disk", disk),
               ("--iso", answers.iso), ("--virtio-iso", answers.virtio_iso),
               ("--network", answers.network), ("--domain-type", answers.domain_type),
               ("--os", answers.os))
    for option, value in options:
        if value is not None:
            args += [option, value]
    # vfio-early: the card is on vfio-pci already; the hook keeps it there (libvirt would give
    # it back to the host driver when the VM stops).
    args += ["--binding", "libvirt" if binding == "libvirt" else "vfiodesk"]
    if gpu.host_display:
        args.append("--force")  # the user named the host's display on purpose
    return graph.vfiodesk(*args, libvirt=True)
