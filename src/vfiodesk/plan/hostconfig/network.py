"""Networking for the VM: NetworkManager keeps off libvirt's macvtap devices (the seed's fix),
and an isolated libvirt network lets host and VM talk (macvtap hides them from each other)."""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from vfiodesk import paths as P
from vfiodesk.errors import InputError
from vfiodesk.plan.hostconfig.change import FileChange, HostPlan, encode

NM_FILE = f"{P.ETC_NETWORKMANAGER}/conf.d/vfiodesk-macvtap.conf"
NETWORK_NAME = "vfiodesk-host"
NETWORK_FILE = f"{P.VAR_LIB_VFIODESK}/networks/{NETWORK_NAME}.xml"
BRIDGE = "virbr-vfiodesk"
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")  # IFNAMSIZ is 16 with the NUL
_CANDIDATES = [ipaddress.IPv4Network(f"192.168.{third}.0/24") for third in range(200, 255)]


def check_interface(name: str, present: frozenset[str] | None) -> None:
    if not _IFNAME_RE.match(name) or name in (".", ".."):
        raise InputError(f"{name!r} is not a network interface name", "list them: ip link")
    if present is not None and name not in present:
        raise InputError(f"there is no network interface {name} on this host", "list them: ip link")


def free_subnet(used: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    for candidate in _CANDIDATES:
        if not any(candidate.overlaps(network) for network in used if network.prefixlen > 0):
            return candidate
    raise InputError("no free 192.168.200-254.0/24 network for the host-only network",
                     "define a libvirt network by hand")


def subnet_of(xml: bytes | None) -> ipaddress.IPv4Network | None:
    """The subnet of a network file we wrote before, so a second run keeps it."""
    if xml is None:
        return None
    try:
        ip = ET.fromstring(xml).find("ip")
        if ip is None:
            return None
        return ipaddress.IPv4Network(f"{ip.get('address')}/{ip.get('netmask')}", strict=False)
    except (ET.ParseError, ValueError):
        return None


def network_xml(subnet: ipaddress.IPv4Network) -> str:
    """No <forward>: an isolated network, host and guests only (libvirt formatnetwork.html)."""
    hosts = list(subnet.hosts())
    network = ET.Element("network")
    ET.SubElement(network, "name").text = NETWORK_NAME
    ET.SubElement(network, "bridge", name=BRIDGE, stp="on", delay="0")
    ip = ET.SubElement(network, "ip", address=str(hosts[0]), netmask=str(subnet.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(hosts[99]), end=str(hosts[199]))
    ET.indent(network)
    return ET.tostring(network, encoding="unicode") + "\n"


def plan_network(interface: str, subnet: ipaddress.IPv4Network, networkmanager: bool) -> HostPlan:
    files = [FileChange(NETWORK_FILE, None, encode(network_xml(subnet)))]
    notes = [f"host-only network {NETWORK_NAME}: {subnet}, the host is {next(subnet.hosts())}",
             f"the VM's LAN NIC: <interface type='direct'><source dev='{interface}' mode='bridge'/>"
             "<model type='virtio'/></interface>; add a second NIC on network "
             f"{NETWORK_NAME} for host<->VM traffic (Synergy)"]
    if networkmanager:
        files.insert(0, FileChange(NM_FILE, None, encode(
            "# vfiodesk host network: libvirt's macvtap devices are not NetworkManager's to manage;\n"
            "# it took them down after the VM's first boot (the seed). NetworkManager.conf(5).\n"
            "[keyfile]\nunmanaged-devices+=interface-name:macvtap*\n")))
        notes.append("NetworkManager reads the new file after: systemctl reload NetworkManager")
    virsh = ("virsh", "-c", "qemu:///system")
    commands = ((*virsh, "net-define", f"/{NETWORK_FILE}"), (*virsh, "net-autostart", NETWORK_NAME),
                (*virsh, "net-start", NETWORK_NAME))
    undo = ((*virsh, "net-destroy", NETWORK_NAME), (*virsh, "net-undefine", NETWORK_NAME))
    return HostPlan("network", tuple(files), commands, undo, tuple(notes))
