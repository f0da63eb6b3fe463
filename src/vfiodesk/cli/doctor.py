"""`vfiodesk doctor`: is this host ready for GPU passthrough, and what to fix."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from vfiodesk.checks.doctor import Finding, Status, is_ready, run_checks
from vfiodesk.cli.options import console, emit_json, host_paths, json_option, root_option
from vfiodesk.desktop.prime import query_prime_profile
from vfiodesk.errors import ExitStatus
from vfiodesk.host.facts import read_host_facts
from vfiodesk.runner import CommandRunner

if TYPE_CHECKING:
    from rich.console import Console

_STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


@click.command()
@json_option
@root_option
def doctor(as_json: bool, root: str | None) -> int:
    """Check every prerequisite of GPU passthrough; exit 3 when the host is not ready."""
    host = host_paths(root)
    facts = read_host_facts(host, user=os.environ.get("SUDO_USER"))
    facts.prime_profile = query_prime_profile(host, CommandRunner(host))
    findings = run_checks(facts)
    ready = is_ready(findings)
    if as_json:
        emit_json({"ready": ready, "checks": [
            {"id": f.id, "status": f.status.value, "summary": f.summary, "hint": f.hint}
            for f in findings]})
    else:
        out = print_findings(findings, "check")
        out.print("[green]Ready for GPU passthrough.[/]" if ready
                  else "[bold red]Not ready:[/] fix the failed checks above, then run doctor again.")
    return int(ExitStatus.OK if ready else ExitStatus.HOST_NOT_READY)


def print_findings(findings: Sequence[Finding], kind: str) -> Console:
    """Findings as a table (doctor's checks, vm audit's findings); the console, for what follows."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in (kind, "status", "summary", "fix"):
        table.add_column(column)
    for f in findings:
        table.add_row(f.id, f"[{_STYLE[f.status]}]{f.status.value}[/]", f.summary, f.hint)
    out = console()
    out.print(table)
    return out
