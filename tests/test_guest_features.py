"""The guest's enlightenments and CPU features follow the host and the domain type."""

from __future__ import annotations

from vfiodesk.host.system import CpuInfo
from vfiodesk.plan.guest import plan_guest_features

INTEL = CpuInfo("GenuineIntel", "Core", frozenset({"vmx", "constant_tsc", "nonstop_tsc"}))
AMD = CpuInfo("AuthenticAMD", "Ryzen", frozenset({"svm", "topoext", "avic", "constant_tsc"}))


def names(domain_type: str, cpu: CpuInfo | None, **options: bool) -> list[str]:
    features = plan_guest_features(domain_type, cpu, mirrors_host=True, **options)
    return [e.name for e in features.enlightenments]


def test_kvm_gets_the_full_set_and_tcg_what_it_can_run() -> None:
    assert names("kvm", INTEL) == ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer",
                                   "reset", "vendor_id", "frequencies", "reenlightenment", "tlbflush", "ipi"]
    # QEMU's TCG refuses hv-vpindex and what needs it (checked on this machine's QEMU).
    assert names("qemu", INTEL) == ["relaxed", "vapic", "spinlocks", "runtime", "reset", "vendor_id",
                                    "frequencies", "reenlightenment"]


def test_vendor_features() -> None:
    assert "evmcs" in names("kvm", INTEL, nested=True) and "evmcs" not in names("kvm", INTEL)
    assert "evmcs" not in names("kvm", AMD, nested=True) and "avic" in names("kvm", AMD)
    amd = plan_guest_features("kvm", AMD, mirrors_host=True)
    # topoext on AMD; no invtsc: this AMD host's TSC is constant but not nonstop.
    assert [name for name, _ in amd.cpu_features] == ["topoext"] and amd.amd_host and amd.cache_passthrough
    intel = plan_guest_features("kvm", INTEL, mirrors_host=False)
    assert [name for name, _ in intel.cpu_features] == ["invtsc"] and not intel.cache_passthrough
    unknown = plan_guest_features("kvm", None, mirrors_host=True)
    assert unknown.cpu_features == () and unknown.host_passthrough
    assert plan_guest_features("qemu", AMD, mirrors_host=True).cpu_features == ()
