"""Runs INSIDE the lab guest, once per boot: `vfiodesk setup --yes` across a reboot.

argv: PHASE (before | after) and SHARED, a host directory both boots write (virtme-ng rwdir):
SHARED/state becomes /var/lib/vfiodesk (setup's state and the change journal), SHARED/default
becomes /etc/default (the GRUB file setup edits), SHARED/sbin holds an update-grub that records
its call: the lab boots its kernel directly, so the test reads the GRUB file back and boots
the second time with that command line, as GRUB would. One ``@@ {json}`` line per step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS
from vfiodesk.lab.steps.common import (
    driver_of,
    images_on_ext4,
    restart_libvirtd,
    start_libvirtd,
    vfiodesk,
    virsh,
)

NAME = "vfdsetup"
PAIR = (GPU_ADDRESS, GPU_AUDIO_ADDRESS)


def emit(step: str, **data: object) -> None:
    print("@@ " + json.dumps({"step": step, **data}), flush=True)


def mount(shared: str) -> None:
    for source, target in (("state", "/var/lib/vfiodesk"), ("default", "/etc/default"),
                           ("sbin", "/usr/local/sbin")):
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "--bind", f"{shared}/{source}", target], check=True)


def status() -> dict[str, object]:
    shown = vfiodesk("setup", "status", "--json")
    payload: dict[str, object] = json.loads(shown.stdout)
    return payload


def before(shared: str) -> None:
    ran = vfiodesk("setup", "--yes", "--name", NAME, "--gpu", "01:00", "--binding", "vfiodesk",
                   "--domain-type", "qemu", "--os", "win10", "--memory", "256M", "--network", "",
                   "--iso", f"{shared}/win10.iso", "--virtio-iso", f"{shared}/virtio-win.iso",
                   "--disk", f"path=/var/lib/libvirt/images/{NAME}.qcow2,size=64M,format=qcow2")
    emit("setup-before", rc=ran.returncode, out=ran.stdout[-3000:], err=ran.stderr[-2000:],
         groups=os.listdir("/sys/kernel/iommu_groups"), status=status())


def after() -> None:
    images_on_ext4()
    start_libvirtd()
    original = {address: driver_of(address) for address in PAIR}
    # Every answer comes from the first boot's run. The first question to this boot's libvirtd
    # makes it probe QEMU (minutes under TCG on a busy machine).
    ran = vfiodesk("setup", "--yes", timeout=1200)
    defined = virsh("dominfo", NAME)
    emit("setup-after", rc=ran.returncode, out=ran.stdout[-3000:], err=ran.stderr[-2000:],
         status=status(), defined=defined.returncode == 0,
         hook=os.path.isfile("/etc/libvirt/hooks/qemu.d/vfiodesk"))
    restart_libvirtd()
    started = vfiodesk("up", NAME, timeout=900)  # a nested VM under TCG
    time.sleep(2)
    emit("up", rc=started.returncode, err=started.stderr[-2000:],
         drivers={address: driver_of(address) for address in PAIR})
    stopped = vfiodesk("down", NAME, "--timeout", "3")
    time.sleep(1)
    emit("down", rc=stopped.returncode, err=stopped.stderr[-2000:], original=original,
         drivers={address: driver_of(address) for address in PAIR})
    undone = vfiodesk("setup", "undo")
    emit("undo", rc=undone.returncode, out=undone.stdout[-2000:], err=undone.stderr[-2000:],
         defined=virsh("dominfo", NAME).returncode == 0,
         hook=os.path.isfile("/etc/libvirt/hooks/qemu.d/vfiodesk"),
         grub=Path("/etc/default/grub").read_text())


def main() -> None:
    phase, shared = sys.argv[1:3]
    mount(shared)
    # root's PATH on Debian has /usr/local/sbin (where update-grub's stand-in is); virtme's has not.
    os.environ["PATH"] = "/usr/local/sbin:" + os.environ["PATH"]
    before(shared) if phase == "before" else after()


if __name__ == "__main__":
    main()
