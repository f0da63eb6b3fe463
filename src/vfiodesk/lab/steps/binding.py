"""Demo steps: hand the GPU pair to vfio-pci, let a nested VM use it, give it back."""

from __future__ import annotations

import os
import subprocess

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS
from vfiodesk.lab.steps.common import driver_of, vfiodesk

_PAIR = (GPU_ADDRESS, GPU_AUDIO_ADDRESS)


@step("bind", "bind: the GPU and its audio move to vfio-pci (console detached first)")
def bind(state: dict[str, object]) -> StepOutcome:
    state["original"] = {address: driver_of(address) for address in _PAIR}
    done = vfiodesk("bind", GPU_ADDRESS[5:12])  # "01:00": every function of the card
    drivers = {address: driver_of(address) for address in _PAIR}
    group = state.get("gpu_group")
    ok = done.returncode == 0 and set(drivers.values()) == {"vfio-pci"} and \
        os.path.exists(f"/dev/vfio/{group}")
    return StepOutcome(ok, f"{', '.join(f'{a} on {d}' for a, d in drivers.items())}; /dev/vfio/{group}"
                           if ok else (done.stderr.strip() or done.stdout.strip())[-300:])


@step("nested-vm", "nested VM: QEMU takes the GPU through VFIO and sees it on its bus")
def nested_vm(state: dict[str, object]) -> StepOutcome:
    monitor = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-nodefaults", "-display", "none", "-S",
         "-monitor", "stdio", *(arg for a in _PAIR for arg in ("-device", f"vfio-pci,host={a}"))],
        input="info pci\nquit\n", capture_output=True, text=True, timeout=120, check=False)
    ok = "1234:1111" in monitor.stdout and "8086:293e" in monitor.stdout
    return StepOutcome(ok, "the VM's `info pci` lists 1234:1111 (VGA) and 8086:293e (HDA)" if ok
                       else monitor.stderr.strip()[-300:])


@step("unbind", "unbind: the host gets its GPU, audio and console back")
def unbind(state: dict[str, object]) -> StepOutcome:
    done = vfiodesk("unbind", *_PAIR)
    drivers = {address: driver_of(address) for address in _PAIR}
    ok = done.returncode == 0 and drivers == state.get("original")
    return StepOutcome(ok, ", ".join(f"{a} on {d}" for a, d in drivers.items()))
