"""`vfiodesk hook install|uninstall|status`: the libvirt qemu hook in /etc/libvirt/hooks/qemu.d."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from vfiodesk import paths as P
from vfiodesk.cli.options import dry_run_option, host_paths, root_option
from vfiodesk.errors import RefusedError, VfiodeskError
from vfiodesk.hook.script import CHAINED_NAME, INSTALLED_BY, hook_script, script_header
from vfiodesk.hostfiles.atomic import read_journal_file, write_atomic
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
    """Install the hook (a user's own hooks/qemu is left alone: qemu.d runs beside it).

    libvirtd runs the hook as root, so it runs only root-owned code: the packages it imports
    are copied, root-owned, to /usr/local/lib/vfiodesk/lib-DIGEST, and the interpreter must be
    root-owned and writable by root alone (refused otherwise)."""
    from vfiodesk.hook import install as code

    host = host_paths(root)
    target, legacy, chained = _targets(host)
    python = code.interpreter()
    code.refuse_unsafe(code.unsafe_owners(python), f"the interpreter {python}")
    sources = code.source_packages(code.probe(sys.executable, [], isolated=False))
    lib_name = f"lib-{code.digest(sources)}"
    lib_shown = f"/{code.LIB_DIR}/{lib_name}"
    user_hook = False
    if chain:
        user_hook = legacy.exists() and INSTALLED_BY not in _hook_text(legacy)
        if user_hook and (chained.exists() or chained.is_symlink()):
            raise RefusedError(f"{legacy} is not vfiodesk's hook and {chained} holds a script already: "
                               "moving one would lose the other",
                               f"keep the one you want as {legacy}, remove {chained}, and install again")
        target = legacy
    runs_first = chain and (user_hook or chained.exists())
    text = hook_script(python, lib_shown,
                       chained=f"/{chained.relative_to(host.root)}" if runs_first else None)
    if dry_run:
        click.echo(f"would copy {', '.join(map(str, sources))} to {lib_shown} (root-owned, 0755/0644)")
        if user_hook:
            click.echo(f"would move {legacy} to {chained}")
        click.echo(f"would write {target} (mode 0755):\n{text}")
        _remove_other_mode(host, chain, dry_run=True)
        return
    if os.geteuid() != 0:
        raise RefusedError("hook install must run as root (the hook's code is made root-owned)",
                           "sudo vfiodesk hook install")
    lib = code.install_lib(host, sources, lib_name)
    code.refuse_unsafe(code.check_runnable(python, lib), f"the hook's code in {lib}")
    if user_hook:
        os.replace(legacy, chained)  # the user's script, byte for byte, mode kept
    write_atomic(target, text.encode(), str(target), mode=0o755)
    _remove_other_mode(host, chain, dry_run=False)
    code.remove_other_libs(host, lib_name)
    daemon = _daemon(host)
    click.echo(f"installed {target}, running {python} -I -S with code from {lib_shown}")
    # libvirt looks for hook scripts when the daemon starts (libvirt.org/hooks.html).
    if restart:
        CommandRunner(host).run(["systemctl", "restart", daemon])
    else:
        click.echo(f"restart the libvirt daemon so it notices the hook: systemctl restart {daemon} "
                   "(or run this again with --restart)")


def _remove_other_mode(host: P.HostPaths, chain: bool, *, dry_run: bool) -> None:
    """Take away vfiodesk's hook installed the other way (with or without --chain): libvirt 6.5
    and later run hooks/qemu and every qemu.d script, so both would act at each start."""
    target, legacy, _ = _targets(host)
    if chain:
        _remove_ours(target, dry_run)
    elif _remove_ours(legacy, dry_run):
        _put_chained_back(host, dry_run, freed=True)


def _remove_ours(path: Path, dry_run: bool) -> bool:
    """Remove ``path`` if it is vfiodesk's hook; whether it was."""
    if not path.exists() or INSTALLED_BY not in _hook_text(path):
        return False
    click.echo(f"{'would remove' if dry_run else 'removed'} {path}")
    if not dry_run:
        path.unlink()
    return True


def _put_chained_back(host: P.HostPaths, dry_run: bool, *, freed: bool) -> None:
    """The user's chained script back as hooks/qemu, unless hooks/qemu (not ``freed``) holds
    another script now: that one is never overwritten."""
    _, legacy, chained = _targets(host)
    if chained.exists() and not freed and (legacy.exists() or legacy.is_symlink()):
        click.echo(f"left {chained} alone: {legacy} is not vfiodesk's; put back by hand what you want")
    elif chained.exists():
        click.echo(f"{'would put' if dry_run else 'put'} {chained} back as {legacy}")
        if not dry_run:
            os.replace(chained, legacy)


def _hook_text(path: Path) -> str:
    """A hook script's text; a clear error for one that is empty, binary or not a file."""
    try:
        data = read_journal_file(path, limit=1024 * 1024)
    except ValueError as exc:
        raise VfiodeskError(f"{path} is unusable ({exc})", "vfiodesk hook install") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return ""  # binary: not ours


@hook.command()
@dry_run_option
@root_option
def uninstall(dry_run: bool, root: str | None) -> None:
    """Remove vfiodesk's hook; a chained user hook goes back to hooks/qemu."""
    host = host_paths(root)
    target, legacy, _ = _targets(host)
    removed = [_remove_ours(path, dry_run) for path in (target, legacy)]
    _put_chained_back(host, dry_run, freed=removed[1])
    if not any(removed):
        click.echo("the hook is not installed")


@hook.command()
@root_option
def status(root: str | None) -> None:
    """Is the hook installed, current, and running only root-owned code? (exit 1 if not)

    A hook installed with --chain is hooks/qemu; the user's own script it runs first must be
    there and runnable, or every VM start fails."""
    from vfiodesk.hook import install as code

    host = host_paths(root)
    target, legacy, chained = _targets(host)
    if target.exists() or target.is_symlink():
        installed = target
    elif legacy.exists() and INSTALLED_BY in _hook_text(legacy):
        installed = legacy  # hook install --chain
    else:
        raise VfiodeskError("the hook is not installed", "vfiodesk hook install")
    text = _hook_text(installed)
    header = script_header(text)
    if not text.strip():
        raise VfiodeskError(f"{installed} is empty: it is not vfiodesk's hook", "vfiodesk hook install")
    if INSTALLED_BY not in text or set(header) != {"python", "lib"}:
        raise VfiodeskError(f"{installed} is not a hook written by this vfiodesk (binary, or an older "
                            "one that ran code from where vfiodesk was installed)", "vfiodesk hook install")
    python, lib_shown = header["python"], header["lib"]
    lib = host(lib_shown.lstrip("/"))
    reinstall = "vfiodesk hook install (as root, from a root-owned installation)"
    problems: list[tuple[str, str]] = []  # (what is wrong, how to mend it)
    chaining = text == hook_script(python, lib_shown, chained=f"/{P.ETC_LIBVIRT_HOOKS}/{CHAINED_NAME}")
    if installed == legacy:
        problems += _chain_problems(chained, chaining)
    elif legacy.exists() and INSTALLED_BY in _hook_text(legacy):
        problems.append((f"vfiodesk's hook is installed twice, as {target} and {legacy}: libvirt 6.5 and "
                         "later run both, so each start binds twice",
                         "vfiodesk hook uninstall, then vfiodesk hook install"))
    if text != hook_script(python, lib_shown) and not (installed == legacy and chaining):
        problems.append((f"{installed} was changed since vfiodesk wrote it", reinstall))
    if not os.access(python, os.X_OK):
        problems.append((f"the interpreter {python} is missing or not executable", reinstall))
    elif not lib.is_dir():
        problems.append((f"the hook's code {lib_shown} is missing", reinstall))
    else:
        problems += [(problem, reinstall) for problem in code.check_runnable(python, lib)]
    sources = code.source_packages(code.probe(sys.executable, [], isolated=False))
    current = lib.name == f"lib-{code.digest(sources)}"
    if current and lib.is_dir():  # an older version's copy: its digest may be taken otherwise
        problems += [(problem, reinstall) for problem in code.copy_changes(lib)]
    stale = "" if current else " (from another vfiodesk version: install again)"
    click.echo(f"installed: {installed}{stale}")
    if chaining:
        click.echo(f"chained: {chained} (the user's own hook, run first)")
    click.echo(f"interpreter: {python}")
    click.echo(f"code: {lib_shown} (root-owned copy)")
    click.echo(f"executable: {'yes' if os.access(installed, os.X_OK) else 'NO'}")
    if installed == target and legacy.exists() and INSTALLED_BY not in _hook_text(legacy):
        click.echo(f"also present, left alone: {legacy}")
    click.echo(f"daemon: {_daemon(host)}")
    if problems:
        raise VfiodeskError("the hook is not safe or not runnable: " + "; ".join(p for p, _ in problems[:5]),
                            "; ".join(dict.fromkeys(fix for _, fix in problems)))


def _chain_problems(chained: Path, chaining: bool) -> list[tuple[str, str]]:
    """A --chain install runs the user's script first and stops a start when it fails (127 when
    it is gone, 126 when it cannot run), so the script must be there and executable."""
    shown = f"/{P.ETC_LIBVIRT_HOOKS}/{CHAINED_NAME}"
    present = chained.is_file()
    if not chaining:
        return [] if not present else [
            (f"the user's hook {shown} is no longer run: the hook does not chain to it",
             "vfiodesk hook install --chain")]
    if not present:
        return [(f"the user's hook {shown}, which the hook runs first, is missing: every VM start fails",
                 f"put your hook back at {shown}, or vfiodesk hook install --chain to stop chaining")]
    if not os.access(chained, os.X_OK):
        return [(f"the user's hook {shown}, which the hook runs first, is not executable: every VM start "
                 "fails", f"chmod 0755 {shown}")]
    from vfiodesk.hook import install as code

    # libvirtd runs it as root through our hook: it must be root's alone, as our own code is.
    return [(f"the user's hook {shown}: {problem}", f"chown root:root {shown}; chmod go-w {shown}")
            for problem in code.unsafe_owners(str(chained))]
