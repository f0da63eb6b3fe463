"""Demo step: `vfiodesk setup --yes` walks the story on the lab, up to a VM waiting for Windows.

It makes the VM and installs the hook that the vm_hook steps then start and stop, so the demo
starts a VM once.
"""

from __future__ import annotations

import json
import os
import tempfile

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, USB_ADDRESS
from vfiodesk.lab.steps.common import images_on_ext4, restart_libvirtd, start_libvirtd, vfiodesk, virsh

VM = "vfiodesk-demo"
HOOK = "/etc/libvirt/hooks/qemu.d/vfiodesk"


def fake_isos() -> tuple[str, str]:
    """Stand-ins for the installer and virtio-win ISOs, where QEMU's user can read them."""
    directory = tempfile.mkdtemp(prefix="vfiodesk-setup-")
    os.chmod(directory, 0o755)
    paths = (f"{directory}/win10.iso", f"{directory}/virtio-win.iso")
    for path in paths:
        with open(path, "w") as handle:
            handle.write("an installer would be here")
        os.chmod(path, 0o644)
    return paths


@step("setup", "setup --yes: the guided story, checked step by step, stops where Windows is installed")
def guided_setup(state: dict[str, object]) -> StepOutcome:
    if not start_libvirtd():  # setup asks libvirt whether the VM exists
        return StepOutcome(False, "libvirtd did not start")
    iso, virtio = fake_isos()
    images_on_ext4()
    # The lab's only GPU is its host display: naming it is the user's explicit choice.
    ran = vfiodesk("setup", "--yes", "--name", VM, "--gpu", GPU_ADDRESS[5:12], "--usb-controller",
                   USB_ADDRESS, "--binding", "vfiodesk", "--os", "win10", "--domain-type", "qemu",
                   "--memory", "256M", "--network", "", "--iso", iso, "--virtio-iso", virtio,
                   "--disk", f"path=/var/lib/libvirt/images/{VM}.qcow2,size=64M,format=qcow2",
                   timeout=1200)  # it asks libvirtd first, which probes QEMU (minutes under TCG)
    # No systemd in the lab to restart it (setup says so): libvirt sees a new hook only at start.
    restarted = restart_libvirtd()
    shown = vfiodesk("setup", "status", "--json")
    plan = json.loads(shown.stdout) if shown.returncode == 0 else {}
    statuses = {s["id"]: s["status"] for s in plan.get("steps", [])}
    defined = virsh("dominfo", VM).returncode == 0
    ok = (ran.returncode == 0 and restarted and plan.get("next") == "windows" and defined
          and os.path.isfile(HOOK) and all(statuses.get(s) == "done" for s in ("reboot", "gpu", "vm")))
    if ok:
        state["setup_vm"] = VM
    done = ", ".join(name for name, status in statuses.items() if status == "done")
    return StepOutcome(ok, f"done: {done}; next: {plan.get('next')}; {VM} defined, hook installed"
                       if ok else (ran.stdout + ran.stderr).strip()[-400:])
