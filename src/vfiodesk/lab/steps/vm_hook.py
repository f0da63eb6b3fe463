"""Demo steps: the VM made by vm create, and the hook handing it the GPU while it runs."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from vfiodesk.lab.demo import StepOutcome, step
from vfiodesk.lab.layout import GPU_ADDRESS, GPU_AUDIO_ADDRESS, USB_ADDRESS
from vfiodesk.lab.steps.common import driver_of, start_libvirtd, vfiodesk, virsh

_DEVICES = (GPU_ADDRESS, GPU_AUDIO_ADDRESS, USB_ADDRESS)
_VM = "vfiodesk-demo"


@step("vm-create", "vm create: a UEFI domain with the GPU's group and the USB controller")
def vm_create(state: dict[str, object]) -> StepOutcome:
    state["drivers"] = {address: driver_of(address) for address in _DEVICES}
    if state.get("setup_vm") == _VM:  # setup --yes ran vm create and installed the hook
        passed = passed_devices(virsh("dumpxml", "--inactive", _VM).stdout)
        return StepOutcome(passed == set(_DEVICES), f"made by setup --yes with {', '.join(sorted(passed))}")
    installed = vfiodesk("hook", "install")
    if installed.returncode != 0 or not start_libvirtd():
        return StepOutcome(False, (installed.stderr or "libvirtd did not start")[-300:])
    # The lab's only GPU is the host's own display: vm create refuses it without --force.
    made = vfiodesk("vm", "create", _VM, "--domain-type", "qemu", "--memory", "256M", "--network", "",
                    "--binding", "vfiodesk", "--gpu", GPU_ADDRESS[5:12], "--usb-controller", USB_ADDRESS,
                    "--force", "--os", "win10")  # the hook's story needs no TPM or Secure Boot
    return StepOutcome(made.returncode == 0, (made.stdout or made.stderr).strip()[-300:])


def passed_devices(xml: str) -> set[str]:
    """The PCI addresses of a domain's <hostdev> elements."""
    found = set()
    for source in ET.fromstring(xml).iterfind("devices/hostdev/source/address"):
        numbers = [int(source.get(key, "0"), 0) for key in ("domain", "bus", "slot", "function")]
        found.add("{:04x}:{:02x}:{:02x}.{:x}".format(*numbers))
    return found


@step("vm-start", "vfiodesk up: the hook binds the devices and the running VM holds them")
def vm_start(state: dict[str, object]) -> StepOutcome:
    started = vfiodesk("up", _VM)
    time.sleep(2)
    qtree = virsh("qemu-monitor-command", _VM, "--hmp", "info qtree").stdout
    drivers = {address: driver_of(address) for address in _DEVICES}
    held = [address for address in _DEVICES if f'host = "{address}"' in qtree]
    ok = started.returncode == 0 and set(drivers.values()) == {"vfio-pci"} and len(held) == 3
    return StepOutcome(ok, f"running; {', '.join(held)} on vfio-pci inside QEMU" if ok
                       else (started.stderr.strip() or str(drivers))[-300:])


@step("vm-stop", "vfiodesk down: the VM stops and the hook gives every device back")
def vm_stop(state: dict[str, object]) -> StepOutcome:
    # No OS answers the ACPI request in the lab's VM, so down forces it off after 3 s.
    stopped = vfiodesk("down", _VM, "--timeout", "3")
    time.sleep(1)
    drivers = {address: driver_of(address) for address in _DEVICES}
    ok = stopped.returncode == 0 and drivers == state.get("drivers")
    return StepOutcome(ok, ", ".join(f"{a} on {d}" for a, d in drivers.items()))
