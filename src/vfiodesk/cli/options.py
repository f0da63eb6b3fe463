"""Options and helpers shared by commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vfiodesk.cli.jsonout import emit_json as emit_json  # the commands import it from here
from vfiodesk.host.roots import open_root
from vfiodesk.paths import ROOT_ENV, HostPaths

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

def _guard_libvirt(ctx: click.Context, _param: click.Parameter, root: str | None) -> str | None:
    """Under a --root other than /, libvirt needs an explicit --connect (virt.connection)."""
    from vfiodesk import virt

    foreign = root if root is not None and not HostPaths.from_env(root).is_real_host else None
    token = virt.foreign_root.set(foreign)
    ctx.call_on_close(lambda: virt.foreign_root.reset(token))
    return root


root_option = click.option(
    "--root", "root", metavar="DIR|ARCHIVE", envvar=ROOT_ENV, default=None, callback=_guard_libvirt,
    help="Act on a tree that mirrors / (or a snapshot archive) instead of this host "
         f"[env: {ROOT_ENV}]. External commands are printed, not run; libvirt is used only "
         "with an explicit --connect.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print exactly what would be written or run; change nothing.")
connect_option = click.option("--connect", "-c", "uri", metavar="URI", default=None,
                              envvar="LIBVIRT_DEFAULT_URI",
                              help="libvirt connection URI (as virsh -c), e.g. qemu+ssh://host/system.")


def host_paths(root: str | None) -> HostPaths:
    """Open ``--root`` for the running command; a snapshot is cleaned up when it ends."""
    ctx = click.get_current_context()
    stack = ExitStack()
    ctx.call_on_close(stack.close)
    return open_root(root, stack)




def console() -> Console:
    from rich.console import Console

    # Piped output (logs, bug reports) should not be cut to rich's default 80 columns.
    wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
    return Console(highlight=False, width=wide)


def write_output(path: Path, text: str, option: str = "--output") -> None:
    """Write a file the user asked for: into an existing directory only (a typo must not
    create directories), never onto a directory, atomically (hostfiles.atomic)."""
    from vfiodesk.errors import InputError
    from vfiodesk.hostfiles.atomic import write_atomic

    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the directory {parent} does not exist",
                         f"create it first (mkdir -p {parent}) or give another {option}")
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory", f"give a file name, e.g. {path / 'out.conf'}")
    write_atomic(path, text.encode(), str(path))
