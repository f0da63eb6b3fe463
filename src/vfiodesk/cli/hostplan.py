"""Showing and applying a host-configuration plan: the diff and the commands, then (--apply)
the journaled write and the commands through the runner."""

from __future__ import annotations

import difflib
import shlex

import click

from vfiodesk import paths as P
from vfiodesk.errors import VfiodeskError
from vfiodesk.hostfiles.editor import apply_plan, undo_change, with_current
from vfiodesk.plan.hostconfig.change import HostPlan, decode
from vfiodesk.runner import CommandRunner

apply_option = click.option("--apply", "apply", is_flag=True,
                            help="Write the files and run the commands (default: only show them).")


def show_plan(plan: HostPlan) -> None:
    for note in plan.notes:
        click.echo(f"note: {note}")
    for warning in plan.warnings:
        click.echo(f"warning: {warning}")
    for change in plan.changed_files:
        old = decode(change.old or b"").splitlines(keepends=True)
        new = decode(change.new).splitlines(keepends=True)
        source = f"a/{change.path}" if change.old is not None else "/dev/null"
        for line in difflib.unified_diff(old, new, source, f"b/{change.path}"):
            click.echo(line, nl=False)
            if not line.endswith("\n"):
                click.echo("\n\\ No newline at end of file")
    if plan.commands:
        click.echo("then run:")
        for argv in plan.commands:
            click.echo(f"  {shlex.join(argv)}")


def execute(host: P.HostPaths, plan: HostPlan, apply: bool) -> bool:
    """Show ``plan``; with ``apply``, write it (journaled) and run its commands. True if applied."""
    plan = with_current(host, plan)
    if plan.files and not plan.changed_files:
        plan = HostPlan(plan.title, notes=plan.notes, warnings=plan.warnings)
    show_plan(plan)
    if not plan.has_work:
        click.echo("Nothing to change: the host already has this configuration.")
        return False
    if not apply:
        click.echo("Nothing was written: run again with --apply to make these changes.")
        return False
    record = apply_plan(host, plan)
    for change in plan.changed_files:
        click.echo(f"wrote /{change.path}")
    runner = CommandRunner(host)
    for number, argv in enumerate(plan.commands):
        try:
            runner.run(argv)
        except VfiodeskError as exc:
            if record is None:
                raise
            raise _failed_command(host, plan, record.id, number, exc) from None
        if runner.will_run:
            click.echo(f"ran: {shlex.join(argv)}")
    if record is not None:
        click.echo(f"Recorded as change {record.id}; undo it with: vfiodesk host undo {record.id}")
    return True


def _failed_command(host: P.HostPaths, plan: HostPlan, change_id: str, number: int,
                    exc: VfiodeskError) -> VfiodeskError:
    """The error for a plan whose command ``number`` failed after its files were written.

    When nothing has run yet, the files are put back: left written, the same command run again
    would find nothing to change and never run what failed (update-grub, the initramfs)."""
    if number == 0:
        try:
            undo_change(host, change_id)
        except VfiodeskError as again:
            return VfiodeskError(f"{exc.message}; putting the files back failed too: {again.message}",
                                 f"vfiodesk host undo {change_id}")
        return VfiodeskError(exc.message, f"nothing was changed (change {change_id} was taken back): "
                                          "fix the cause and run the command again")
    left = " && ".join(shlex.join(argv) for argv in plan.commands[number:])
    return VfiodeskError(exc.message, f"the files were written (change {change_id}) and "
                                      f"{shlex.join(plan.commands[number - 1])} ran: fix the cause and "
                                      f"run {left}, or undo: vfiodesk host undo {change_id}")
