"""The IOMMU parameters for the host's CPU (Documentation/admin-guide/kernel-parameters.txt)."""

from __future__ import annotations

from dataclasses import dataclass

from vfiodesk.errors import HostReadError, InputError
from vfiodesk.host.system import CpuInfo
from vfiodesk.plan.hostconfig.params import Want

# Intel family 6 models 42 (Sandy Bridge) and 45 (Sandy Bridge-E): IOMMU translation of host
# DMA is known to cost these much; the seed's advice for them.
_SANDY_BRIDGE_MODELS = frozenset({42, 45})


@dataclass(frozen=True)
class IommuWants:
    wants: tuple[Want, ...]
    notes: tuple[str, ...]


def plan_iommu_params(cpu: CpuInfo | None, *, igfx_off: bool, passthrough: bool) -> IommuWants:
    """intel_iommu=on on Intel (AMD-Vi is on by default); iommu=pt when asked."""
    if cpu is None or not (cpu.is_intel or cpu.is_amd):
        raise HostReadError("cannot tell the CPU vendor from proc/cpuinfo",
                            "the IOMMU parameters differ for Intel and AMD; run on the host itself "
                            "or give a --root tree with proc/cpuinfo")
    wants: list[Want] = []
    notes: list[str] = []
    if cpu.is_intel:
        options = ("on", "igfx_off") if igfx_off else ("on",)
        wants += [Want("intel_iommu", options, frozenset({"off"})), Want("amd_iommu", ())]
        if igfx_off:
            notes.append("igfx_off leaves the integrated GPU outside the IOMMU: the seed's cure for "
                         "boot or HDMI-audio trouble with the host's iGPU (the log then says "
                         "'DMAR: Disable GFX device mapping')")
    else:
        if igfx_off:
            raise InputError("--igfx-off is an Intel option (intel_iommu=igfx_off); this CPU is AMD",
                             "leave --igfx-off out")
        wants += [Want("amd_iommu", (), frozenset({"off"})), Want("intel_iommu", ())]
        notes.append("AMD-Vi is on by default when the firmware enables it: no amd_iommu= needed")
    if passthrough:
        wants.append(Want("iommu", ("pt",), frozenset({"nopt", "off"})))
        notes.append("iommu=pt: host devices skip IOMMU translation; passed devices are still isolated")
    else:
        wants.append(Want("iommu", (), frozenset({"off"})))
        if cpu.is_intel and cpu.family == 6 and cpu.model in _SANDY_BRIDGE_MODELS:
            notes.append("Sandy Bridge CPU: the IOMMU slows host I/O here. The seed suggests "
                         "intel_iommu=pt, which the kernel does not know; the real setting is "
                         "iommu=pt: add --passthrough-mode")
    return IommuWants(tuple(wants), tuple(notes))
