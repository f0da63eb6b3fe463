"""Helpers for demo steps: run vfiodesk as a user would, read sysfs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def vfiodesk(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the vfiodesk CLI in the guest, the way a user types it."""
    return subprocess.run([sys.executable, "-m", "vfiodesk", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def vfiodesk_json(*args: str) -> Any:
    return json.loads(vfiodesk(*args, "--json").stdout)


def driver_of(address: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/driver"))
    except OSError:
        return None


VIRSH = ("virsh", "-c", "qemu:///system")


def start_libvirtd() -> bool:
    """virtlogd + libvirtd in the guest (no systemd there); True once virsh answers."""
    import time

    for directory in ("/var/log/libvirt/qemu", "/var/run/libvirt", "/var/lib/libvirt/qemu/nvram"):
        os.makedirs(directory, exist_ok=True)  # the guest's /var starts empty
    subprocess.run(["modprobe", "vfio-pci"], check=False)
    subprocess.run(["virtlogd", "-d"], capture_output=True, check=False)
    subprocess.run(["libvirtd", "-d"], capture_output=True, check=False)
    for _ in range(100):
        if subprocess.run([*VIRSH, "version"], capture_output=True, check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRSH, *args], capture_output=True, text=True, timeout=300, check=False)
