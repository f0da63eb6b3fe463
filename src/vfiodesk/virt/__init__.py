"""The libvirt edge: the only code that imports libvirt (lazily, so nothing else pays for it)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from vfiodesk.errors import InputError, VfiodeskError
from vfiodesk.model.sizes import format_size

DEFAULT_URI = "qemu:///system"

# Set by the CLI while a command works on a --root other than this host: its libvirt is not that
# root's, so a connection needs an explicit URI.
foreign_root: contextvars.ContextVar[str | None] = contextvars.ContextVar("foreign_root", default=None)


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise VfiodeskError("the libvirt Python binding is not installed",
                            "pip install libvirt-python (or apt-get install python3-libvirt)") from None
    return libvirt


def _error(action: str, exc: Exception, hint: str) -> VfiodeskError:
    message = getattr(exc, "get_error_message", lambda: str(exc))() or str(exc)
    return VfiodeskError(f"{action}: {message}", hint)


@contextlib.contextmanager
def connection(uri: str | None) -> Iterator[Any]:
    """An open libvirt connection (virsh's convention: qemu:///system unless told)."""
    root = foreign_root.get()
    if uri is None and root is not None:
        raise InputError(f"--root {root} is not this host: vfiodesk does not use this host's libvirt "
                         "for it unless told", "name the libvirt to use with --connect URI (e.g. "
                         f"--connect {DEFAULT_URI}), or work on a file with --xml")
    libvirt = _libvirt()
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors become exceptions, not stderr noise
    try:
        conn = libvirt.open(uri or DEFAULT_URI)
    except libvirt.libvirtError as exc:
        raise _error(f"cannot connect to {uri or DEFAULT_URI}", exc,
                     "is libvirtd (or virtqemud) running and the URI right? try: virsh -c URI list") from None
    try:
        yield conn
    finally:
        conn.close()


def domain_exists(conn: Any, name: str) -> bool:
    return name in conn.listDefinedDomains() or any(
        conn.lookupByID(i).name() == name for i in conn.listDomainsID())


def _domain(conn: Any, name: str) -> Any:
    """The domain NAME, or a clear error when libvirt has none by that name."""
    libvirt = _libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        raise _error(f"no domain {name!r}", exc, "list them with virsh list --all") from None


def domain_is_active(conn: Any, name: str) -> bool:
    return bool(_domain(conn, name).isActive())


def undefine_domain(conn: Any, name: str) -> None:
    """Remove a stopped domain's definition and its UEFI varstore (the disk stays)."""
    libvirt = _libvirt()
    try:
        conn.lookupByName(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        raise _error(f"cannot undefine {name}", exc, f"see virsh undefine --nvram {name}") from None


def define_domain(conn: Any, xml: str) -> Any:
    libvirt = _libvirt()
    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as exc:
        raise _error("libvirt refused the domain", exc, "run with --print-xml to see the XML") from None


def domain_xml(conn: Any, name: str) -> str:
    libvirt = _libvirt()
    domain = _domain(conn, name)
    try:
        return str(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError as exc:  # undefined since the lookup
        raise _error(f"no domain {name!r}", exc, "list them with virsh list --all") from None


def create_volume(conn: Any, pool_name: str, name: str, size: int, volume_format: str) -> tuple[Any, str]:
    """A new volume in a storage pool (raw or qcow2; LVM pools take their own format)."""
    libvirt = _libvirt()
    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError as exc:
        raise _error(f"no storage pool {pool_name!r}", exc, "list pools with virsh pool-list --all") from None
    pool_type = ET.fromstring(pool.XMLDesc(0)).get("type")
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(size)
    if pool_type in ("dir", "fs", "netfs"):
        target = ET.SubElement(volume, "target")
        ET.SubElement(target, "format", type=volume_format)
    try:
        created = pool.createXML(ET.tostring(volume, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise _error(f"cannot create a {format_size(size)} volume {pool_name}/{name}", exc,
                     "check the pool's free space (virsh pool-info) and that the name is free") from None
    return created, str(created.path())


def create_volume_at(conn: Any, path: str, size: int, volume_format: str) -> tuple[Any, str, Any | None]:
    """A new volume at ``path`` through the storage pool of its directory, as virt-install does:
    a ``dir`` pool is defined (and started, autostarted) when none has that target. Returns the
    volume, its path, and the pool defined here (None when one existed), for rolling back."""
    directory, name = os.path.split(os.path.normpath(path))
    pool, defined = _pool_of_directory(conn, directory)
    try:
        volume, made = create_volume(conn, pool.name(), name, size, volume_format)
    except BaseException:
        if defined:
            delete_pool(pool)
        raise
    return volume, made, pool if defined else None


def _pool_of_directory(conn: Any, directory: str) -> tuple[Any, bool]:
    libvirt = _libvirt()
    names = set()
    for pool in conn.listAllStoragePools(0):
        names.add(pool.name())
        target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if target and os.path.normpath(target) == directory:
            if not pool.isActive():
                try:
                    pool.create(0)
                except libvirt.libvirtError as exc:
                    raise _error(f"cannot start storage pool {pool.name()!r}", exc,
                                 f"see virsh pool-start {pool.name()}") from None
            return pool, False
    base = os.path.basename(directory) or "pool"
    name = next(candidate for candidate in (base, *(f"{base}-{n}" for n in range(1, 1000)))
                if candidate not in names)
    element = ET.Element("pool", type="dir")
    ET.SubElement(element, "name").text = name
    ET.SubElement(ET.SubElement(element, "target"), "path").text = directory
    try:
        pool = conn.storagePoolDefineXML(ET.tostring(element, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise _error(f"cannot define a storage pool for {directory}", exc,
                     "check the directory, or give --disk POOL/VOL with an existing pool") from None
    try:
        try:
            pool.create(0)
        except libvirt.libvirtError:
            pool.build(0)  # the directory is missing: make it (an existing one is left as it is)
            pool.create(0)
        pool.setAutostart(1)
    except libvirt.libvirtError as exc:
        delete_pool(pool)
        raise _error(f"cannot start the storage pool {name!r} for {directory}", exc,
                     f"see virsh pool-start {name}") from None
    return pool, True


def delete_pool(pool: Any) -> None:
    """Stop and undefine a pool this run defined (its directory and other files stay)."""
    with contextlib.suppress(Exception):  # best effort while rolling back another failure
        if pool.isActive():
            pool.destroy()
    with contextlib.suppress(Exception):
        pool.undefine()


def delete_volume(volume: Any) -> None:
    with contextlib.suppress(Exception):  # best effort while rolling back another failure
        volume.delete(0)


def autostart_networks(conn: Any, names: list[str]) -> None:
    libvirt = _libvirt()
    for name in names:
        try:
            network = conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            raise _error(f"no libvirt network {name!r}", exc, "list them with virsh net-list --all") from None
        try:
            network.setAutostart(1)
            if not network.isActive():
                network.create()
        except libvirt.libvirtError as exc:
            raise _error(f"cannot start libvirt network {name!r}", exc,
                         "see virsh net-start NAME for the details") from None


def domain_networks(conn: Any, name: str) -> list[str]:
    """The libvirt networks a domain's interfaces use."""
    root = ET.fromstring(domain_xml(conn, name))
    return [source.get("network", "") for source in root.findall("devices/interface[@type='network']/source")
            if source.get("network")]


def start_domain(conn: Any, name: str) -> None:
    libvirt = _libvirt()
    try:
        domain = conn.lookupByName(name)
        if not domain.isActive():
            domain.create()
    except libvirt.libvirtError as exc:
        raise _error(f"cannot start {name}", exc, "see virsh start NAME and the hook's log") from None


def stop_domain(conn: Any, name: str, timeout: float) -> bool:
    """ACPI shutdown, then destroy after ``timeout`` seconds; True when it had to be forced.

    The domain may go away on its own between two calls: that is success, not an error."""
    import time

    libvirt = _libvirt()
    domain = _domain(conn, name)

    def attempt(action: str) -> None:
        try:
            getattr(domain, action)()
        except libvirt.libvirtError as exc:
            if domain.isActive():
                raise _error(f"cannot {action} {name}", exc, f"see virsh {action} {name}") from None

    if not domain.isActive():
        return False
    attempt("shutdown")
    deadline = time.monotonic() + timeout
    while domain.isActive() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not domain.isActive():
        return False
    attempt("destroy")
    return True
