"""Switching a monitor's input over DDC/CI with ddcutil (VCP feature 0x60, input source).

The seed's author switched his two monitors by their buttons and wished for a hotkey; this is
that hotkey's command. Inputs per monitor come from a small TOML file::

    [monitor.1]            # ddcutil's display number
    host = 0x0f            # DisplayPort-1
    vm = 0x11              # HDMI-1
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vfiodesk.errors import InputError, VfiodeskError
from vfiodesk.host.userfiles import load_toml
from vfiodesk.runner import CommandRunner

INPUT_SOURCE = "60"


@dataclass(frozen=True)
class MonitorInputs:
    display: int
    host: int
    vm: int


def load_monitors(path: Path) -> dict[int, MonitorInputs]:
    if not os.path.lexists(path):
        raise InputError(f"monitor config {path} does not exist",
                         "write it: [monitor.1] host = 0x0f  vm = 0x11 (see README)")
    data = load_toml(path, "monitor config")
    monitors = {}
    tables = data.get("monitor", {})
    for key, table in tables.items() if isinstance(tables, dict) else ():
        if not key.isdecimal() or len(key) > 4 or not isinstance(table, dict) or \
                set(table) != {"host", "vm"} or \
                not all(isinstance(v, int) and 0 < v < 256 for v in table.values()):
            raise InputError(f"[monitor.{key}] must hold host = <input> and vm = <input> (0x01-0xff)",
                             "e.g. [monitor.1] host = 0x0f  vm = 0x11")
        monitors[int(key)] = MonitorInputs(int(key), table["host"], table["vm"])
    if not monitors or set(data) != {"monitor"}:
        raise InputError(f"monitor config {path} needs [monitor.N] tables and nothing else",
                         "e.g. [monitor.1] host = 0x0f  vm = 0x11")
    return monitors


def listed_inputs(capabilities: str) -> set[int]:
    """Input values ddcutil's capabilities list for feature 60 ("Values: 0f 11 12" or one per line)."""
    match = re.search(r"Feature: 60.*?Values:(.*?)(?:\n\s*Feature:|\Z)", capabilities, re.S)
    if match is None:
        return set()
    return {int(value, 16) for value in re.findall(r"\b([0-9a-fA-F]{2})\b(?::|\s|$)", match[1])}


def switch_input(runner: CommandRunner, monitor: MonitorInputs, target: str) -> int:
    """Switch ``monitor`` to its host or VM input; checks the monitor answers and lists it."""
    value = monitor.host if target == "host" else monitor.vm
    display = ["--display", str(monitor.display)]
    try:
        capabilities = runner.run(["ddcutil", *display, "capabilities"], check=False)
    except VfiodeskError as exc:
        raise VfiodeskError(exc.message, "install ddcutil (apt-get install ddcutil) and load i2c-dev "
                                         "(modprobe i2c-dev)") from None
    if not runner.will_run:
        runner.run(["ddcutil", *display, "setvcp", INPUT_SOURCE, f"0x{value:02x}"])
        return value
    if capabilities.returncode != 0:
        reason = (capabilities.stderr.strip() or capabilities.stdout.strip()).splitlines()[-1:] or [""]
        raise VfiodeskError(f"monitor {monitor.display} does not answer DDC/CI: {reason[0]}",
                            "enable DDC/CI in the monitor's menu; modprobe i2c-dev; ddcutil detect")
    inputs = listed_inputs(capabilities.stdout)
    if value not in inputs:
        listed = ", ".join(f"0x{v:02x}" for v in sorted(inputs)) or "none"
        raise InputError(f"monitor {monitor.display} does not list input 0x{value:02x} (it lists {listed})",
                         "fix the monitor config with one of the listed values")
    runner.run(["ddcutil", *display, "setvcp", INPUT_SOURCE, f"0x{value:02x}"])
    return value
