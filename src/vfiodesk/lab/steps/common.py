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
