"""`vfiodesk host network|audio|packages`: the services around the VM."""

from __future__ import annotations

import os
import re

import click

from vfiodesk import paths as P
from vfiodesk.checks.packages import PACKAGES, install_argv
from vfiodesk.cli.hostplan import apply_option, execute
from vfiodesk.cli.options import host_paths, root_option
from vfiodesk.errors import InputError, VfiodeskError
from vfiodesk.host.configfiles import read_config
from vfiodesk.host.services import (
    detect_sound_server,
    list_net_interfaces,
    read_route_networks,
    user_exists,
)
from vfiodesk.host.system import find_program, read_group_members, read_os_release
from vfiodesk.plan.hostconfig import audio as sound
from vfiodesk.plan.hostconfig import network as net
from vfiodesk.plan.hostconfig.change import Argv, HostPlan

_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
user_option = click.option("--user", metavar="NAME", default=None,
                           help="The desktop user (default: $SUDO_USER).")


def desktop_user(hostp: P.HostPaths, given: str | None) -> str | None:
    user = given or os.environ.get("SUDO_USER") or None
    if user is not None and (not _USER_RE.match(user) or not user_exists(hostp, user)):
        raise InputError(f"there is no user {user!r} on this host",
                         "give --user NAME of your desktop account")
    return user


@click.command()
@click.option("--macvtap", "interface", metavar="IFACE", required=True,
              help="The host NIC the VM shares through macvtap (bridge mode).")
@apply_option
@root_option
def network(interface: str, apply: bool, root: str | None) -> None:
    """NetworkManager leaves macvtap alone; an isolated host-only network for host<->VM traffic."""
    hostp = host_paths(root)
    net.check_interface(interface, list_net_interfaces(hostp))
    subnet = (net.subnet_of(read_config(hostp, net.NETWORK_FILE))
              or net.free_subnet(read_route_networks(hostp)))
    networkmanager = os.path.isdir(hostp(P.ETC_NETWORKMANAGER))
    execute(hostp, net.plan_network(interface, subnet, networkmanager), apply)


@click.command()
@user_option
@apply_option
@root_option
def audio(user: str | None, apply: bool, root: str | None) -> None:
    """The sound server accepts QEMU on TCP 127.0.0.1; qemu.conf lets QEMU use it (the seed)."""
    hostp = host_paths(root)
    server = detect_sound_server(hostp)
    if server is None:
        raise VfiodeskError("neither PipeWire (pipewire-pulse) nor PulseAudio is installed",
                            "install your desktop's sound server first")
    plan = sound.plan_pipewire() if server == "pipewire" else sound.plan_pulseaudio(
        read_config(hostp, P.ETC_PULSE_DEFAULT_PA))
    name = desktop_user(hostp, user)
    settings = [("vnc_allow_host_audio", "1")]
    if name is not None:
        settings.append(("user", f'"{name}"'))
    daemon = "virtqemud" if find_program(hostp, "virtqemud") else "libvirtd"
    plan = plan.merge(sound.plan_qemu_conf(read_config(hostp, P.ETC_LIBVIRT_QEMU_CONF), settings,
                                           ("systemctl", "restart", daemon)))
    notes = (f"sound server: {server}",
             *(() if name else ("no --user and no $SUDO_USER: QEMU keeps running as libvirt's user",)))
    execute(hostp, HostPlan(plan.title, plan.files, plan.commands, plan.undo_commands,
                            (*notes, *plan.notes), plan.warnings), apply)


@click.command()
@user_option
@apply_option
@root_option
def packages(user: str | None, apply: bool, root: str | None) -> None:
    """Install QEMU, OVMF, libvirt and virt-manager; add the user to the libvirt group."""
    hostp = host_paths(root)
    os_release = read_os_release(hostp)
    argv = install_argv(os_release, list(PACKAGES))
    if argv is None:
        raise VfiodeskError(f"unknown distribution {os_release.get('ID', '(no os-release)')!r}",
                            "install QEMU, OVMF, libvirt and virt-manager with its package manager")
    commands: list[Argv] = [tuple(argv)]
    name = desktop_user(hostp, user)
    notes = []
    members = read_group_members(hostp, "libvirt")
    if name is None:
        notes.append("no --user and no $SUDO_USER: no user added to the libvirt group")
    elif members is None or name not in members:
        commands.append(("usermod", "-aG", "libvirt", name))
        notes.append(f"{name} joins the libvirt group: log out and back in for it to count")
    execute(hostp, HostPlan("packages", commands=tuple(commands), notes=tuple(notes)), apply)
