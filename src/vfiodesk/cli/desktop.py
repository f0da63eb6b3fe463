"""`vfiodesk desktop ...`, `vm audio`, `up` and `down`: using the passthrough desktop every day."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from vfiodesk.checks.doctor import Status, prime_finding
from vfiodesk.cli.domain_io import domain_argument, read_domain, write_domain, xml_option
from vfiodesk.cli.options import connect_option, dry_run_option, host_paths, root_option, write_output
from vfiodesk.desktop.monitor import load_monitors, switch_input
from vfiodesk.desktop.msi import MsiDevice, msi_script
from vfiodesk.desktop.prime import query_prime_profile
from vfiodesk.desktop.synergy import SIDES, server_config
from vfiodesk.domxml.desktop import (
    AUDIO_BACKENDS,
    looking_glass_size,
    parse_resolution,
    set_audio,
    set_evdev,
    set_looking_glass,
)
from vfiodesk.domxml.tune import hostdev_addresses
from vfiodesk.errors import InputError, RefusedError, VfiodeskError
from vfiodesk.host.pci import read_pci_device, scan_pci_devices
from vfiodesk.host.pciids import read_pci_names
from vfiodesk.plan.bind import NVIDIA_VENDOR
from vfiodesk.runner import CommandRunner


@click.group()
def desktop() -> None:
    """Input sharing, MSI, monitors and Looking Glass for the passthrough VM."""


@desktop.command()
@domain_argument
@xml_option
@click.option("--mode", type=click.Choice(["synergy", "inputleap", "evdev"]), required=True)
@click.option("--host-screen", default=None, help="Host screen name (default: this host's name).")
@click.option("--vm-screen", default="windows", show_default=True)
@click.option("--vm-address", default=None, help="The VM's address on the isolated network.")
@click.option("--side", type=click.Choice(sorted(SIDES)), default="right", show_default=True,
              help="Where the VM's screen is, seen from the host's.")
@click.option("--keyboard", help="evdev: /dev/input/by-id/...-event-kbd")
@click.option("--mouse", help="evdev: /dev/input/by-id/...-event-mouse")
@click.option("--output", type=click.Path(path_type=Path), help="Write the Synergy config here.")
@connect_option
@root_option
def input(name: str | None, xml_file: Path | None, mode: str, host_screen: str | None, vm_screen: str,
          vm_address: str | None, side: str, keyboard: str | None, mouse: str | None,
          output: Path | None, uri: str | None, root: str | None) -> None:
    """Share keyboard and mouse: a Synergy/Input Leap server config, or evdev passthrough."""
    if mode == "evdev":
        if not keyboard or not mouse:
            raise InputError("evdev needs --keyboard and --mouse", "ls /dev/input/by-id/ shows them")
        host = host_paths(root)
        for path in (keyboard, mouse):
            if not os.path.exists(host(path.lstrip("/"))):
                raise InputError(f"{path} does not exist", "pick an entry of /dev/input/by-id/")
        _, doc = read_domain(name, xml_file, uri)
        set_evdev(doc, keyboard, mouse)
        write_domain(doc, name, xml_file, uri)
        return
    text = server_config(host_screen or os.uname().nodename.split(".")[0], vm_screen, side, vm_address)
    if output is None:
        click.echo(text, nl=False)
        return
    write_output(output, text)
    server = "input-leaps" if mode == "inputleap" else "synergys"
    click.echo(f"wrote {output}; start the server with: {server} --config {output}")


@desktop.command()
@domain_argument
@xml_option
@connect_option
@root_option
def msi(name: str | None, xml_file: Path | None, uri: str | None, root: str | None) -> None:
    """A PowerShell script enabling MSI for exactly the VM's passed-through devices."""
    host = host_paths(root)
    _, doc = read_domain(name, xml_file, uri)
    management = doc.management()
    recorded = {device.address: device for device in (management.devices if management else ())}
    devices = []
    for address in hostdev_addresses(doc):
        if address in recorded:
            r = recorded[address]
            ids = (r.vendor_id, r.device_id, r.subsystem_vendor_id, r.subsystem_device_id)
        else:
            found = read_pci_device(host, address)
            ids = (found.vendor_id, found.device_id, found.subsystem_vendor_id, found.subsystem_device_id)
        names = read_pci_names(host, {(ids[0], ids[1])})
        label = f"{address} {names.vendor(ids[0]) or ''} {names.device(ids[0], ids[1]) or ''}".strip()
        devices.append(MsiDevice(*ids, label=label))
    if not devices:
        raise InputError("the domain has no PCI hostdevs", "pass a GPU first: vfiodesk vm create --gpu")
    click.echo(msi_script(devices), nl=False)


@desktop.group()
def monitor() -> None:
    """Switch monitors between the host's and the VM's inputs (DDC/CI)."""


@monitor.command()
@click.argument("target", type=click.Choice(["host", "vm"]))
@click.option("--monitor", "number", type=int, default=None, help="Only this display (ddcutil's number).")
@click.option("--config", type=click.Path(path_type=Path),
              default=Path(os.path.expanduser("~/.config/vfiodesk/monitors.toml")), show_default=True)
@dry_run_option
@root_option
def switch(target: str, number: int | None, config: Path, dry_run: bool, root: str | None) -> None:
    """Switch to TARGET's input; bind this command to a hotkey (README)."""
    monitors = load_monitors(config)
    if number is not None and number not in monitors:
        raise InputError(f"monitor {number} is not in {config}", f"configured: {sorted(monitors)}")
    runner = CommandRunner(host_paths(root), dry_run=dry_run)
    for display in sorted(monitors) if number is None else [number]:
        value = switch_input(runner, monitors[display], target)
        done = "input" if runner.will_run else "would switch to input"
        click.echo(f"monitor {display}: {done} 0x{value:02x} ({target})")


@desktop.command("looking-glass")
@domain_argument
@xml_option
@click.option("--resolution", default="1920x1080", show_default=True)
@connect_option
@root_option
def looking_glass(name: str | None, xml_file: Path | None, resolution: str, uri: str | None,
                  root: str | None) -> None:
    """Add Looking Glass's shared memory, sized for RESOLUTION (one-monitor setups)."""
    width, height = parse_resolution(resolution)
    _, doc = read_domain(name, xml_file, uri)
    set_looking_glass(doc, looking_glass_size(width, height))
    write_domain(doc, name, xml_file, uri)


@click.command()
@domain_argument
@xml_option
@click.option("--backend", type=click.Choice(AUDIO_BACKENDS), required=True)
@click.option("--server", default=None, help="PulseAudio server, e.g. tcp:127.0.0.1 (vfiodesk host audio).")
@connect_option
@root_option
def audio(name: str | None, xml_file: Path | None, backend: str, server: str | None, uri: str | None,
          root: str | None) -> None:
    """The VM's sound: an ICH9 card on PulseAudio (or none), or Scream over shared memory."""
    _, doc = read_domain(name, xml_file, uri)
    set_audio(doc, backend, server)
    write_domain(doc, name, xml_file, uri)
    if backend == "scream":
        click.echo("Scream: install the Scream driver in Windows (IVSHMEM mode) and run "
                   "scream -m /dev/shm/scream-ivshmem on the host", err=True)


def _preflight(name: str, uri: str | None, root: str | None) -> None:
    """The VM's GPU must not be held by the host's desktop (a display server on its DRM nodes)."""
    from vfiodesk.host.usage import read_host_usage

    host = host_paths(root)
    _, doc = read_domain(name, None, uri)
    addresses = hostdev_addresses(doc)
    usage = read_host_usage(host, addresses)
    held = next(iter(usage.device_holders.items()), None)
    if held is not None:
        raise RefusedError(f"{held[0]} is in use by {', '.join(held[1])}",
                           "log out of the desktop that uses that GPU (or prime-select the iGPU) first")
    nvidia = [str(device.address) for device in scan_pci_devices(host)
              if device.address in addresses and device.is_display and device.vendor_id == NVIDIA_VENDOR]
    prime = prime_finding(query_prime_profile(host, CommandRunner(host)), nvidia)
    if prime.status is Status.FAIL:
        raise RefusedError(prime.summary, prime.hint)


@click.command()
@click.argument("name")
@click.option("--synergy-config", type=click.Path(path_type=Path), default=None,
              help="Start synergys with this config too.")
@connect_option
@root_option
def up(name: str, synergy_config: Path | None, uri: str | None, root: str | None) -> None:
    """Start the desktop VM NAME: preflight, its networks, the VM, input sharing."""
    from vfiodesk import virt

    _preflight(name, uri, root)
    with virt.connection(uri) as conn:
        networks = virt.domain_networks(conn, name)
        virt.autostart_networks(conn, networks)
        virt.start_domain(conn, name)
    if synergy_config is not None:
        CommandRunner(host_paths(root)).run(["synergys", "--config", str(synergy_config)])
    click.echo(f"{name} is running; its picture is on the passed GPU's outputs "
               "(and SPICE on 127.0.0.1 while no GPU driver is installed)")


@click.command()
@click.argument("name")
@click.option("--timeout", type=int, default=120, show_default=True, help="Seconds to wait for shutdown.")
@connect_option
@root_option
def down(name: str, timeout: int, uri: str | None, root: str | None) -> None:
    """Shut the desktop VM down (forced after --timeout) and stop input sharing."""
    from vfiodesk import virt

    with virt.connection(uri) as conn:
        forced = virt.stop_domain(conn, name, timeout)
    with contextlib.suppress(VfiodeskError):  # no pkill, no synergys: nothing to stop
        CommandRunner(host_paths(root)).run(["pkill", "-x", "synergys"], check=False)
    click.echo(f"{name} is off{' (forced after ' + str(timeout) + ' s)' if forced else ''}; the hook "
               "gives its devices back")
