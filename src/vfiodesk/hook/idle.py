"""Whether prepare has nothing to do for a domain, decided before the hook imports anything.

libvirtd starts a fresh interpreter for the hook at every prepare. For a VM vfiodesk manages
that has no PCI hostdev, records no device, and asks for none of runtime hugepages, CPU
isolation or the single-GPU hand-off, prepare reads the XML and does nothing; loading lxml
and the domain model for that costs several interpreter starts. This first look uses only
the interpreter's built-in expat parser and answers True only for that shape; anything else
(not well-formed, a DTD, a second vfiodesk element, an option it does not know, any value
that acts) is False, and the full path decides and reports.
"""

from __future__ import annotations

import pyexpat

from vfiodesk.domxml.namespace import NAMESPACE

# vfiodesk's options (domxml/metadata.py) at the values with which prepare does nothing.
IDLE_OPTIONS = {"binding": ("vfiodesk", "libvirt"), "hugepages": ("none",), "isolate-cpus": ("no",),
                "single-gpu": ("no",)}
# Larger, deeper, or other than UTF-8 without a declaration (as libvirt hands it over): left to
# the full path's own limits and checks (domxml/document.py).
_LIMIT = 1024 * 1024
_DEPTH = 32
_VM = f"{NAMESPACE} vm"
_MANAGE = f"{NAMESPACE} manage"


class _Busy(Exception):
    """Seen something prepare may act on (or that only the full path should judge)."""


def _idle_manage(depth: int, name: str, attributes: dict[str, str]) -> bool:
    """Inside our element: only <manage> with idle values, and nothing below it."""
    return depth == 3 and name == _MANAGE and all(
        value in IDLE_OPTIONS.get(key, ()) for key, value in attributes.items())


def has_nothing_to_prepare(data: bytes) -> bool:
    if len(data) > _LIMIT or data.lstrip().startswith(b"<?xml"):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    path: list[str] = []
    seen_vm = False

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal seen_vm
        depth = len(path)
        path.append(name)
        if name == "hostdev" or depth >= _DEPTH or (depth == 0 and name != "domain"):
            raise _Busy
        if depth == 2 and path[1] == "metadata" and name == _VM:
            if seen_vm:
                raise _Busy
            seen_vm = True
        elif depth >= 3 and path[1:3] == ["metadata", _VM] and not _idle_manage(depth, name, attributes):
            raise _Busy

    def end(name: str) -> None:
        path.pop()

    def doctype(*_: object) -> None:
        raise _Busy  # entities and DTDs: libvirt never hands them over

    parser = pyexpat.ParserCreate("UTF-8", " ")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except (_Busy, pyexpat.ExpatError, ValueError):
        return False
    return True
