from __future__ import annotations

import pytest
from lxml import etree

from vfiodesk.domxml.metadata import (
    MARKER,
    RecordedDevice,
    VmManagement,
    build_vm_element,
    find_vm_element,
    parse_vm_management,
)
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciAddress


def test_metadata_round_trips_through_domain_xml_text() -> None:
    management = VmManagement("vfiodesk", "runtime", True, (
        RecordedDevice(PciAddress.parse("01:00.0"), 0x10DE, 0x1B80, 0x1043, 0x8591, 1),
        RecordedDevice(PciAddress.parse("01:00.1"), 0x10DE, 0x10F0),
    ))
    metadata = etree.Element("metadata")
    metadata.append(build_vm_element(management))
    text = etree.tostring(metadata)
    assert MARKER in text and b"vfiodesk:vm" in text
    found = find_vm_element(etree.fromstring(text))
    assert found is not None and parse_vm_management(found) == management


@pytest.mark.parametrize(("snippet", "message"), [
    ('<v:manage binding="magic"/>', "binding='magic'"),
    ('<v:manage turbo="yes"/>', "unknown vfiodesk option 'turbo'"),
    ('<v:surprise/>', "unknown element"),
    ('<v:device address="01:00.0" vendor="10DE" device="1b80"/>', "lowercase hex"),
    ('<v:device address="01:00.0;rm" vendor="10de" device="1b80"/>', "not a PCI address"),
    ('<v:device vendor="10de" device="1b80"/>', "lacks its 'address'"),
    ('<v:device address="01:00.0" vendor="10de" device="1b80" iommu-group="x"/>', "iommu-group"),
])
def test_bad_metadata_is_refused_with_the_reason(snippet: str, message: str) -> None:
    element = etree.fromstring(f'<v:vm xmlns:v="https://vfiodesk.dev/xmlns/domain/1">{snippet}</v:vm>')
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_vm_management(element)
