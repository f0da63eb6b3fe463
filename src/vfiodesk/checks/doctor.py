"""Is this host ready for GPU passthrough? Every prerequisite of the seed as one check each.

Pure: takes HostFacts, returns findings. A fail means not ready; a warn is advice.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vfiodesk.checks.groups import classify_group
from vfiodesk.checks.packages import install_command
from vfiodesk.host.facts import HostFacts
from vfiodesk.host.pci import group_devices
from vfiodesk.plan.bind import NVIDIA_VENDOR


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    id: str
    status: Status
    summary: str
    hint: str = ""


def is_ready(findings: list[Finding]) -> bool:
    return not any(finding.status is Status.FAIL for finding in findings)


def _vendor(facts: HostFacts) -> str:
    if facts.cpu is None:
        return "unknown"
    return "intel" if facts.cpu.is_intel else "amd" if facts.cpu.is_amd else "unknown"


def check_cpu_virtualization(facts: HostFacts) -> Finding:
    if facts.cpu is None:
        return Finding("cpu-virtualization", Status.SKIP,
                       f"cannot read the CPU flags: {facts.errors.get('cpu', 'no proc/cpuinfo')}")
    if "vmx" in facts.cpu.flags or "svm" in facts.cpu.flags:
        kind = "VT-x (vmx)" if "vmx" in facts.cpu.flags else "AMD-V (svm)"
        return Finding("cpu-virtualization", Status.PASS, f"the CPU offers {kind}")
    return Finding("cpu-virtualization", Status.FAIL, "the CPU shows no vmx/svm flag",
                   "enable Intel VT-x or AMD SVM in the firmware (BIOS/UEFI) setup")


def check_kvm(facts: HostFacts) -> Finding:
    if facts.kvm_device:
        return Finding("kvm", Status.PASS, "/dev/kvm exists")
    module = {"intel": "kvm_intel", "amd": "kvm_amd"}.get(_vendor(facts), "kvm_intel or kvm_amd")
    return Finding("kvm", Status.FAIL, "/dev/kvm is missing: QEMU cannot use KVM",
                   f"load the module (modprobe {module}) and enable virtualization in the firmware")


def check_iommu_firmware(facts: HostFacts) -> Finding:
    if facts.acpi_tables is None:
        return Finding("iommu-firmware", Status.SKIP, "cannot list the ACPI tables (sys/firmware/acpi)")
    present = sorted(facts.acpi_tables & {"DMAR", "IVRS"})
    if present:
        return Finding("iommu-firmware", Status.PASS, f"the firmware describes an IOMMU ({present[0]})")
    hint = {"intel": "enable VT-d in the firmware setup",
            "amd": "enable AMD-Vi / IOMMU in the firmware setup"}
    return Finding("iommu-firmware", Status.FAIL,
                   "no DMAR (VT-d) or IVRS (AMD-Vi) ACPI table: the firmware hides the IOMMU",
                   hint.get(_vendor(facts), "enable VT-d (Intel) or AMD-Vi (AMD) in the firmware setup"))


def check_iommu_enabled(facts: HostFacts) -> Finding:
    log = facts.iommu_log or []
    evidence = next((line for line in log if any(
        mark in line for mark in ("IOMMU enabled", "AMD-Vi: Interrupt remapping", "Found IOMMU"))), None)
    if facts.iommu_groups:
        detail = f"; kernel log: {evidence.strip()!r}" if evidence else ""
        return Finding("iommu-enabled", Status.PASS,
                       f"the kernel made {len(facts.iommu_groups)} IOMMU groups{detail}")
    fix = ("add intel_iommu=on to the kernel command line: vfiodesk host iommu --apply, then reboot"
           if _vendor(facts) == "intel" else
           "enable the IOMMU in the firmware; check the kernel log for AMD-Vi errors; "
           "vfiodesk host iommu --apply, then reboot")
    return Finding("iommu-enabled", Status.FAIL,
                   "the IOMMU is off: there are no IOMMU groups, so no device can be passed through", fix)


def check_cmdline(facts: HostFacts) -> Finding:
    line = facts.cmdline
    if line is None:
        return Finding("kernel-cmdline", Status.SKIP, "cannot read the kernel command line (proc/cmdline)")
    if "on" in line.options("amd_iommu"):
        return Finding("kernel-cmdline", Status.WARN,
                       "amd_iommu=on is not a valid value (the kernel logs 'AMD-Vi: Unknown option')",
                       "remove amd_iommu=on: AMD-Vi is on by default; vfiodesk host iommu --apply does it")
    intel = line.options("intel_iommu")
    if _vendor(facts) == "intel" and "on" not in intel:
        status = Status.WARN if facts.iommu_groups else Status.FAIL
        return Finding("kernel-cmdline", status, "intel_iommu=on is not on the kernel command line",
                       "vfiodesk host iommu --apply adds it (then reboot)")
    notes = []
    if "igfx_off" in intel:
        notes.append("igfx_off keeps the integrated GPU out of the IOMMU (the seed's Sandy Bridge fix)")
    if line.last("iommu") != "pt":
        return Finding("kernel-cmdline", Status.WARN,
                       "iommu=pt is not set" + "".join(f"; {n}" for n in notes),
                       "iommu=pt spares host devices the IOMMU's cost: "
                       "vfiodesk host iommu --passthrough-mode")
    summary = "; ".join(["the IOMMU options are right", *notes])
    return Finding("kernel-cmdline", Status.PASS, summary)


def check_vfio_modules(facts: HostFacts) -> Finding:
    if facts.modules is None:
        return Finding("vfio-modules", Status.SKIP, "cannot read the module lists")
    missing = [name for name in ("vfio", "vfio_iommu_type1", "vfio_pci") if not facts.modules.has(name)]
    if missing:
        return Finding("vfio-modules", Status.FAIL, f"missing kernel modules: {', '.join(missing)}",
                       "install a kernel built with CONFIG_VFIO_PCI (every distribution kernel has it)")
    return Finding("vfio-modules", Status.PASS, "vfio, vfio_iommu_type1 and vfio_pci are available")


def _tool_check(check_id: str, found: str | None, what: str, need: str, facts: HostFacts,
                status_if_missing: Status = Status.FAIL) -> Finding:
    if found:
        return Finding(check_id, Status.PASS, f"{what}: {found}")
    return Finding(check_id, status_if_missing, f"{what} is not installed",
                   install_command(facts.os_release, [need]))


def check_qemu(facts: HostFacts) -> Finding:
    return _tool_check("qemu", facts.programs.get("qemu-system-x86_64"), "QEMU", "qemu", facts)


def check_ovmf(facts: HostFacts) -> Finding:
    found = facts.ovmf[0] if facts.ovmf else None
    return _tool_check("ovmf", found, "OVMF (UEFI for the VM)", "ovmf", facts)


def check_swtpm(facts: HostFacts) -> Finding:
    # libvirt runs swtpm_setup then swtpm for <tpm><backend type="emulator"/>; Windows 11 needs TPM 2.0.
    tools = [facts.programs.get(name) for name in ("swtpm", "swtpm_setup")]
    found = ", ".join(tool for tool in tools if tool) if all(tools) else None
    return _tool_check("swtpm", found, "swtpm (the TPM 2.0 that Windows 11 requires)", "swtpm", facts,
                       Status.WARN)


def check_libvirt(facts: HostFacts) -> Finding:
    modular, monolithic = facts.programs.get("virtqemud"), facts.programs.get("libvirtd")
    found = (f"{modular} (modular daemons)" if modular else
             f"{monolithic} (monolithic daemon)" if monolithic else None)
    return _tool_check("libvirt", found, "libvirt daemon", "libvirt", facts)


def check_virt_manager(facts: HostFacts) -> Finding:
    return _tool_check("virt-manager", facts.programs.get("virt-manager"), "virt-manager",
                       "virt-manager", facts, Status.WARN)


def check_libvirt_group(facts: HostFacts) -> Finding:
    if not facts.user:
        return Finding("libvirt-group", Status.SKIP, "run through sudo to check the invoking user's groups")
    if facts.libvirt_group is None:
        return Finding("libvirt-group", Status.WARN, "there is no libvirt group yet",
                       install_command(facts.os_release, ["libvirt"]))
    if facts.user in facts.libvirt_group:
        return Finding("libvirt-group", Status.PASS, f"{facts.user} is in the libvirt group")
    return Finding("libvirt-group", Status.WARN, f"{facts.user} is not in the libvirt group",
                   f"usermod -aG libvirt {facts.user}, then log in again")


def check_gpu_candidate(facts: HostFacts) -> Finding:
    if facts.devices is None:
        return Finding("gpu-candidate", Status.SKIP,
                       f"cannot list PCI devices: {facts.errors.get('devices', '')}")
    gpus = [device for device in facts.devices if device.is_display]
    spare = [device for device in gpus if not device.boot_vga]
    if not gpus:
        return Finding("gpu-candidate", Status.FAIL, "no GPU found", "install a second graphics card")
    if not spare:
        # The single-GPU path works (the hook stops the desktop and brings it back), but the
        # host has no picture while the VM runs: advice, not a blocker.
        return Finding("gpu-candidate", Status.WARN,
                       f"the only GPU ({gpus[0].address}) is the host's boot display: it can be "
                       "passed on the single-GPU path, and the host has no picture while the VM runs",
                       f"vfiodesk vm create NAME --gpu {str(gpus[0].address)[5:10]} --single-gpu "
                       "(README: Single-GPU hosts); or use an integrated GPU for the host and pass "
                       "the other card")
    if not facts.iommu_groups:
        return Finding("gpu-candidate", Status.SKIP,
                       f"{spare[0].address} could be passed, but its IOMMU group is unknown (IOMMU off)")
    groups = group_devices(facts.devices)
    grouped = [gpu for gpu in spare if gpu.iommu_group is not None]
    if not grouped:
        return Finding("gpu-candidate", Status.FAIL,
                       f"{spare[0].address} has no IOMMU group although the IOMMU is on: it cannot "
                       "be passed through",
                       "check the firmware's IOMMU settings and the kernel log (dmesg | grep -i iommu)")
    spare = grouped
    for gpu in spare:
        view = classify_group(gpu.iommu_group, groups.get(gpu.iommu_group, []), [gpu.address])
        if view.is_clean:
            return Finding("gpu-candidate", Status.PASS,
                           f"{gpu.address} ({gpu.ids}) is not the boot display and its IOMMU group "
                           f"{gpu.iommu_group} is clean")
    gpu = spare[0]
    view = classify_group(gpu.iommu_group, groups.get(gpu.iommu_group, []), [gpu.address])
    strangers = ", ".join(str(d.address) for d in view.strangers)
    return Finding("gpu-candidate", Status.FAIL,
                   f"{gpu.address}'s IOMMU group {gpu.iommu_group} also holds {strangers}",
                   "move the card to another slot (one wired to the CPU), or pass the strangers too")


# prime-select profiles that leave the NVIDIA card to whoever takes it ("integrated" is the
# newer name of "intel").
PRIME_FREE_PROFILES = frozenset({"intel", "integrated", "on-demand"})


def prime_finding(profile: str | None, nvidia_gpus: Sequence[str]) -> Finding:
    """Whether prime-select leaves the NVIDIA card free for the VM."""
    if profile is None:
        return Finding("prime-select", Status.PASS,
                       "nvidia-prime is not installed: no prime-select profile holds a GPU")
    if not nvidia_gpus:
        return Finding("prime-select", Status.PASS, "prime-select is installed, but there is no NVIDIA GPU")
    fix = "sudo prime-select on-demand (or intel), then log out and back in"
    if profile in PRIME_FREE_PROFILES:
        return Finding("prime-select", Status.PASS,
                       f"prime-select query says {profile}: the desktop leaves {nvidia_gpus[0]} free")
    if profile == "nvidia":
        return Finding("prime-select", Status.FAIL,
                       f"prime-select query says nvidia: the host's desktop renders on {nvidia_gpus[0]}, "
                       "so the VM cannot take it", fix)
    return Finding("prime-select", Status.WARN,
                   f"prime-select query says {profile}, not intel or on-demand", f"check it; {fix}")


def check_prime_select(facts: HostFacts) -> Finding:
    nvidia = [str(d.address) for d in facts.devices or () if d.is_display and d.vendor_id == NVIDIA_VENDOR]
    return prime_finding(facts.prime_profile, nvidia)


def check_pci_sysfs(facts: HostFacts) -> Finding:
    """Junk in a device's sysfs files fails: every answer built on it would be a guess."""
    if facts.devices is None:
        return Finding("pci-sysfs", Status.SKIP,
                       f"cannot list PCI devices: {facts.errors.get('devices', '')}")
    broken = [device for device in facts.devices if device.problems]
    if not broken:
        return Finding("pci-sysfs", Status.PASS, f"{len(facts.devices)} PCI functions read cleanly")
    first = broken[0]
    return Finding("pci-sysfs", Status.FAIL,
                   f"{len(broken)} PCI function(s) hold junk in sysfs: {first.problems[0]}",
                   "vfiodesk devices lists them; on a real host, reboot or reseat the card; "
                   "for a snapshot, take it again")


CHECKS: tuple[Callable[[HostFacts], Finding], ...] = (
    check_cpu_virtualization, check_kvm, check_iommu_firmware, check_iommu_enabled, check_cmdline,
    check_vfio_modules, check_qemu, check_ovmf, check_swtpm, check_libvirt, check_virt_manager,
    check_libvirt_group, check_pci_sysfs, check_gpu_candidate, check_prime_select,
)


def run_checks(facts: HostFacts) -> list[Finding]:
    return [check(facts) for check in CHECKS]
