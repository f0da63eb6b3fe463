"""`vfiodesk lab demo`, README's main job, booted for real: every step passes and says what it saw."""

from __future__ import annotations

import json

import pytest

from tests.labkit import lab_cli

pytestmark = pytest.mark.lab


def test_demo_tells_the_story_through_uefi_and_passes() -> None:
    done = lab_cli("demo", "--json", timeout=2500)
    report = json.loads(done.stdout)
    steps = {record["step"]: record for record in report["steps"]}
    failed = {name: record["detail"] for name, record in steps.items() if not record["ok"]}
    assert done.returncode == 0 and report["passed"] and not failed, failed or report
    assert report["firmware"] == "uefi"
    # Each step read its proof back from the real kernel; the details say what it saw.
    assert "efi-framebuffer.0; BAR c" in steps["efifb"]["detail"]
    assert "held by efifb" in steps["efifb"]["detail"]
    assert "efifb detached; in the VM: BAR" in steps["efifb-bind"]["detail"]
    assert "held by vfio-pci" in steps["efifb-bind"]["detail"]
    back = steps["efifb-unbind"]["detail"]
    assert "0000:01:00.1 on snd_hda_intel" in back
    assert "efifb re-attached" in back or "efi-framebuffer.0 could not be re-attached" in back
    assert "0000:01:00.0 on bochs-drm" in steps["gpu-driver"]["detail"]
    assert "held by bochs-drm" in steps["gpu-driver"]["detail"]
    refused = steps["display-server"]["detail"]
    assert refused.startswith("exit 4:") and " Xorg (a display server?)" in refused
    assert "after unbind 0000:01:00.0 on bochs-drm, 0000:01:00.1 on snd_hda_intel" in \
        steps["module-reload"]["detail"]
    assert "DMAR: IOMMU enabled" in steps["doctor"]["detail"]
    # Single-GPU (lab/steps/single_gpu.py): each step compares the host's display with the one
    # before the hand-off (the pair's drivers, fbcon bound, the desktop stand-in holding card0).
    single = {name[len("single-gpu-"):]: record["detail"] for name, record in steps.items()
              if name.startswith("single-gpu-")}
    assert "'desktop_holds_card0': True" in single["create"] and "'fbcon': True" in single["create"]
    assert single["start"].startswith("0000:01:00.0, 0000:01:00.1 inside QEMU")
    assert "'gpu': 'vfio-pci', 'audio': 'vfio-pci', 'fbcon': False, 'desktop_holds_card0': False" \
        in single["start"]
    assert "from stopping the desktop to verifying it is back" in single["stop"]
    assert "-vfiodesk-no-such-option" in single["qemu-fails"] and "host as before" in single["qemu-fails"]
    assert single["prepare-fails"] == "refused with the injected fault; desktop running again"
    assert single["holder"].startswith("refused naming pid")
    # setup --yes made the VM and installed the hook that vfiodesk up then starts.
    assert "next: windows" in steps["setup"]["detail"]
    assert "made by setup --yes" in steps["vm-create"]["detail"]
