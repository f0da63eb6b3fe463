"""Demo steps: hand the GPU pair to vfio-pci, let a nested VM use it, give it back."""

from __future__ import annotations

import os
import subprocess

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS
from vfiodesk.lab.steps.common import drivers_of, holding_in_nested_vm, on_drivers, vfiodesk

_PAIR = (GPU_ADDRESS, GPU_AUDIO_ADDRESS)
# snd_hda_intel stands in for NVIDIA's stack: a driver that comes from a module.
AUDIO_MODULE = "snd_hda_intel"


def _drivers() -> dict[str, str | None]:
    return drivers_of(_PAIR)


@step("display-server", "a display server holding /dev/dri/cardN makes bind refuse (exit 4, named)")
def display_server(state: dict[str, object]) -> StepOutcome:
    drm = f"/sys/bus/pci/devices/{GPU_ADDRESS}/drm"
    cards = sorted(name for name in os.listdir(drm) if name.startswith("card")) \
        if os.path.isdir(drm) else []
    if not cards:
        return StepOutcome(False, f"{GPU_ADDRESS} has no DRM card node to hold")
    before = _drivers()
    # The stand-in names itself Xorg (/proc/self/comm) and keeps the card open until stdin closes.
    holder = subprocess.Popen(
        ["python3", "-c", "import sys; open('/proc/self/comm', 'w').write('Xorg'); "
         f"card = open('/dev/dri/{cards[0]}', 'rb'); print('holding', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        holder.stdout.readline()
        refused = vfiodesk("bind", GPU_ADDRESS[5:12])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    named = f"{holder.pid} Xorg" in refused.stderr
    ok = refused.returncode == 4 and named and _drivers() == before
    return StepOutcome(ok, f"exit 4: {refused.stderr.strip().splitlines()[0][:200]}; {on_drivers(_drivers())}"
                       if ok else f"exit {refused.returncode}: {refused.stderr.strip()[-300:]}")


@step("bind", "bind: the GPU and its audio move to vfio-pci (console detached first)")
def bind(state: dict[str, object]) -> StepOutcome:
    state["original"] = _drivers()
    done = vfiodesk("bind", GPU_ADDRESS[5:12])  # "01:00": every function of the card
    drivers = _drivers()
    group = state.get("gpu_group")
    ok = done.returncode == 0 and set(drivers.values()) == {"vfio-pci"} and \
        os.path.exists(f"/dev/vfio/{group}")
    return StepOutcome(ok, f"{on_drivers(drivers)}; /dev/vfio/{group}"
                           if ok else (done.stderr.strip() or done.stdout.strip())[-300:])


@step("nested-vm", "nested VM: QEMU takes the GPU through VFIO and sees it on its bus")
def nested_vm(state: dict[str, object]) -> StepOutcome:
    with holding_in_nested_vm(_PAIR) as vm:
        pass
    return StepOutcome(vm.sees_all, f"the VM's `info pci` lists {' and '.join(vm.expected)}"
                       if vm.sees_all else vm.error or vm.info_pci[-300:])


@step("unbind", "unbind: the host gets its GPU, audio and console back")
def unbind(state: dict[str, object]) -> StepOutcome:
    done = vfiodesk("unbind", *_PAIR)
    drivers = _drivers()
    ok = done.returncode == 0 and drivers == state.get("original")
    return StepOutcome(ok, on_drivers(drivers) if ok
                       else f"exit {done.returncode}: {done.stderr.strip()[-300:]}")


@step("module-reload", f"a driver module unloaded meanwhile ({AUDIO_MODULE}, as NVIDIA's) is "
                       "loaded again at unbind")
def module_reload(state: dict[str, object]) -> StepOutcome:
    bound = vfiodesk("bind", GPU_ADDRESS[5:12])
    removed = subprocess.run(["rmmod", AUDIO_MODULE], capture_output=True, text=True, check=False)
    unloaded = not os.path.exists(f"/sys/module/{AUDIO_MODULE}")
    if bound.returncode != 0 or not unloaded:
        return StepOutcome(False, f"bind exit {bound.returncode}; rmmod: {removed.stderr.strip()}"[-300:])
    released = vfiodesk("unbind", *_PAIR)
    drivers = _drivers()
    ok = released.returncode == 0 and os.path.exists(f"/sys/module/{AUDIO_MODULE}") and \
        drivers == state.get("original")
    return StepOutcome(ok, f"{AUDIO_MODULE} unloaded while on vfio-pci; after unbind {on_drivers(drivers)}"
                       if ok else f"exit {released.returncode}: {released.stderr.strip()[-300:]}; "
                                  f"{on_drivers(drivers)}")
