"""`vfiodesk lab demo`: the seed's story told end to end inside the lab, each step verified.

The host boots the lab once and runs ``python -m vfiodesk.lab.demo --inside`` there; each step
prints one ``@@ {"step", "ok", "detail"}`` line that the host turns into a summary table.
Steps live in ``vfiodesk.lab.steps`` modules and register themselves with ``@step``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULT_PREFIX = "@@ "
# The GPU's driver module stays unloaded at boot (udev honours modprobe.blacklist; an explicit
# modprobe does not), so efifb keeps the GPU's BAR until a step loads the driver.
DEMO_CMDLINE = "modprobe.blacklist=bochs"


@dataclass(frozen=True)
class StepOutcome:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[dict[str, object]], StepOutcome]  # gets a shared state dict


STEPS: list[Step] = []
# Story order; a feature adds its module (vfiodesk/lab/steps/<name>.py) here.
STEP_MODULES = ("inventory", "framebuffer", "binding", "setup", "vm_hook", "single_gpu")


def step(name: str, title: str) -> Callable[[Callable[[dict[str, object]], StepOutcome]],
                                            Callable[[dict[str, object]], StepOutcome]]:
    """Register a demo step; steps run in import order."""
    def register(function: Callable[[dict[str, object]], StepOutcome]
                 ) -> Callable[[dict[str, object]], StepOutcome]:
        STEPS.append(Step(name, title, function))
        return function
    return register


def load_steps(modules: Sequence[str] = STEP_MODULES) -> list[Step]:
    for name in modules:
        importlib.import_module(f"vfiodesk.lab.steps.{name}")

    return STEPS


def in_the_lab(cmdline: Path = Path("/proc/cmdline")) -> bool:
    """virtme-ng boots the lab with virtme_* kernel parameters; a real host has none."""
    return any(word.startswith("virtme_") for word in cmdline.read_text().split())


def run_inside(modules: Sequence[str] = STEP_MODULES) -> int:
    """Run every step (of ``modules``) in the guest; a failed step does not stop the story
    (later ones say why)."""
    if not in_the_lab():
        # The steps bind the lab's 01:00 card: on a real host that address is real hardware.
        print("vfiodesk.lab.demo --inside runs only inside the lab: use `vfiodesk lab demo`",
              file=sys.stderr)
        return 2
    state: dict[str, object] = {}
    failed = 0
    for item in load_steps(modules):
        print(f"--- {item.title}", flush=True)
        began = time.monotonic()
        try:
            outcome = item.run(state)
        except Exception as exc:  # a demo step's crash is a failed step, reported with its reason
            outcome = StepOutcome(False, f"{type(exc).__name__}: {exc}")
        failed += not outcome.ok
        record = {"step": item.name, "title": item.title, "ok": outcome.ok, "detail": outcome.detail,
                  "seconds": round(time.monotonic() - began, 1)}
        print(RESULT_PREFIX + json.dumps(record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__" and sys.argv[1:] == ["--inside"]:
    # Run the registry of the importable module, not of this __main__ copy the steps never see.
    from vfiodesk.lab.demo import run_inside as run_registered

    sys.exit(run_registered())
