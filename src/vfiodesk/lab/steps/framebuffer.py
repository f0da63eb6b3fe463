"""Demo steps: a desktop booted through UEFI, whose boot GPU's memory the firmware's framebuffer
(efifb) holds until a driver takes over, the classic "BAR 0: can't reserve" of passthrough.

The demo boots OVMF with the GPU's own driver kept from loading (``DEMO_CMDLINE``), so efifb
still holds the GPU's BAR, as on a desktop whose passthrough GPU has its driver blacklisted.
"""

from __future__ import annotations

import os
import subprocess

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS
from vfiodesk.lab.steps.common import (
    bar_claims,
    console_bound,
    driver_of,
    drivers_of,
    holding_in_nested_vm,
    on_drivers,
    vfiodesk,
)

_PAIR = (GPU_ADDRESS, GPU_AUDIO_ADDRESS)
_EFIFB = "/sys/bus/platform/drivers/efi-framebuffer"
# The GPU's driver module (drivers/gpu/drm/tiny/bochs.c) binds as "bochs-drm".
GPU_MODULE, GPU_DRIVER = "bochs", "bochs-drm"


def efifb_devices() -> list[str]:
    """Platform devices bound to efifb (sys/bus/platform/drivers/efi-framebuffer)."""
    try:
        return sorted(entry for entry in os.listdir(_EFIFB) if "framebuffer" in entry)
    except OSError:
        return []


def _claims_text(claims: dict[str, list[str]]) -> str:
    return "; ".join(f"BAR {span} held by {', '.join(holders) or 'nobody'}"
                     for span, holders in claims.items())


@step("efifb", "UEFI boot: the firmware's framebuffer (efifb) holds the boot GPU's BAR")
def efifb(state: dict[str, object]) -> StepOutcome:
    if not os.path.isdir("/sys/firmware/efi"):
        return StepOutcome(False, "the lab booted without UEFI (--firmware bios): there is no efifb")
    claims = bar_claims(GPU_ADDRESS)
    state["fb_original"] = drivers_of(_PAIR)
    held = [span for span, holders in claims.items() if "efifb" in holders]
    ok = bool(efifb_devices()) and bool(held) and driver_of(GPU_ADDRESS) is None
    return StepOutcome(ok, f"{', '.join(efifb_devices()) or 'no efifb device'}; {_claims_text(claims)}; "
                           f"{GPU_ADDRESS} on {driver_of(GPU_ADDRESS) or 'no driver'}")


@step("efifb-bind", "bind: efifb lets go of the BAR, and vfio-pci gets it for a VM")
def efifb_bind(state: dict[str, object]) -> StepOutcome:
    done = vfiodesk("bind", GPU_ADDRESS[5:12])
    drivers = drivers_of(_PAIR)
    if done.returncode != 0 or set(drivers.values()) != {"vfio-pci"}:
        return StepOutcome(False, (done.stderr.strip() or str(drivers))[-300:])
    freed = bar_claims(GPU_ADDRESS)
    # A nested VM takes the GPU: vfio-pci claims the BAR when QEMU maps it (vfio_pci_core_mmap),
    # which fails with "BAR 0: can't reserve" while efifb still holds it.
    with holding_in_nested_vm(_PAIR) as in_vm:
        vm_claims = bar_claims(GPU_ADDRESS)
    claimed = [span for span, holders in vm_claims.items() if any("vfio" in h for h in holders)]
    ok = not efifb_devices() and not any(freed.values()) and bool(claimed) and in_vm.sees_all
    return StepOutcome(ok, f"efifb detached; in the VM: {_claims_text(vm_claims)}" if ok else
                       f"efifb: {efifb_devices()}; after bind: {_claims_text(freed)}; in the VM: "
                       f"{_claims_text(vm_claims)}; {in_vm.error}"[-300:])


@step("efifb-unbind", "unbind: the pair comes back; efifb is re-attached or that it could not be is said")
def efifb_unbind(state: dict[str, object]) -> StepOutcome:
    done = vfiodesk("unbind", *_PAIR)
    drivers = drivers_of(_PAIR)
    said = " ".join((done.stdout + done.stderr).split())
    reattached = bool(efifb_devices())
    # The kernel may refuse to bind efifb again (the black screen on return): that must be
    # reported, and the release still succeeds.
    reported = "efi-framebuffer" in said and "could not be re-attached" in said
    ok = done.returncode == 0 and drivers == state.get("fb_original") and (reattached or reported)
    fb = "efifb re-attached" if reattached else \
        f"reported: {said[said.find('the console framebuffer'):][:200]}"
    return StepOutcome(ok, f"{on_drivers(drivers)}; {fb}" if ok else f"exit {done.returncode}: {said[-300:]}")


@step("gpu-driver", "the GPU's own driver takes the screen back (modprobe bochs)")
def gpu_driver(state: dict[str, object]) -> StepOutcome:
    loaded = subprocess.run(["modprobe", GPU_MODULE], capture_output=True, text=True, check=False)
    claims = bar_claims(GPU_ADDRESS)
    drm = f"/sys/bus/pci/devices/{GPU_ADDRESS}/drm"
    cards = sorted(os.listdir(drm)) if os.path.isdir(drm) else []
    ok = loaded.returncode == 0 and driver_of(GPU_ADDRESS) == GPU_DRIVER and \
        any(GPU_DRIVER in holders for holders in claims.values()) and console_bound()
    return StepOutcome(ok, f"{GPU_ADDRESS} on {driver_of(GPU_ADDRESS)}; {_claims_text(claims)}; "
                           f"framebuffer console bound; drm: {', '.join(cards)}" if ok
                       else (loaded.stderr.strip() or _claims_text(claims))[-300:])
