"""`vfiodesk snapshot`: capture this host for a bug report or an offline replay."""

from __future__ import annotations

from pathlib import Path

import click

from vfiodesk.cli.options import host_paths, root_option
from vfiodesk.snapshot import write_snapshot


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@root_option
def snapshot(out: Path, root: str | None) -> None:
    """Write what vfiodesk reads of this host to OUT.tar.gz (use it later with --root OUT.tar.gz)."""
    entries = write_snapshot(host_paths(root), out)
    click.echo(f"wrote {out} ({entries} entries); replay it with: vfiodesk devices --root {out}")
