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


@step("devices", "devices: the GPU (the host's only display) and its HDMI audio share one clean IOMMU group")
def devices(state: dict[str, object]) -> StepOutcome:
    listing = vfiodesk_json("devices")
    by_address = {device["address"]: device for device in listing["devices"]}
    gpu, audio = by_address.get(GPU_ADDRESS), by_address.get(GPU_AUDIO_ADDRESS)
    if gpu is None or audio is None:
        return StepOutcome(False, "the GPU-shaped pair is missing from the lab")
    groups = {group["number"]: group for group in listing["groups"]}
    group = gpu["iommu_group"]
    strangers = {by_address[a]["iommu_group"] for a in STRANGER_ADDRESSES if a in by_address}
    problems = [text for text, wrong in (
        ("the IOMMU is off", not listing["iommu_enabled"]),
        (f"{GPU_AUDIO_ADDRESS} is not in the GPU's group", audio["iommu_group"] != group),
        (f"group {group} is not clean", not groups[group]["clean"]),
        # The lab's only GPU is the host's own display; its audio function is the same card.
        (f"roles are {gpu['role']}/{audio['role']}, not host display/companion",
         (gpu["role"], audio["role"]) != ("host display", "companion")),
        ("the serial cards do not make one unclean group",
         len(strangers) != 1 or any(groups[number]["clean"] for number in strangers)),
    ) if wrong]
    state["gpu_group"] = group
    if problems:
        return StepOutcome(False, "; ".join(problems))
    return StepOutcome(True, f"group {group}: {GPU_ADDRESS} ({gpu['driver'] or 'no driver'}) + "
                             f"{GPU_AUDIO_ADDRESS} "
                             f"({audio['driver']}); the serial cards' group {strangers.pop()} "
                             "has a stranger")
