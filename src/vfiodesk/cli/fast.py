"""The command line's front door: `devices --json` (what scripts and status bars poll) runs
without importing click or rich; everything else goes to the full CLI (cli/main.py)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def _devices_json_root(argv: Sequence[str]) -> tuple[bool, str | None]:
    """(True, root) when ``argv`` is exactly ``devices --json [--root DIR]`` in any order."""
    rest = list(argv)
    if rest[:1] != ["devices"] or rest.count("--json") != 1:
        return False, None
    rest = [arg for arg in rest[1:] if arg != "--json"]
    if not rest:
        return True, None
    if len(rest) == 1 and rest[0].startswith("--root="):
        return True, rest[0].removeprefix("--root=")
    if len(rest) == 2 and rest[0] == "--root":
        return True, rest[1]
    return False, None


def run_fast(argv: Sequence[str]) -> int | None:
    """The exit status of a command run here, or None when the full CLI must run it (any other
    command, options, a snapshot archive as root, or an error to report with its hint)."""
    fast, root = _devices_json_root(argv)
    if not fast:
        return None
    from vfiodesk.cli.devices_listing import listing_json, scan_listing
    from vfiodesk.cli.jsonout import emit_json
    from vfiodesk.errors import VfiodeskError
    from vfiodesk.paths import HostPaths

    host = HostPaths.from_env(root or None)
    if not host.root.is_dir():
        return None  # an archive is extracted by the full CLI's --root handling
    try:
        payload = listing_json(scan_listing(host))
    except VfiodeskError:
        return None  # nothing was printed; the full CLI reports it the usual way
    emit_json(payload)
    return 0


def run() -> None:
    status = run_fast(sys.argv[1:])
    if status is not None:
        sys.exit(status)
    from vfiodesk.cli.main import run as run_full

    run_full()
