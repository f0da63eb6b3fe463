"""Where each node of a parsed XML document sits in its source text.

lxml (libxml2) parses and validates; it does not say where a node's bytes were. This scanner
walks the same well-formed text once and records, per element/comment/PI, the spans of its
start tag, end tag and attributes, so a writer can copy untouched regions byte for byte
(quote style, attribute spacing, ``<x/>`` versus ``<x />``, entity references, CRLF).
It runs only on text lxml has accepted, without a DOCTYPE (refused before), so the grammar
it needs is small: XML 1.0 section 2.5-2.8 and 3.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vfiodesk.errors import InputError

_NAME = r"[^\s=/>]+"
_ATTRIBUTE = re.compile(rf"""(\s+)({_NAME})(\s*=\s*)("[^"]*"|'[^']*')""")
_TAG_OPEN = re.compile(rf"<({_NAME})")
_TAG_CLOSE = re.compile(r"(\s*)(/?)>")
_END_TAG = re.compile(rf"</({_NAME})\s*>")


@dataclass
class RawAttribute:
    space: str  # the whitespace before the name, as written
    name: str  # the qualified name as written (xmlns:foo, a:b, type)
    equals: str  # "=" with any spaces around it
    quoted: str  # the value with its quotes, entity references unexpanded

    @property
    def text(self) -> str:
        return self.space + self.name + self.equals + self.quoted


@dataclass
class RawNode:
    """One element, comment or processing instruction: offsets into the source text."""

    kind: str  # "element" | "comment" | "pi"
    name: str
    start: int
    start_end: int  # end of the start tag (== end for comments and PIs)
    end_start: int  # start of the end tag (== start_end for <x/>)
    end: int
    tail_end: int = 0  # where the text after this node stops (next markup)
    self_closing: bool = False
    close_space: str = ""  # whitespace before '>' or '/>' in the start tag
    attributes: list[RawAttribute] = field(default_factory=list)
    depth: int = 0


def scan(source: str, begin: int, max_depth: int) -> list[RawNode]:
    """The root element at ``begin`` and every node inside it, in document order."""
    nodes: list[RawNode] = []
    open_elements: list[RawNode] = []
    pending_tail: list[RawNode] = []  # nodes whose tail runs up to the next markup
    position = begin
    while True:
        markup = source.find("<", position)
        if markup < 0:
            raise InputError("the domain XML ends inside an element", "check it with xmllint")
        if source.startswith("<![CDATA[", markup):
            position = source.index("]]>", markup) + 3  # part of the text around it
            continue
        for node in pending_tail:
            node.tail_end = markup
        pending_tail.clear()
        if source.startswith("<!--", markup):
            stop = source.index("-->", markup) + 3
            node = RawNode("comment", "", markup, stop, stop, stop, depth=len(open_elements))
        elif source.startswith("<?", markup):
            stop = source.index("?>", markup) + 2
            node = RawNode("pi", "", markup, stop, stop, stop, depth=len(open_elements))
        elif source.startswith("</", markup):
            match = _END_TAG.match(source, markup)
            if match is None or not open_elements:
                raise InputError("the domain XML has a malformed end tag", "check it with xmllint")
            element = open_elements.pop()
            element.end_start, element.end = markup, match.end()
            position = match.end()
            pending_tail.append(element)
            if not open_elements:
                element.tail_end = element.end
                return nodes
            continue
        else:
            node = _start_tag(source, markup)
            node.depth = len(open_elements)
            if node.depth >= max_depth:
                raise InputError(f"the domain XML nests elements more than {max_depth} deep",
                                 "give a libvirt domain XML (virsh dumpxml NAME)")
            if not node.self_closing:
                open_elements.append(node)
                nodes.append(node)
                position = node.start_end
                continue
        nodes.append(node)
        position = node.end
        if not open_elements:  # a root written as <domain/>
            node.tail_end = node.end
            return nodes
        pending_tail.append(node)


def _start_tag(source: str, markup: int) -> RawNode:
    opened = _TAG_OPEN.match(source, markup)
    if opened is None:
        raise InputError("the domain XML has a malformed start tag", "check it with xmllint")
    position = opened.end()
    attributes = []
    while (attribute := _ATTRIBUTE.match(source, position)) is not None:
        attributes.append(RawAttribute(*attribute.groups()))
        position = attribute.end()
    closed = _TAG_CLOSE.match(source, position)
    if closed is None:
        raise InputError("the domain XML has a malformed start tag", "check it with xmllint")
    stop = closed.end()
    self_closing = closed.group(2) == "/"
    return RawNode("element", opened.group(1), markup, stop, stop, stop, self_closing=self_closing,
                   close_space=closed.group(1), attributes=attributes)
