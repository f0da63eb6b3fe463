"""Demo steps: is the host ready, and what would passing the GPU take?"""

from __future__ import annotations

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS, STRANGER_ADDRESSES
from vfiodesk.lab.steps.common import vfiodesk_json


@step("doctor", "doctor: is the host ready for passthrough?")
def doctor(state: dict[str, object]) -> StepOutcome:
    report = vfiodesk_json("doctor")
    checks = {check["id"]: check for check in report["checks"]}
    iommu = checks["iommu-enabled"]
    failed = [check_id for check_id, check in checks.items() if check["status"] == "fail"]
    ok = report["ready"] and iommu["status"] == "pass"
    return StepOutcome(ok, iommu["summary"] if ok else f"failed checks: {', '.join(failed)}")


@step("devices", "devices: the GPU and its HDMI audio share one clean IOMMU group")
def devices(state: dict[str, object]) -> StepOutcome:
    listing = vfiodesk_json("devices")
    by_address = {device["address"]: device for device in listing["devices"]}
    gpu, audio = by_address.get(GPU_ADDRESS), by_address.get(GPU_AUDIO_ADDRESS)
    if gpu is None or audio is None:
        return StepOutcome(False, "the GPU-shaped pair is missing from the lab")
    group = gpu["iommu_group"]
    clean = next(g["clean"] for g in listing["groups"] if g["number"] == group)
    strangers = [by_address[a]["role"] for a in STRANGER_ADDRESSES if a in by_address]
    ok = (listing["iommu_enabled"] and audio["iommu_group"] == group and clean
          and audio["role"] == "companion" and "stranger" in strangers)
    state["gpu_group"] = group
    return StepOutcome(ok, f"group {group}: {GPU_ADDRESS} ({gpu['driver']}) + {GPU_AUDIO_ADDRESS} "
                           f"({audio['driver']}); the serial cards share a group with a stranger")
