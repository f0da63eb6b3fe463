"""A libvirt domain XML document edited in place, written back as the user wrote it.

lxml (libxml2, libvirt's own parser) reads it; the writer copies every untouched region of the
source byte for byte (prolog comments such as virsh's "AUTO-GENERATED" warning, the XML
declaration, quote style, namespace declarations where they were, ``<x/>`` style, indentation)
and writes only what an edit changed. New elements are indented like their siblings, so a
diff of before and after shows the edit and nothing else. Every edit is find-or-create, so
applying it twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from lxml import etree

from vfiodesk.domxml import metadata
from vfiodesk.domxml.source import RawNode, scan
from vfiodesk.errors import InputError

Element = etree._Element

MAX_XML_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64  # libvirt's deepest elements sit ~8 levels down; foreign metadata gets room
_HINT = "give a libvirt domain XML (virsh dumpxml NAME)"
_DECLARED_ENCODING = re.compile(r"""^\ufeff?<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
_UTF8_NAMES = {"utf-8", "utf8", "us-ascii", "ascii"}


@dataclass
class _Snapshot:
    """A node as parsed, to tell later what an edit touched."""

    raw: RawNode
    tag: object
    attributes: tuple[tuple[str, str], ...]
    text: str | None
    tail: str | None
    children: tuple[Element, ...]


def _decode(data: str | bytes) -> str:
    """The text of a UTF-8 document; other encodings are refused, not guessed."""
    if isinstance(data, str):
        text = data
    else:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4]:
            raise InputError("the domain XML is UTF-16 or UTF-32, not UTF-8",
                             "convert it: iconv -f UTF-16 -t UTF-8 FILE (virsh dumpxml writes UTF-8)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"the domain XML is not UTF-8 (byte {exc.start} is {data[exc.start]:#04x})",
                             "convert it to UTF-8 (iconv), or take it from virsh dumpxml") from None
    declared = _DECLARED_ENCODING.match(text)
    if declared and declared.group(1).lower() not in _UTF8_NAMES:
        raise InputError(f"the domain XML declares encoding {declared.group(1)!r}; only UTF-8 is read",
                         "convert it to UTF-8 and fix the <?xml ...?> declaration")
    return text


def _root_start(text: str) -> int:
    """Offset of the root element's '<', past the declaration, comments and PIs."""
    position = 0
    while True:
        markup = text.find("<", position)
        if markup < 0:
            raise InputError("the domain XML has no root element", _HINT)
        if text.startswith("<?", markup):
            position = text.index("?>", markup) + 2
        elif text.startswith("<!--", markup):
            position = text.index("-->", markup) + 3
        elif text.startswith("<!", markup):
            raise InputError("the domain XML has a DOCTYPE; libvirt's XML has none",
                             "remove the <!DOCTYPE ...> line (entities are not expanded)")
        else:
            return markup


def _parse_tree(text: str) -> Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                             remove_blank_text=False, remove_comments=False, remove_pis=False,
                             strip_cdata=False, load_dtd=False)
    try:
        return etree.fromstring(text.encode("utf-8"), parser)
    except etree.XMLSyntaxError as exc:
        raise InputError(f"the domain XML is not well-formed: {exc.msg}",
                         "check it with xmllint, or take it from virsh dumpxml") from None


class DomainDocument:
    def __init__(self, root: Element, source: str | None = None,
                 snapshots: dict[Element, _Snapshot] | None = None):
        if root.tag != "domain":
            raise InputError(f"the XML's root element is <{root.tag}>, not <domain>", _HINT)
        self.root = root
        self.source = source
        self._snapshots = snapshots or {}
        raw_source = source or ""
        self._quote = "'" if raw_source.count("='") > raw_source.count('="') else '"'
        self._empty_close = " />" if raw_source.count(" />") > raw_source.count("/>") / 2 else "/>"
        self._newline = "\r\n" if "\r\n" in raw_source else "\n"
        self._unit = _indent_unit(root)

    @classmethod
    def create(cls, domain_type: str) -> DomainDocument:
        """An empty <domain type=...> to build a new VM in."""
        return cls(etree.Element("domain", type=domain_type))

    @classmethod
    def parse(cls, data: str | bytes) -> DomainDocument:
        if len(data) > MAX_XML_BYTES:
            raise InputError("the domain XML is larger than 8 MiB", _HINT)
        text = _decode(data)
        begin = _root_start(text)
        root = _parse_tree(text)
        nodes = scan(text, begin, MAX_DEPTH)
        parsed = list(root.iter())
        if len(parsed) != len(nodes) or any(_kind(n) != raw.kind or _local(n) != raw.name.rpartition(":")[2]
                                            for n, raw in zip(parsed, nodes, strict=True)):
            raise InputError("the domain XML could not be mapped back to its text", _HINT)
        snapshots = {node: _Snapshot(raw, node.tag, attributes_of(node), node.text, node.tail,
                                     tuple(node))
                     for node, raw in zip(parsed, nodes, strict=True)}
        return cls(root, text, snapshots)

    # --- writing ---------------------------------------------------------------------------

    def to_xml(self) -> str:
        """The document: untouched regions as they were, edits in the document's own style."""
        parts: list[str] = []
        if self.source is None:
            self._write(self.root, parts)
            return "".join(parts) + "\n"
        raw = self._snapshots[self.root].raw
        parts.append(self.source[:raw.start])
        self._write(self.root, parts)
        parts.append(self.source[raw.end:])
        return "".join(parts)

    def _clean(self, node: Element) -> bool:
        was = self._snapshots.get(node)
        return (was is not None and was.tag == node.tag and was.text == node.text
                and was.attributes == attributes_of(node) and was.children == tuple(node)
                and all(self._clean(child) for child in node))

    def _write(self, node: Element, parts: list[str]) -> None:
        was = self._snapshots.get(node)
        if was is not None and self._clean(node):
            assert self.source is not None
            parts.append(self.source[was.raw.start:was.raw.end])
            return
        if not isinstance(node.tag, str):
            parts.append(_markup_of(node))
            return
        # Whitespace-only text is content too when the user wrote it inside a childless element
        # (``<a>\n  </a>``): self-closing it would drop their text.
        has_content = (len(node) > 0 or bool(node.text and node.text.strip())
                       or (was is not None and not was.raw.self_closing and not was.children
                           and bool(node.text) and node.text == was.text))
        parts.append(self._start_tag(node, was, empty=not has_content))
        if not has_content:
            return
        if was is not None and was.text == node.text and self.source is not None:
            stop = self._snapshots[was.children[0]].raw.start if was.children else was.raw.end_start
            parts.append(self.source[was.raw.start_end:stop])
        else:
            parts.append(self._escape_text(node.text or ""))
        for child in node:
            self._write(child, parts)
            child_was = self._snapshots.get(child)
            if child_was is not None and child_was.tail == child.tail and self.source is not None:
                parts.append(self.source[child_was.raw.end:child_was.raw.tail_end])
            else:
                parts.append(self._escape_text(child.tail or ""))
        if was is not None and not was.raw.self_closing and self.source is not None:
            parts.append(self.source[was.raw.end_start:was.raw.end])
        else:
            local = etree.QName(node).localname
            parts.append(f"</{node.prefix}:{local}>" if node.prefix else f"</{local}>")

    def _start_tag(self, node: Element, was: _Snapshot | None, *, empty: bool) -> str:
        """The start tag, self-closed when the element is ``empty``; as written when its
        attributes did not change, else with only the changed attributes rewritten."""
        if was is None or self.source is None:
            return self._new_start_tag(node) + (self._empty_close if empty else ">")
        raw = was.raw
        if was.attributes == attributes_of(node):
            head = self.source[raw.start:raw.start_end]
            if empty == raw.self_closing:
                return head
            body = head[:-2] if raw.self_closing else head[:-1]
            return body.rstrip() + (self._empty_close if empty else ">")
        current = dict(attributes_of(node))
        old_values = dict(was.attributes)
        plain = iter(key for key, _ in was.attributes)
        pieces = [f"<{raw.name}"]
        for attribute in raw.attributes:
            if attribute.name == "xmlns" or attribute.name.startswith("xmlns:"):
                pieces.append(attribute.text)
                continue
            key = next(plain)
            if key not in current:
                continue
            if current[key] == old_values[key]:
                pieces.append(attribute.text)
            else:
                quote = attribute.quoted[0]
                pieces.append(attribute.space + attribute.name + attribute.equals
                              + quote + _escape_attribute(current[key], quote) + quote)
        pieces += [f" {self._qname(node, key)}={self._quoted(value)}"
                   for key, value in current.items() if key not in old_values]
        if empty:
            suffix = raw.close_space + "/>" if raw.self_closing else self._empty_close
        else:
            suffix = ">" if raw.self_closing else raw.close_space + ">"
        return "".join(pieces) + suffix

    def _new_start_tag(self, node: Element) -> str:
        tag = etree.QName(node).localname
        pieces = [f"<{node.prefix}:{tag}" if node.prefix else f"<{tag}"]
        parent = node.getparent()
        inherited = parent.nsmap if parent is not None else {}
        for prefix, uri in node.nsmap.items():
            if inherited.get(prefix) != uri:
                pieces.append(f" {'xmlns:' + prefix if prefix else 'xmlns'}={self._quoted(uri)}")
        pieces += [f" {self._qname(node, key)}={self._quoted(value)}" for key, value in attributes_of(node)]
        return "".join(pieces)

    def _qname(self, node: Element, key: object) -> str:
        text = str(key)
        if not text.startswith("{"):
            return text
        uri, _, local = text[1:].partition("}")
        if uri == "http://www.w3.org/XML/1998/namespace":
            return f"xml:{local}"
        prefix = next((p for p, u in node.nsmap.items() if u == uri), None)
        return f"{prefix}:{local}" if prefix else local

    def _quoted(self, value: str) -> str:
        return self._quote + _escape_attribute(value, self._quote) + self._quote

    def _escape_text(self, text: str) -> str:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return escaped.replace("\n", self._newline) if self._newline != "\n" else escaped

    # --- editing ---------------------------------------------------------------------------

    def append(self, parent: Element, tag: str, attributes: dict[str, str] | None = None,
               text: str | None = None, *, index: int | None = None) -> Element:
        """A new ``tag`` child of ``parent`` (at ``index`` among its nodes; default last),
        indented like its siblings."""
        element = parent.makeelement(tag, attributes or {})
        element.text = text
        self._place(parent, element, index)
        return element

    def adopt(self, parent: Element, element: Element, index: int | None = None) -> Element:
        """Insert a subtree built elsewhere, indenting every level like the document."""
        children = list(element)
        for child in children:
            element.remove(child)
        if element.text is not None and not element.text.strip():
            element.text = None
        self._place(parent, element, index)
        for child in children:
            self.adopt(element, child)
        return element

    def _place(self, parent: Element, element: Element, index: int | None) -> None:
        nodes = list(parent)
        inner = self._child_indent(parent)
        if not nodes:
            element.tail = _indent_before(parent, self.root)
            if parent.text is None or not parent.text.strip():
                parent.text = inner
            parent.insert(0, element)
        elif index is None or index >= len(nodes):
            last = nodes[-1]
            # The last tail is "<spaces the user left>\n<the end tag's indent>": the first part
            # stays on the last line, the second moves behind the new element.
            head, newline, closing = (last.tail or "").rpartition("\n")
            last.tail = head + inner
            element.tail = newline + closing
            parent.append(element)
        else:
            element.tail = inner
            parent.insert(index, element)

    def _child_indent(self, parent: Element) -> str:
        if len(parent):
            return _indent_before(parent[0], self.root)
        outer = _indent_before(parent, self.root)
        return outer + self._unit if outer else ""

    def remove(self, element: Element, parent: Element | None = None) -> None:
        """Remove ``element`` with its line: the closing indentation stays right."""
        holder = element.getparent() if parent is None else parent
        if holder is None:
            return
        previous = element.getprevious()
        if element.getnext() is None:  # the last child's tail indents the parent's end tag
            if previous is not None:  # keep any spaces the user left at the end of that line
                head, newline, _ = (previous.tail or "").rpartition("\n")
                previous.tail = head + (element.tail or "") if newline else element.tail
            else:
                holder.text = element.tail if not (holder.text or "").strip() else holder.text
        holder.remove(element)

    def child(self, tag: str, parent: Element | None = None, *, after: tuple[str, ...] = (),
              **match: str) -> Element:
        """The first ``tag`` child of ``parent`` whose attributes include ``match``; created if
        none (placed after the last of the ``after`` tags present, else last)."""
        parent = self.root if parent is None else parent
        for element in parent.findall(tag):
            if all(element.get(key.rstrip("_")) == value for key, value in match.items()):
                return element
        index = None
        anchors = [node for node in parent if node.tag in after]
        if anchors:
            index = list(parent).index(anchors[-1]) + 1
        return self.append(parent, tag, {key.rstrip("_"): value for key, value in match.items()},
                           index=index)

    @property
    def name(self) -> str:
        return self.root.findtext("name") or ""

    @property
    def domain_type(self) -> str:
        return self.root.get("type", "kvm")

    @property
    def devices(self) -> Element:
        return self.child("devices")

    def iter_devices(self, tag: str) -> Iterator[Element]:
        yield from self.devices.findall(tag)

    def set_text(self, tag: str, text: str, *, after: tuple[str, ...] = (), **attributes: str) -> Element:
        element = self.child(tag, after=after)
        if element.text != text:
            element.text = text
        set_attributes(element, attributes)
        return element

    def management(self) -> metadata.VmManagement | None:
        found = metadata.find_vm_element(self.root.find("metadata"))
        return None if found is None else metadata.parse_vm_management(found)

    def set_management(self, management: metadata.VmManagement) -> None:
        """Record ``management``; an unchanged record is left as written."""
        if self.management() == management:
            return
        holder = self.child("metadata", after=("description", "title", "uuid", "name"))
        old = metadata.find_vm_element(holder)
        new = metadata.build_vm_element(management)
        if old is None:
            self.adopt(holder, new)
            return
        old_manage, new_manage = old.find(metadata.MANAGE_TAG), new.find(metadata.MANAGE_TAG)
        assert new_manage is not None
        if old_manage is None:
            self.adopt(old, new_manage, 0)
        else:
            for key, value in new_manage.attrib.items():
                if old_manage.get(key) != value:
                    old_manage.set(key, value)
        old_devices, new_devices = old.findall(metadata.DEVICE_TAG), new.findall(metadata.DEVICE_TAG)
        if [dict(d.attrib) for d in old_devices] != [dict(d.attrib) for d in new_devices]:
            for device in old_devices:
                self.remove(device)
            for device in new_devices:
                self.adopt(old, device)


def attributes_of(node: Element) -> tuple[tuple[str, str], ...]:
    """An element's attributes in document order, as text."""
    return tuple((str(key), str(value)) for key, value in node.attrib.items())


def set_attributes(element: Element, attributes: dict[str, str]) -> None:
    """Set each attribute that differs; untouched ones keep their place and spelling."""
    for key, value in attributes.items():
        if element.get(key) != value:
            element.set(key, value)


def _kind(node: Element) -> str:
    if isinstance(node.tag, str):
        return "element"
    return "comment" if node.tag is etree.Comment else "pi"


def _local(node: Element) -> str:
    if not isinstance(node.tag, str):
        return ""
    return etree.QName(node).localname


def _markup_of(node: Element) -> str:
    if _kind(node) == "comment":
        return f"<!--{node.text or ''}-->"
    return f"<?{node.target} {node.text or ''}?>"  # type: ignore[attr-defined]


def _escape_attribute(value: str, quote: str) -> str:
    escaped = value.replace("&", "&amp;").replace("<", "&lt;")
    escaped = escaped.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return escaped.replace(quote, "&quot;" if quote == '"' else "&apos;")


def _indent_before(element: Element, root: Element) -> str:
    """The line break and indentation in front of ``element`` ("" in a one-line document)."""
    if element is root:
        return "\n"
    previous = element.getprevious()
    parent = element.getparent()
    space = previous.tail if previous is not None else (parent.text if parent is not None else None)
    if not space or "\n" not in space:
        return ""
    return "\n" + space.rpartition("\n")[2]


def _indent_unit(root: Element) -> str:
    """One level of the document's indentation (two spaces when there is nothing to learn from)."""
    if len(root) and root.text and "\n" in root.text:
        found = root.text.rpartition("\n")[2]
        if found and not found.strip():
            return found
    return "  "
