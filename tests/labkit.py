"""Running test scenarios inside the lab's throwaway kernel.

A boot costs 20-40 s, so a scenario batches many checks into one boot: the guest script
prints result lines ``@@ {json}`` that the test reads back with ``results()``.
At most two lab machines run at once on this machine (lock slots), whoever starts them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vfiodesk.lab.boot import LabResult, LabSpec, run_in_lab

RESULT_PREFIX = "@@ "
_SLOTS = int(os.environ.get("VFIODESK_LAB_SLOTS", "2"))


@contextlib.contextmanager
def lab_slot() -> Iterator[None]:
    while True:
        for slot in range(_SLOTS):
            handle = open(f"/tmp/vfiodesk-lab-slot-{slot}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield
            finally:
                handle.close()
            return
        time.sleep(1)


def run_lab(command: Sequence[str] | str, spec: LabSpec | None = None,
            timeout: float = 900) -> LabResult:
    """Boot the lab (default layout unless ``spec`` says otherwise) and run ``command``."""
    with lab_slot():
        return run_in_lab(spec or LabSpec(), command, timeout=timeout)


def results(result: LabResult) -> list[Any]:
    """The ``@@ {json}`` lines a scenario printed, in order."""
    return [json.loads(line[len(RESULT_PREFIX):]) for line in result.output.splitlines()
            if line.startswith(RESULT_PREFIX)]


def results_by_key(result: LabResult, key: str = "step") -> dict[str, Any]:
    return {item[key]: item for item in results(result)}


SCENARIOS = Path(__file__).parent / "lab_scenarios"


def run_scenario(name: str, last_step: str, timeout: float = 2400) -> dict[str, Any]:
    """Run tests/lab_scenarios/NAME.py in the lab; its results by step, all of them or a failure
    showing the guest's output."""
    result = run_lab([sys.executable, str(SCENARIOS / f"{name}.py")], timeout=timeout)
    found = results_by_key(result)
    assert last_step in found, result.output[-4000:]
    return found


def lab_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`vfiodesk lab ARGS`; past ``timeout`` it gets SIGTERM (which stops its QEMU), not the
    SIGKILL of subprocess.run's timeout, which would orphan the QEMU it started."""
    argv = [sys.executable, "-m", "vfiodesk", "lab", *args]
    with lab_slot(), subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            stdout, stderr = process.communicate(timeout=60)
            raise AssertionError(f"lab {' '.join(args)} ran over {timeout:.0f} s:\n"
                                 + stdout[-3000:]) from None
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
