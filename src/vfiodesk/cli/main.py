"""Entry point: the command table, global options and error reporting."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from vfiodesk.errors import ExitStatus, VfiodeskError

# name -> "module:attribute"; modules are imported only when their command runs.
COMMANDS: dict[str, str] = {
    "bind": "vfiodesk.cli.bind:bind",
    "cpus": "vfiodesk.cli.cpus:cpus",
    "desktop": "vfiodesk.cli.desktop:desktop",
    "devices": "vfiodesk.cli.devices:devices",
    "doctor": "vfiodesk.cli.doctor:doctor",
    "down": "vfiodesk.cli.desktop:down",
    "host": "vfiodesk.cli.host:host",
    "hook": "vfiodesk.cli.hook:hook",
    "lab": "vfiodesk.cli.lab:lab",
    "restore": "vfiodesk.cli.bind:restore",
    "setup": "vfiodesk.cli.setup:setup",
    "snapshot": "vfiodesk.cli.snapshot:snapshot",
    "unbind": "vfiodesk.cli.bind:unbind",
    "up": "vfiodesk.cli.desktop:up",
    "vm": "vfiodesk.cli.vm:vm",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="vfiodesk")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """vfiodesk: a GPU-passthrough virtual desktop, checked, planned, applied and undone."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def run(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its status; errors become one message plus a hint."""
    sys.exit(main(argv))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result: Any = cli.main(args=args, prog_name="vfiodesk", standalone_mode=False)
    except VfiodeskError as exc:
        if debug:
            raise
        click.echo(f"vfiodesk: error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return int(exc.exit_status)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"vfiodesk: error: {exc.format_message()}", err=True)
        click.echo(f"hint: {_usage_hint(exc)}", err=True)
        return int(ExitStatus.USAGE)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("vfiodesk: interrupted", err=True)
        return int(ExitStatus.INTERRUPTED)
    except Exception as exc:  # a bug: one line and a way to report it, the traceback under --debug
        if debug:
            raise
        click.echo(f"vfiodesk: internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("hint: nothing more was done; run again with --debug and report the traceback",
                   err=True)
        return int(ExitStatus.ERROR)
    return int(result) if isinstance(result, int) else int(ExitStatus.OK)


def _usage_hint(exc: click.ClickException) -> str:
    """What to do about a usage error: the command's usage line and where its help is."""
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return "run `vfiodesk --help` for the commands and their options"
    usage = ctx.get_usage().removeprefix("Usage: ").strip()
    return f"usage: {' '.join(usage.split())}; `{ctx.command_path} --help` explains every option"
