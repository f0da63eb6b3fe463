"""Runs INSIDE the lab guest (as root, real kernel): the binding engine's proofs.

Prints one ``@@ {json}`` line per step with what it observed; tests/test_lab_bind.py judges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

GPU, AUDIO, USB = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"
STRANGER = "0000:04:01.0"


def vfiodesk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfiodesk", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)


def driver(address: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/driver"))
    except OSError:
        return None


def group(address: str) -> str:
    return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/iommu_group"))


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def consoles() -> dict[str, str]:
    base = "/sys/class/vtconsole"
    return {read_text(f"{base}/{name}/name"): read_text(f"{base}/{name}/bind")
            for name in sorted(os.listdir(base))}


def emit(step: str, **data: object) -> None:
    print("@@ " + json.dumps({"step": step, **data}), flush=True)


def main() -> None:
    emit("before", gpu=driver(GPU), audio=driver(AUDIO), consoles=consoles())

    bound = vfiodesk("bind", "01:00")
    emit("bind", rc=bound.returncode, out=bound.stdout[-800:] + bound.stderr[-800:], gpu=driver(GPU),
         audio=driver(AUDIO), dev_vfio=os.path.exists(f"/dev/vfio/{group(GPU)}"), consoles=consoles())

    again = vfiodesk("bind", "01:00.0")
    emit("bind-again", rc=again.returncode, out=again.stdout[-400:], gpu=driver(GPU))

    nested = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-nodefaults", "-display", "none", "-S",
         "-monitor", "stdio", "-device", f"vfio-pci,host={GPU}", "-device", f"vfio-pci,host={AUDIO}"],
        input="info pci\nquit\n", capture_output=True, text=True, timeout=120, check=False)
    emit("nested-qemu", rc=nested.returncode, sees_gpu="1234:1111" in nested.stdout,
         sees_audio="8086:293e" in nested.stdout, err=nested.stderr[-400:])

    released = vfiodesk("unbind", "01:00")
    time.sleep(1)
    emit("unbind", rc=released.returncode, out=released.stdout[-400:] + released.stderr[-400:],
         gpu=driver(GPU), audio=driver(AUDIO), consoles=consoles(),
         journal=os.listdir("/run/vfiodesk/devices") if os.path.isdir("/run/vfiodesk/devices") else [])

    before = driver(STRANGER)
    refused = vfiodesk("bind", STRANGER)
    emit("stranger", rc=refused.returncode, err=refused.stderr, before=before, after=driver(STRANGER),
         override=read_text(f"/sys/bus/pci/devices/{STRANGER}/driver_override"))

    faulted = vfiodesk("bind", "01:00", env={"VFIODESK_TEST_FAULT": f"fail:{AUDIO}"})
    time.sleep(1)
    emit("fault", rc=faulted.returncode, err=faulted.stderr[-400:], gpu=driver(GPU), audio=driver(AUDIO),
         consoles=consoles())

    killed = vfiodesk("bind", "01:00", env={"VFIODESK_TEST_FAULT": f"kill:{AUDIO}"})
    mid = {"gpu": driver(GPU), "audio": driver(AUDIO)}
    restored = vfiodesk("restore", "--all")
    time.sleep(1)
    emit("crash-restore", rc=killed.returncode, mid=mid, restore_rc=restored.returncode,
         out=restored.stdout[-400:] + restored.stderr[-400:], gpu=driver(GPU), audio=driver(AUDIO),
         consoles=consoles())

    nothing = vfiodesk("unbind", USB)
    emit("release-without-bind", rc=nothing.returncode, out=nothing.stdout, usb=driver(USB))

    vfiodesk("bind", USB)
    twice = vfiodesk("bind", USB)
    emit("already-bound", rc=twice.returncode, out=twice.stdout[-300:], usb=driver(USB))
    vfiodesk("unbind", USB)
    emit("usb-back", usb=driver(USB))

    with open(f"/sys/bus/pci/devices/{USB}/remove", "w") as handle:
        handle.write("1\n")
    gone = vfiodesk("bind", USB)
    emit("device-gone", rc=gone.returncode, err=gone.stderr)


if __name__ == "__main__":
    main()
