"""Where `vfiodesk setup` remembers its answers and what it did, across reboots.

One JSON file under the root's /var/lib/vfiodesk, replaced atomically after every step, so a
crash or a reboot leaves the last finished step recorded and `setup undo` can take it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError
from vfiodesk.host.sysfs import read_bytes
from vfiodesk.hostfiles.atomic import write_atomic
from vfiodesk.plan.setup import Applied

STATE_FILE = "setup.json"
STATE_LIMIT = 1024 * 1024  # a few answers and steps


@dataclass
class SetupState:
    answers: dict[str, Any] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)

    def active(self) -> dict[str, Applied]:
        """The steps setup did and has not undone, by step id (the latest wins)."""
        return {record.step: record for record in self.applied if not record.undone}


def _shown(host: P.HostPaths) -> str:
    return f"/{P.VAR_LIB_VFIODESK}/{STATE_FILE}"


def read_setup_state(host: P.HostPaths) -> SetupState:
    path = host(P.VAR_LIB_VFIODESK, STATE_FILE)
    try:
        raw = json.loads(read_bytes(path, STATE_LIMIT))
        known = {f.name for f in fields(Applied)}
        applied = [Applied(**{k: v for k, v in item.items() if k in known}) for item in raw["applied"]]
        answers = raw["answers"]
        if not isinstance(answers, dict):
            raise TypeError("answers is not a table")
    except FileNotFoundError:
        return SetupState()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HostReadError(f"setup's state file {_shown(host)} is damaged ({exc})",
                            "move it away to start setup afresh (what it did stays in "
                            "`vfiodesk host history`)") from None
    return SetupState(answers, applied)


def save_setup_state(host: P.HostPaths, state: SetupState) -> None:
    data = {"answers": state.answers, "applied": [asdict(record) for record in state.applied]}
    write_atomic(host(P.VAR_LIB_VFIODESK, STATE_FILE), json.dumps(data, indent=2).encode() + b"\n",
                 _shown(host), mode=0o600)
