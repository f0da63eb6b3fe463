"""A libvirt domain XML document edited in place: comments, unknown elements and foreign
metadata survive; every edit is find-or-create, so applying it twice changes nothing."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from vfiodesk.domxml import metadata
from vfiodesk.errors import InputError

_MAX_XML = 8 * 1024 * 1024
_NS_DECLARATION = re.compile(r"""xmlns:([A-Za-z_][\w.-]*)=["']([^"']+)["']""")


class DomainDocument:
    def __init__(self, root: ET.Element):
        if root.tag != "domain":
            raise InputError(f"the XML's root element is <{root.tag}>, not <domain>",
                             "give a libvirt domain XML (virsh dumpxml NAME)")
        self.root = root

    @classmethod
    def parse(cls, text: str | bytes) -> DomainDocument:
        if len(text) > _MAX_XML:
            raise InputError("the domain XML is larger than 8 MiB", "give a libvirt domain XML")
        # Keep the document's own namespace prefixes (libosinfo:, a user's tools) on output.
        source = text if isinstance(text, str) else text.decode("utf-8", "replace")
        for prefix, uri in _NS_DECLARATION.findall(source):
            if not prefix.startswith("ns") or not prefix[2:].isdigit():
                ET.register_namespace(prefix, uri)
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        try:
            parser.feed(text)
            return cls(parser.close())
        except ET.ParseError as exc:
            raise InputError(f"the domain XML is not well-formed: {exc}",
                             "check it with xmllint, or take it from virsh dumpxml") from None

    def to_xml(self) -> str:
        ET.indent(self.root, "  ")
        return ET.tostring(self.root, encoding="unicode") + "\n"

    @property
    def name(self) -> str:
        return self.root.findtext("name") or ""

    @property
    def domain_type(self) -> str:
        return self.root.get("type", "kvm")

    def child(self, tag: str, parent: ET.Element | None = None, **match: str) -> ET.Element:
        """The first ``tag`` child of ``parent`` whose attributes include ``match``; created if none."""
        parent = self.root if parent is None else parent
        for element in parent.findall(tag):
            if all(element.get(key.rstrip("_")) == value for key, value in match.items()):
                return element
        return ET.SubElement(parent, tag, {key.rstrip("_"): value for key, value in match.items()})

    def remove(self, element: ET.Element, parent: ET.Element | None = None) -> None:
        (self.devices if parent is None else parent).remove(element)

    @property
    def devices(self) -> ET.Element:
        return self.child("devices")

    def iter_devices(self, tag: str) -> Iterator[ET.Element]:
        yield from self.devices.findall(tag)

    def set_text(self, tag: str, text: str, **attributes: str) -> ET.Element:
        element = self.child(tag)
        element.text = text
        element.attrib.update(attributes)
        return element

    def management(self) -> metadata.VmManagement | None:
        found = metadata.find_vm_element(self.root.find("metadata"))
        return None if found is None else metadata.parse_vm_management(found)

    def set_management(self, management: metadata.VmManagement) -> None:
        holder = self.child("metadata")
        old = metadata.find_vm_element(holder)
        if old is not None:
            holder.remove(old)
        holder.append(metadata.build_vm_element(management))
