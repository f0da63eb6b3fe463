"""What the guest sees: Hyper-V enlightenments, timers and CPU features, chosen from host facts.

Pure. `vm create`/`vm tune` write these choices and `vm audit` checks a domain against them, so
both read the same list. Sources: QEMU docs/system/i386/hyperv.rst ("enable all implemented
enlightenments except debug and conditional ones"), libvirt formatdomain.html#hypervisor-features
and #time-keeping, and the CPU flags in the kernel's arch/x86/include/asm/cpufeatures.h.
"""

from __future__ import annotations

from dataclasses import dataclass

from vfiodesk.host.system import CpuInfo
from vfiodesk.plan.pinning import GuestTopology

HYPERV_VENDOR_ID = "vfiodesk0000"  # 12 chars max; NVIDIA's old drivers refused VMs with "Microsoft Hv"
SPINLOCK_RETRIES = "8191"  # hyperv.rst: the value Hyper-V itself uses; 0xffffffff would mean "never notify"


@dataclass(frozen=True)
class Enlightenment:
    name: str  # the element under <features><hyperv>
    why: str
    attributes: tuple[tuple[str, str], ...] = ()
    direct: bool = False  # stimer's <direct state="on"/> child
    kvm_only: bool = False  # QEMU's TCG refuses it ("kernel doesn't allow setting HyperV VP_INDEX")


# One line each, hyperv.rst's reason. Order is the schema's (domaincommon.rng), so output reads like
# libvirt's own dumpxml.
ENLIGHTENMENTS: tuple[Enlightenment, ...] = (
    Enlightenment("relaxed", "no watchdog BSOD when the host preempts a vCPU (hv-relaxed)"),
    Enlightenment("vapic", "APIC access through MSRs: fewer exits on interrupts (hv-vapic)"),
    Enlightenment("spinlocks", "the guest yields after this many spins instead of burning the vCPU",
                  (("retries", SPINLOCK_RETRIES),)),
    Enlightenment("vpindex", "virtual processor index: needed by synic, tlbflush and ipi", kvm_only=True),
    Enlightenment("runtime", "the guest sees time it lost to the host (hv-runtime)"),
    Enlightenment("synic", "synthetic interrupt controller: needed by stimer and VMBus", kvm_only=True),
    Enlightenment("stimer", "synthetic timers with direct mode: no periodic RTC/HPET interrupt storm",
                  direct=True, kvm_only=True),
    Enlightenment("reset", "reset through a Hyper-V MSR (hv-reset)"),
    Enlightenment("vendor_id", "a vendor string of our own: old NVIDIA drivers refused 'Microsoft Hv'",
                  (("value", HYPERV_VENDOR_ID),)),
    Enlightenment("frequencies", "TSC and APIC frequencies read from MSRs, no calibration (hv-frequencies)"),
    Enlightenment("reenlightenment", "the guest is told when the TSC frequency changes (hv-reenlightenment)"),
    Enlightenment("tlbflush", "remote TLB flush by hypercall: no IPIs to preempted vCPUs", kvm_only=True),
    Enlightenment("ipi", "IPIs by hypercall: one exit instead of one per destination vCPU", kvm_only=True),
)
EVMCS = Enlightenment("evmcs", "enlightened VMCS for nested Hyper-V/WSL2/VBS: Intel VMX only, on request",
                      kvm_only=True)
AVIC = Enlightenment("avic", "AMD AVIC with Hyper-V's auto-EOI turned off (hv-avic): host APIC "
                     "virtualization keeps working", kvm_only=True)

# formatdomain.html#time-keeping; hyperv.rst: hv-time (hypervclock) is the reference TSC page
# Windows prefers, and hv-stimer needs it; the HPET only adds exits; rtc catchup/pit delay are
# what virt-manager and Windows guests use so a preempted guest's clock does not drift.
TIMERS: tuple[tuple[str, tuple[tuple[str, str], ...], str], ...] = (
    ("rtc", (("tickpolicy", "catchup"),), "missed RTC ticks are delivered faster until caught up"),
    ("pit", (("tickpolicy", "delay"),), "missed PIT ticks are delayed, not lost"),
    ("hpet", (("present", "no"),), "no HPET: Windows uses the Hyper-V clock instead"),
    ("hypervclock", (("present", "yes"),), "the Hyper-V reference TSC page (hv-time); stimer needs it"),
)


@dataclass(frozen=True)
class GuestFeatures:
    enlightenments: tuple[Enlightenment, ...]
    cpu_features: tuple[tuple[str, str], ...]  # (feature required on <cpu>, why)
    cache_passthrough: bool  # <cache mode="passthrough"/>: the guest sees the host's real caches
    host_passthrough: bool  # mode="host-passthrough" (KVM); TCG gets mode="maximum"
    amd_host: bool = False  # where hv-evmcs (Intel VMX only) must be off


def guest_mirrors_host(guest: GuestTopology, host_threads_per_core: int) -> bool:
    """Whole host cores as guest cores: then the host's cache layout is true for the guest too."""
    return guest.threads == host_threads_per_core


def plan_guest_features(domain_type: str, cpu: CpuInfo | None, *, mirrors_host: bool,
                        nested: bool = False) -> GuestFeatures:
    """The full set for this host: KVM-only features only under KVM, vendor features by vendor."""
    kvm = domain_type == "kvm"
    flags = cpu.flags if cpu else frozenset()
    chosen = [e for e in ENLIGHTENMENTS if kvm or not e.kvm_only]
    if kvm and nested and cpu is not None and cpu.is_intel:
        chosen.append(EVMCS)  # hyperv.rst: evmcs only helps nested guests and only exists on VMX
    if kvm and "avic" in flags:
        chosen.append(AVIC)
    features: list[tuple[str, str]] = []
    if kvm and cpu is not None and cpu.is_amd and "topoext" in flags:
        # Without topoext Windows sees every AMD vCPU as a core of its own: SMT threads are lost.
        features.append(("topoext", "AMD: the guest sees SMT threads and the real L3 layout"))
    if kvm and {"constant_tsc", "nonstop_tsc"} <= flags:
        # The host TSC ticks at one rate in every C/P-state: the guest may trust it as its clock.
        features.append(("invtsc", "invariant TSC: Windows keeps the TSC as its clocksource"))
    return GuestFeatures(tuple(chosen), tuple(features), cache_passthrough=kvm and mirrors_host,
                         host_passthrough=kvm, amd_host=cpu is not None and cpu.is_amd)
