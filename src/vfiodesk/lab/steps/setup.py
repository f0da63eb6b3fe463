"""Demo step: `vfiodesk setup --yes` walks the story on the lab, up to a VM waiting for Windows."""

from __future__ import annotations

import json
import os
import tempfile

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS
from vfiodesk.lab.steps.common import vfiodesk, virsh

_VM = "vfiodesk-setup"


@step("setup", "setup --yes: the guided story, checked step by step, stops where Windows is installed")
def guided_setup(state: dict[str, object]) -> StepOutcome:
    isos = tempfile.mkdtemp(prefix="vfiodesk-setup-")
    for name in ("win10.iso", "virtio-win.iso"):
        with open(os.path.join(isos, name), "w") as handle:
            handle.write("an installer would be here")
    # The lab's only GPU is its host display: naming it is the user's explicit choice.
    ran = vfiodesk("setup", "--yes", "--name", _VM, "--gpu", GPU_ADDRESS[5:12], "--domain-type", "qemu",
                   "--memory", "256M", "--network", "", "--iso", f"{isos}/win10.iso",
                   "--virtio-iso", f"{isos}/virtio-win.iso",
                   "--disk", f"path=/var/lib/libvirt/images/{_VM}.qcow2,size=64M,format=qcow2")
    shown = vfiodesk("setup", "status", "--json")
    plan = json.loads(shown.stdout) if shown.returncode == 0 else {}
    defined = virsh("dominfo", _VM).returncode == 0
    done = [s["id"] for s in plan.get("steps", []) if s["status"] == "done"]
    ok = ran.returncode == 0 and plan.get("next") == "windows" and defined
    # Take it back through the journals, as a user would who only wanted to see it.
    undone = vfiodesk("setup", "undo")
    gone = virsh("dominfo", _VM).returncode != 0
    ok = ok and undone.returncode == 0 and gone
    return StepOutcome(ok, f"done: {', '.join(done)}; next: {plan.get('next')}; undo took the VM back"
                       if ok else (ran.stdout + ran.stderr + undone.stderr).strip()[-400:])
