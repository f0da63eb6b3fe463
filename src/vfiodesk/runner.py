"""The one place external commands run: for real on the real host, printed under any other root.

Commands are argument lists, never shell strings, so user text is never interpreted.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from vfiodesk.errors import VfiodeskError
from vfiodesk.paths import HostPaths


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    ran: bool  # False when only printed (non-/ root or dry run)


@dataclass
class CommandRunner:
    """Runs commands against ``host``; under a root other than /, prints them instead."""

    host: HostPaths
    dry_run: bool = False
    out: TextIO = field(default_factory=lambda: sys.stderr)  # looked up late: tests capture it

    @property
    def will_run(self) -> bool:
        return self.host.is_real_host and not self.dry_run

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 600,
            input_text: str | None = None) -> CommandResult:
        if not self.will_run:
            print(f"would run: {shlex.join(argv)}", file=self.out)
            return CommandResult(tuple(argv), 0, "", "", ran=False)
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                  input=input_text, check=False)
        except FileNotFoundError:
            raise VfiodeskError(f"{argv[0]} is not installed",
                                f"install the package that provides {argv[0]}") from None
        except subprocess.TimeoutExpired:
            raise VfiodeskError(f"{shlex.join(argv)} did not finish in {timeout:.0f} s",
                                "run it by hand to see where it hangs") from None
        result = CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr, ran=True)
        if check and done.returncode != 0:
            last_line = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            raise VfiodeskError(f"{shlex.join(argv)} failed (exit {done.returncode}): {last_line[0]}",
                                "fix the cause above and run vfiodesk again")
        return result
