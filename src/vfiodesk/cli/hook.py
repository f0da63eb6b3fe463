"""`vfiodesk hook install|uninstall|status`: the libvirt qemu hook in /etc/libvirt/hooks/qemu.d."""

from __future__ import annotations

import os
from pathlib import Path

import click

from vfiodesk import paths as P
from vfiodesk.cli.options import dry_run_option, host_paths, root_option
from vfiodesk.errors import VfiodeskError
from vfiodesk.hook.script import CHAINED_NAME, hook_script
from vfiodesk.runner import CommandRunner

HOOK_NAME = "vfiodesk"


def _daemon(host: P.HostPaths) -> str:
    """virtqemud on hosts with libvirt's modular daemons, libvirtd otherwise."""
    modular = any(os.path.exists(host(f"run/libvirt/{sock}")) for sock in ("virtqemud-sock",))
    return "virtqemud" if modular else "libvirtd"


@click.group()
def hook() -> None:
    """Install the libvirt hook that hands devices to VMs vfiodesk manages."""


def _targets(host: P.HostPaths) -> tuple[Path, Path, Path]:
    """Our qemu.d script, the legacy hooks/qemu, and where a chained user script goes."""
    hooks = host(P.ETC_LIBVIRT_HOOKS)
    return hooks / "qemu.d" / HOOK_NAME, hooks / "qemu", hooks / CHAINED_NAME


@hook.command()
@click.option("--restart", is_flag=True, help="Restart the libvirt daemon so it sees the new hook.")
@click.option("--chain", is_flag=True,
              help="libvirt older than 6.5 (no qemu.d): become hooks/qemu, running the user's own "
                   "hooks/qemu first.")
@dry_run_option
@root_option
def install(restart: bool, chain: bool, dry_run: bool, root: str | None) -> None:
    """Install the hook (a user's own hooks/qemu is left alone: qemu.d runs beside it)."""
    host = host_paths(root)
    target, legacy, chained = _targets(host)
    text = hook_script()
    if chain:
        user_hook = legacy.exists() and "vfiodesk hook install" not in legacy.read_text(errors="replace")
        if user_hook and not dry_run:
            os.replace(legacy, chained)  # the user's script, byte for byte, mode kept
        target = legacy
        runs_first = user_hook or chained.exists()
        text = hook_script(chained=f"/{chained.relative_to(host.root)}" if runs_first else None)
    if dry_run:
        click.echo(f"would write {target} (mode 0755):\n{text}")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{HOOK_NAME}.tmp")
    temporary.write_text(text)
    temporary.chmod(0o755)
    os.replace(temporary, target)
    daemon = _daemon(host)
    click.echo(f"installed {target}")
    # libvirt looks for hook scripts when the daemon starts (libvirt.org/hooks.html).
    if restart:
        CommandRunner(host).run(["systemctl", "restart", daemon])
    else:
        click.echo(f"restart the libvirt daemon so it notices the hook: systemctl restart {daemon} "
                   "(or run this again with --restart)")


@hook.command()
@dry_run_option
@root_option
def uninstall(dry_run: bool, root: str | None) -> None:
    """Remove vfiodesk's hook; a chained user hook goes back to hooks/qemu."""
    host = host_paths(root)
    target, legacy, chained = _targets(host)
    removed = False
    for path in (target, legacy):
        if path.exists() and "vfiodesk hook install" in path.read_text(errors="replace"):
            click.echo(f"{'would remove' if dry_run else 'removed'} {path}")
            if not dry_run:
                path.unlink()
            removed = True
    if chained.exists():
        click.echo(f"{'would put' if dry_run else 'put'} {chained} back as {legacy}")
        if not dry_run:
            os.replace(chained, legacy)
    if not removed:
        click.echo("the hook is not installed")


@hook.command()
@root_option
def status(root: str | None) -> None:
    """Is the hook installed, current, and runnable?"""
    host = host_paths(root)
    target = host(P.ETC_LIBVIRT_HOOKS, "qemu.d", HOOK_NAME)
    if not target.exists():
        raise VfiodeskError("the hook is not installed", "vfiodesk hook install")
    current = target.read_text() == hook_script()
    interpreter = target.read_text().splitlines()[0][2:].split()[0]
    click.echo(f"installed: {target}{'' if current else ' (from another vfiodesk installation)'}")
    click.echo(f"interpreter: {interpreter}{'' if os.path.exists(interpreter) else ' (MISSING)'}")
    click.echo(f"executable: {'yes' if os.access(target, os.X_OK) else 'NO'}")
    user_hook = host(P.ETC_LIBVIRT_HOOKS, "qemu")
    if user_hook.exists():
        click.echo(f"also present, left alone: {user_hook}")
    click.echo(f"daemon: {_daemon(host)}")
