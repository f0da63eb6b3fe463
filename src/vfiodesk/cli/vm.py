"""`vfiodesk vm create|tune`: the Windows passthrough domain, on libvirt's own API."""

from __future__ import annotations

import difflib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from vfiodesk.cli.domain_io import read_domain, write_domain
from vfiodesk.cli.options import connect_option, host_paths, root_option
from vfiodesk.domxml.document import DomainDocument
from vfiodesk.domxml.tune import hostdev_addresses
from vfiodesk.errors import InputError, RefusedError, VfiodeskError
from vfiodesk.host.cpu import read_cpu_topology
from vfiodesk.host.firmware import read_firmware_descriptors
from vfiodesk.host.pci import read_pci_device, scan_pci_devices
from vfiodesk.host.system import read_cpuinfo, read_direct_io_support
from vfiodesk.host.usage import HostUsage
from vfiodesk.host.varstore import find_secure_boot_firmware
from vfiodesk.hostfiles.varstore import apply_2023_keys
from vfiodesk.model.pci import PciDevice, parse_pci_pattern
from vfiodesk.paths import HostPaths
from vfiodesk.plan.bind import plan_bind
from vfiodesk.plan.guest import GuestFeatures, guest_mirrors_host, plan_guest_features
from vfiodesk.plan.pinning import PinningPlan, plan_pinning
from vfiodesk.plan.vm import (
    VIRTIO_DRIVER_FOLDER,
    TuneRequest,
    VmRequest,
    check_single_gpu,
    load_profile,
    merge,
    new_domain,
    nvram_path,
    parse_disk,
    plan_retune,
    plan_tuning,
    recorded_device,
)


@click.group()
def vm() -> None:
    """Create and tune the passthrough VM's libvirt domain."""


def passed_devices(host: HostPaths, request: VmRequest, *, force: bool = False) -> list[PciDevice]:
    """Every endpoint of the GPU's and USB controller's groups; unsafe groups are refused, and
    so is the host's own display unless forced."""
    patterns = [parse_pci_pattern(text) for text in (request.gpu, request.usb_controller) if text]
    if not patterns:
        return []
    # The same rules as binding (whole groups, no strangers); host usage is checked at start.
    plan = plan_bind(scan_pci_devices(host), patterns, HostUsage())
    if plan.host_display is not None and not force:
        raise RefusedError(f"{plan.host_display} is the host's own display (its boot GPU): the host "
                           "would have no picture whenever the VM runs",
                           "pass a second GPU, or --single-gpu to hand the host's only GPU over "
                           "(the desktop stops while the VM runs and comes back after), or --force")
    return list(plan.devices)


def guest_features(host: HostPaths, domain_type: str, plan: PinningPlan, *,
                   nested: bool = False) -> GuestFeatures:
    """Enlightenments and CPU features for this host (cache passthrough when the pins are whole cores)."""
    topology = read_cpu_topology(host)
    return plan_guest_features(domain_type, read_cpuinfo(host), nested=nested,
                               mirrors_host=guest_mirrors_host(plan.guest, topology.threads_per_core))


def _is_local(uri: str | None) -> bool:
    return not uri or uri.startswith("qemu:///")


def _new_varstore(host: HostPaths, request: VmRequest, uri: str | None) -> tuple[Path, Path] | None:
    """(the VM's varstore, its template) for a win11 VM on this host; None elsewhere (libvirt
    then copies the template itself, without the 2023 keys)."""
    if request.os != "win11" or not _is_local(uri):
        return None
    descriptors = read_firmware_descriptors(host)
    firmware = find_secure_boot_firmware(descriptors)
    template = None if firmware is None else firmware.nvram_template  # always set when found
    if template is None:
        raise VfiodeskError("no OVMF build with Secure Boot and enrolled keys is described in "
                            f"/usr/share/qemu/firmware{descriptors.skipped_note()}",
                            "install OVMF (Debian: apt-get install ovmf), "
                            "or make a Windows 10 VM: --os win10")
    target = Path(host(nvram_path(request.name).lstrip("/")))
    if target.exists():
        raise InputError(f"{nvram_path(request.name)} already exists (a varstore left by an earlier VM "
                         f"named {request.name})", "move it away, or pick another name")
    return target, Path(host(template.lstrip("/")))


def _check_local_files(host: HostPaths, request: VmRequest, uri: str | None) -> None:
    if not _is_local(uri):
        return  # files live on the remote host; libvirt will say if they are missing
    for label, path in (("--iso", request.iso), ("--virtio-iso", request.virtio_iso)):
        if path and not os.path.isfile(host(path.lstrip("/"))):
            raise InputError(f"{label} {path} does not exist", "give the path of the ISO file")


def _check_direct_io(host: HostPaths, path: str | None, uri: str | None) -> None:
    """The disk gets cache='none', so QEMU opens it with O_DIRECT; on a file system that refuses
    that, the VM would fail only at its first start, with QEMU's bare "Invalid argument"."""
    if path is None or path.startswith("/dev/") or not _is_local(uri):
        return  # block devices take O_DIRECT; a remote host's files are not ours to open
    if read_direct_io_support(host(path.lstrip("/"))) is False:
        raise InputError(f"disk {path} is on a file system without direct I/O (O_DIRECT), which the "
                         "disk's cache='none' needs: QEMU would refuse to open it",
                         "put the disk on ext4, xfs or btrfs (tmpfs takes O_DIRECT from Linux 6.6 on), "
                         "or a block device")


@vm.command()
@click.argument("name")
@click.option("--profile", type=click.Path(path_type=Path), help="TOML file with these options.")
@click.option("--cpus", type=int, help="vCPUs (default: the best L3 domain; see vfiodesk cpus).")
@click.option("--memory", help="RAM, e.g. 8G.")
@click.option("--memory-current", help="Balloon target at start, e.g. 4G.")
@click.option("--disk", help="PATH, or POOL/VOL,size=60G,format=raw|qcow2, or path=FILE,size=60,"
                              "format=qcow2 as virt-install (new volumes are created through libvirt).")
@click.option("--iso", help="Windows install ISO.")
@click.option("--virtio-iso", help="virtio-win drivers ISO.")
@click.option("--gpu", help="GPU address (01:00 = every function).")
@click.option("--usb-controller", help="USB controller to pass too.")
@click.option("--chipset", type=click.Choice(["q35", "i440fx"]))
@click.option("--network", help="libvirt network NAME (default) or macvtap:IFACE.")
@click.option("--hugepages/--no-hugepages", default=None)
@click.option("--hypervclock/--no-hypervclock", default=None)
@click.option("--os", "os_version", type=click.Choice(["win11", "win10"]),
              help="win11 (default): TPM 2.0, Secure Boot with Microsoft's 2023 keys; win10: neither.")
@click.option("--balloon/--no-balloon", default=None,
              help="A virtio balloon (default: off with a passed GPU, whose VFIO mapping pins all RAM).")
@click.option("--nested", is_flag=True, default=None,
              help="Nested virtualization in the guest (WSL2, VBS): adds hv-evmcs on Intel.")
@click.option("--domain-type", type=click.Choice(["kvm", "qemu"]), help="Default: kvm when /dev/kvm exists.")
@click.option("--binding", type=click.Choice(["libvirt", "vfiodesk"]), default=None,
              help="Who binds the hostdevs: libvirt (managed='yes') or vfiodesk's hook.")
@click.option("--single-gpu/--no-single-gpu", default=None,
              help="The GPU is the host's only one: the hook stops the desktop while the VM runs "
                   "and brings it back (implies --binding vfiodesk).")
@click.option("--print-xml", is_flag=True, help="Print the domain XML; define nothing.")
@click.option("--force", is_flag=True, help="Pass the host's own display GPU too.")
@connect_option
@root_option
def create(name: str, profile: Path | None, print_xml: bool, force: bool, uri: str | None,
           root: str | None, **options: Any) -> None:
    """Create the passthrough VM NAME with the seed's choices as defaults."""
    binding = options.pop("binding")
    if binding is not None:
        options["managed"] = binding == "libvirt"
    options["os"] = options.pop("os_version")
    request = merge(load_profile(profile, name) if profile else VmRequest(name=name), options)
    # As every file argument: a relative ISO path is relative to the current directory.
    request = replace(request, **{key: os.path.abspath(value) for key in ("iso", "virtio_iso")
                                  if (value := getattr(request, key))})
    if request.single_gpu and binding is None:
        request = replace(request, managed=False)
    request.validate()
    host = host_paths(root)
    domain_type = request.domain_type or ("kvm" if os.path.exists(host("dev/kvm")) else "qemu")
    plan = plan_pinning(read_cpu_topology(host), request.cpus)
    # --single-gpu is the way to pass the host's own display: the hook stops the desktop first.
    passed = passed_devices(host, request, force=force or request.single_gpu)
    if request.single_gpu:
        check_single_gpu(passed)
    features = guest_features(host, domain_type, plan, nested=request.nested)
    disk = parse_disk(request.disk)
    if request.memory_current and passed and request.balloon is not False:
        click.echo("note: --memory-current saves no host memory here: with a passed-through device "
                   "every page of guest RAM is pinned when the VM starts", err=True)
    _check_local_files(host, request, uri)
    if disk is not None and disk.path is not None and not disk.new and not print_xml and \
            not os.path.exists(host(disk.path.lstrip("/"))):
        raise InputError(f"disk {disk.path} does not exist",
                         "create it, or let libvirt make a volume: --disk POOL/VOL,size=60G")
    if print_xml:
        if disk is not None and disk.path is None:
            raise InputError(f"--print-xml cannot know where pool {disk.pool!r} would put {disk.volume!r}",
                             "give the disk as an absolute path, or drop --print-xml to create it")
        path = disk.path if disk else None
        doc = plan_tuning(new_domain(request, domain_type), request, plan, passed, path,
                          disk.format if disk else "raw", features)
        click.echo(doc.to_xml(), nl=False)
        return
    from vfiodesk import virt

    with virt.connection(uri) as conn:
        if virt.domain_exists(conn, name):
            raise InputError(f"a domain named {name!r} already exists",
                             f"pick another name, or tune it: vfiodesk vm tune {name}")
        varstore = _new_varstore(host, request, uri)
        volume, path, new_pool = None, disk.path if disk else None, None
        if disk is not None and disk.new and disk.path is not None:
            volume, path, new_pool = virt.create_volume_at(conn, disk.path, disk.size, disk.format)
        elif disk is not None and disk.pool is not None and disk.volume is not None:
            volume, path = virt.create_volume(conn, disk.pool, disk.volume, disk.size, disk.format)
        try:
            _check_direct_io(host, path, uri)
            doc = plan_tuning(new_domain(request, domain_type), request, plan, passed, path,
                              disk.format if disk else "raw", features)
            # Networks first: a missing network must fail before anything is defined.
            virt.autostart_networks(conn, [request.network] if request.network and
                                    not request.network.startswith("macvtap:") else [])
            if varstore is not None:
                apply_2023_keys(varstore[0], nvram_path(name), template=varstore[1])
            virt.define_domain(conn, doc.to_xml())
        except BaseException:
            if volume is not None:
                virt.delete_volume(volume)
            if new_pool is not None:
                virt.delete_pool(new_pool)
            if varstore is not None:
                varstore[0].unlink(missing_ok=True)
            raise
    click.echo(f"defined {name}: {len(plan.vcpu_pins)} vCPUs on host CPUs {plan.vm_cpus}, "
               f"{len(passed)} passed-through function(s)")
    if varstore is not None:
        click.echo(f"{nvram_path(name)}: Secure Boot on, Microsoft's 2011 and 2023 keys enrolled; TPM 2.0 "
                   "emulated by swtpm")
    elif request.os == "win11":
        click.echo("note: libvirt makes the varstore on the VM's host from its template (2011 keys only): "
                   f"run vfiodesk vm tune {name} --secure-boot-keys 2023 there", err=True)
    if request.virtio_iso:
        click.echo("During Windows setup, load the disk driver from the virtio-win CD: "
                   + VIRTIO_DRIVER_FOLDER)
    if request.network and request.network.startswith("macvtap:"):
        click.echo("note: over macvtap the host and the VM cannot talk to each other; add an "
                   "isolated network for that (vfiodesk host network)")


@vm.command("tune")
@click.argument("name", required=False)
@click.option("--xml", "xml_file", type=click.Path(path_type=Path), help="Tune this XML file instead.")
@click.option("--cpus", type=int, help="vCPUs (default: as many as the domain has now).")
@click.option("--memory", help="RAM, e.g. 16G (written in the domain's own unit).")
@click.option("--memory-current", help="Balloon target at start, e.g. 8G.")
@click.option("--hugepages/--no-hugepages", default=None,
              help="Add or remove hugepages backing (default: as the domain has it).")
@click.option("--binding", type=click.Choice(["libvirt", "vfiodesk"]), default=None,
              help="Who binds the hostdevs (default: as recorded, else as their managed= says).")
@click.option("--isolate-cpus/--no-isolate-cpus", default=None,
              help="Keep host tasks off the VM's CPUs while it runs (default: as recorded).")
@click.option("--record-devices", is_flag=True,
              help="Record the passed-through hardware as it is now (after a confirmed change).")
@click.option("--gpu-display-only", "display", flag_value="gpu-only", default=None,
              help="Drop QXL video and SPICE: the GPU drives the screen.")
@click.option("--emulated-display", "display", flag_value="emulated",
              help="Bring QXL video and SPICE back (undoes --gpu-display-only).")
@click.option("--post-install", "post_install_flag", is_flag=True,
              help="Drop the install-time devices (the seed's cleanup).")
@click.option("--single-gpu/--no-single-gpu", default=None,
              help="Mark the VM's GPU as the host's only one (the hook then binds it, stopping the "
                   "desktop while the VM runs; implies --binding vfiodesk); default: as recorded.")
@click.option("--secure-boot-keys", "secure_boot_keys", type=click.Choice(["2023"]),
              help="Enroll Microsoft's 2023 Secure Boot keys in the VM's varstore (old file kept).")
@click.option("--print-xml", is_flag=True, help="Print the tuned XML.")
@click.option("--diff", is_flag=True, help="Print what would change.")
@connect_option
@root_option
def tune_command(name: str | None, xml_file: Path | None, cpus: int | None, record_devices: bool,
                 post_install_flag: bool, secure_boot_keys: str | None, print_xml: bool, diff: bool,
                 uri: str | None, root: str | None, **options: Any) -> None:
    """Apply the seed's tuning to an existing domain (NAME or --xml), in place, keeping the
    user's own choices; twice changes nothing."""
    request = TuneRequest(post_install=post_install_flag, **options)
    request.sizes()
    host = host_paths(root)
    before, doc = read_domain(name, xml_file, uri)
    plan = plan_pinning(read_cpu_topology(host), cpus if cpus is not None else _vcpus(doc))
    recorded = tuple(recorded_device(read_pci_device(host, address))
                     for address in hostdev_addresses(doc)) if record_devices else None
    if request.single_gpu:
        check_single_gpu([read_pci_device(host, address) for address in hostdev_addresses(doc)])
    features = guest_features(host, doc.domain_type, plan)
    for note in plan_retune(doc, request, plan, recorded, features):
        click.echo(f"note: {note}", err=True)
    after = doc.to_xml()
    if diff:
        click.echo("".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                                "before", "after")), nl=False)
        if after == before:
            click.echo("no change: the domain already has this tuning", err=True)
    if print_xml:
        click.echo(after, nl=False)
    elif not diff:
        write_domain(doc, name, xml_file, uri)
    if secure_boot_keys:
        _enroll_2023_keys(host, doc, apply=not (print_xml or diff), name=name, uri=uri)


def _enroll_2023_keys(host: HostPaths, doc: DomainDocument, *, apply: bool, name: str | None,
                      uri: str | None) -> None:
    nvram = (doc.root.findtext("os/nvram") or "").strip()
    if not nvram:
        raise InputError("the domain names no <nvram> varstore",
                         "start the VM once (libvirt makes it), or create it with vfiodesk vm create")
    if name and apply:
        from vfiodesk import virt

        with virt.connection(uri) as conn:
            if virt.domain_is_active(conn, name):
                # QEMU holds the varstore open and writes it back: an edit now would be lost or torn.
                raise RefusedError(f"{name} is running; its varstore is in use",
                                   f"shut it down first (vfiodesk down {name}), then run this again")
    if not apply:
        click.echo(f"would enroll Microsoft's 2023 keys in {nvram} (backup kept)", err=True)
        return
    keys, backup = apply_2023_keys(Path(host(nvram.lstrip("/"))), nvram)
    click.echo(f"{nvram}: Microsoft's 2023 keys enrolled" + (f"; the old varstore is {backup}" if backup
                                                            else " already; nothing written"), err=True)
    if not keys.secure_boot:
        click.echo("note: SecureBootEnable is off in this varstore", err=True)


def _vcpus(doc: DomainDocument) -> int | None:
    text = doc.root.findtext("vcpu")
    return int(text) if text and text.strip().isdecimal() else None


def _register_audio() -> None:
    from vfiodesk.cli.desktop import audio

    vm.add_command(audio)


def _register_audit() -> None:
    from vfiodesk.cli.vm_audit import audit

    vm.add_command(audit)


_register_audio()
_register_audit()
