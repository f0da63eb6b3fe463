"""nvidia-prime's prime-select (Ubuntu and its derivatives): which GPU the host's desktop uses.

The seed's launcher checks it: in the ``nvidia`` profile the desktop renders on the NVIDIA card
(the X server holds it), so the card cannot go to the VM; ``on-demand`` and ``intel``
(``integrated`` in newer releases) leave it free.
"""

from __future__ import annotations

from vfiodesk.host.system import find_program
from vfiodesk.paths import HostPaths
from vfiodesk.runner import CommandRunner

PRIME_SELECT = "prime-select"


def query_prime_profile(host: HostPaths, runner: CommandRunner) -> str | None:
    """What ``prime-select query`` answers; "unknown" when it cannot be asked (a tree, where
    commands only print); None where nvidia-prime is not installed."""
    if find_program(host, PRIME_SELECT) is None:
        return None
    if not runner.will_run:
        return "unknown"
    answer = runner.run([PRIME_SELECT, "query"], check=False, timeout=30).stdout.split()
    return answer[-1] if answer else "unknown"
