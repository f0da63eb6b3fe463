"""`vfiodesk vm audit NAME|--xml FILE`: the domain's passthrough settings, each a finding."""

from __future__ import annotations

import os
from pathlib import Path

import click

from vfiodesk.checks.vmaudit import AuditFacts, audit_domain
from vfiodesk.cli.doctor import print_findings
from vfiodesk.cli.domain_io import domain_argument, read_domain, xml_option
from vfiodesk.cli.options import connect_option, emit_json, host_paths, json_option, root_option
from vfiodesk.domxml.document import DomainDocument
from vfiodesk.domxml.hostdevs import pci_hostdevs
from vfiodesk.errors import ExitStatus, HostReadError
from vfiodesk.host.cpu import read_cpu_topology
from vfiodesk.host.pci import scan_pci_devices
from vfiodesk.host.system import read_cpuinfo
from vfiodesk.host.varstore import read_varstore_keys
from vfiodesk.paths import HostPaths


def read_audit_facts(host: HostPaths, doc: DomainDocument) -> AuditFacts:
    """The audited host's CPU, PCI devices, and the files the domain names (ROMs, NVRAM)."""
    try:
        topology = read_cpu_topology(host)
    except HostReadError:
        topology = None
    try:
        devices = tuple(scan_pci_devices(host))
    except HostReadError:
        devices = None
    roms = {rom.get("file", "") for element, _ in
            (pci_hostdevs(doc) if doc.root.find("devices") is not None else [])
            for rom in element.findall("rom") if rom.get("file")}
    existing = frozenset(path for path in roms if os.path.isfile(host(path.lstrip("/"))))
    nvram = (doc.root.findtext("os/nvram") or "").strip()
    keys, problem = None, "the domain names no <nvram> file (libvirt makes it at first start)"
    if nvram:
        try:
            keys = read_varstore_keys(Path(host(nvram.lstrip("/"))), nvram)
        except HostReadError as exc:
            problem = exc.message
        except FileNotFoundError:
            problem = f"{nvram} does not exist on this host"
    return AuditFacts(read_cpuinfo(host), topology, devices, existing, keys, problem)


@click.command("audit")
@domain_argument
@xml_option
@json_option
@connect_option
@root_option
def audit(name: str | None, xml_file: Path | None, as_json: bool, uri: str | None, root: str | None) -> int:
    """Audit a passthrough domain (NAME or --xml FILE): every setting that matters, with its fix.
    Exit 3 when a finding fails."""
    host = host_paths(root)
    _, doc = read_domain(name, xml_file, uri)
    tune = f"vfiodesk vm tune {name}" if name else f"vfiodesk vm tune --xml {xml_file}"
    result = audit_domain(doc, read_audit_facts(host, doc), tune_hint=tune)
    if as_json:
        emit_json(result.as_json())
    else:
        out = print_findings(result.findings, "finding")
        out.print(f"score {result.score}/100" + (": [bold red]fix the failed findings[/]" if result.failed
                                                 else ""))
    return int(ExitStatus.HOST_NOT_READY if result.failed else ExitStatus.OK)
