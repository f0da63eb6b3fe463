"""DomainDocument: lxml parsing, byte-for-byte output of untouched regions, edits in the
document's own style, and clear errors for input it will not read."""

from __future__ import annotations

import pytest

from vfiodesk.domxml.document import MAX_DEPTH, DomainDocument
from vfiodesk.errors import InputError

VIRSH_STYLE = """<!--
WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE
OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:
  virsh edit win10
or other application using the libvirt API.
-->

<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>win10</name>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://microsoft.com/win/10"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='GiB'>16</memory>
  <features>
    <hyperv>
      <vendor_id state='on' value='whatever'/>
    </hyperv>
  </features>
  <devices>
    <!-- the GPU -->
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0' />
      </source>
      <rom   file='/var/lib/libvirt/vbios.rom'/>
    </hostdev>
    <shmem name='looking-glass'><model type='ivshmem-plain'/><size unit='M'>32</size></shmem>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-set'/>
    <qemu:arg value='device.hostdev0.x-vga=on &amp; more'/>
  </qemu:commandline>
</domain>
"""


@pytest.mark.parametrize("text", [
    VIRSH_STYLE,
    VIRSH_STYLE.replace("\n", "\r\n"),
    '<?xml version="1.0" encoding="UTF-8"?>\n<?stylesheet x?>\n<domain type="kvm"><name>a</name></domain>',
    "<domain type='kvm'><name>a</name><devices/></domain>",
])
def test_an_untouched_document_is_written_byte_for_byte(text: str) -> None:
    assert DomainDocument.parse(text).to_xml() == text
    assert DomainDocument.parse(text.encode()).to_xml() == text


def test_an_attribute_edit_changes_that_attribute_only() -> None:
    doc = DomainDocument.parse(VIRSH_STYLE)
    hostdev = next(doc.iter_devices("hostdev"))
    hostdev.set("managed", "no")
    assert doc.to_xml() == VIRSH_STYLE.replace("managed='yes'", "managed='no'")


def test_new_elements_are_indented_like_their_siblings_in_the_documents_quotes() -> None:
    doc = DomainDocument.parse(VIRSH_STYLE)
    doc.append(doc.devices, "memballoon", {"model": "none"})
    doc.child("vcpu", after=("memory",)).text = "4"
    features = doc.root.find("features")
    assert features is not None
    doc.append(doc.append(features, "kvm"), "hidden", {"state": "on"})
    written = doc.to_xml()
    assert "    <shmem name='looking-glass'><model type='ivshmem-plain'/><size unit='M'>32</size></shmem>\n" \
           "    <memballoon model='none'/>\n  </devices>" in written
    assert "  <memory unit='GiB'>16</memory>\n  <vcpu>4</vcpu>\n  <features>" in written
    assert "    </hyperv>\n    <kvm>\n      <hidden state='on'/>\n    </kvm>\n  </features>" in written


def test_removing_an_element_takes_its_line_and_keeps_the_end_tags_indent() -> None:
    doc = DomainDocument.parse(VIRSH_STYLE)
    doc.remove(next(doc.iter_devices("shmem")))
    written = doc.to_xml()
    assert "    </hostdev>\n  </devices>\n" in written and "shmem" not in written
    doc = DomainDocument.parse(VIRSH_STYLE)
    hyperv = doc.root.find("features/hyperv")
    assert hyperv is not None
    doc.remove(hyperv[0])
    assert "  <features>\n    <hyperv/>\n  </features>" in doc.to_xml()


def test_a_new_document_is_built_indented() -> None:
    doc = DomainDocument.create("kvm")
    doc.append(doc.root, "name", text="a & b")
    devices = doc.append(doc.root, "devices")
    doc.append(devices, "input", {"type": "tablet", "bus": "usb"})
    assert doc.to_xml() == ('<domain type="kvm">\n  <name>a &amp; b</name>\n  <devices>\n'
                            '    <input type="tablet" bus="usb"/>\n  </devices>\n</domain>\n')


@pytest.mark.parametrize(("data", "message"), [
    ("<domain>".encode("utf-16"), "UTF-16"),
    (b"<domain><name>caf\xe9</name></domain>", "not UTF-8"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><domain/>', "ISO-8859-1"),
    (b'<!DOCTYPE d [<!ENTITY a "b">]><domain>&a;</domain>', "DOCTYPE"),
    (b"<domain><name>x</domain>", "not well-formed"),
    (b"<network/>", "not <domain>"),
    (b"<domain>" + b"<a>" * (MAX_DEPTH + 1) + b"</a>" * (MAX_DEPTH + 1) + b"</domain>", "deep"),
    (b"<domain>" + b" " * (9 * 1024 * 1024) + b"</domain>", "larger than 8 MiB"),
    (b"", "no root element"),
])
def test_input_it_will_not_read_is_a_clear_input_error(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        DomainDocument.parse(data)
