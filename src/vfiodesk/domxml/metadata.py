"""vfiodesk's own element in a domain's ``<metadata>``: what vfiodesk manages for this VM.

libvirt keeps foreign-namespace children of <metadata> verbatim (formatdomain.html#general-
metadata), so the domain XML carries our per-VM options and the hook reads them from stdin::

    <metadata>
      <vfiodesk:vm xmlns:vfiodesk="https://vfiodesk.dev/xmlns/domain/1">
        <vfiodesk:manage binding="vfiodesk" hugepages="runtime" isolate-cpus="no" single-gpu="no"/>
        <vfiodesk:device address="0000:01:00.0" vendor="10de" device="1b80"
                         subsystem-vendor="1043" subsystem-device="8591" iommu-group="1"/>
      </vfiodesk:vm>
    </metadata>
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lxml import etree

from vfiodesk.domxml import namespace
from vfiodesk.errors import InputError
from vfiodesk.model.pci import PciAddress

NAMESPACE = namespace.NAMESPACE
PREFIX = "vfiodesk"
ROOT_TAG = f"{{{NAMESPACE}}}vm"
MANAGE_TAG = f"{{{NAMESPACE}}}manage"
DEVICE_TAG = f"{{{NAMESPACE}}}device"
# The hook looks for this byte string before parsing anything, to leave other VMs at once.
MARKER = NAMESPACE.encode()

Binding = Literal["vfiodesk", "libvirt"]
HugepagesMode = Literal["none", "runtime"]
_HINT = ("fix or remove the <vfiodesk:vm> element in the domain's <metadata> (virsh edit), "
         "or run vfiodesk vm tune")


@dataclass(frozen=True)
class RecordedDevice:
    """A passed-through function as it was when the VM was made (for drift detection)."""

    address: PciAddress
    vendor_id: int
    device_id: int
    subsystem_vendor_id: int | None = None
    subsystem_device_id: int | None = None
    iommu_group: int | None = None


@dataclass(frozen=True)
class VmManagement:
    """What vfiodesk does for one VM around its start and stop."""

    binding: Binding = "vfiodesk"  # who binds hostdevs: our engine, or libvirt (managed='yes')
    hugepages: HugepagesMode = "none"  # allocate the VM's hugepages at prepare, free at release
    isolate_cpus: bool = False  # keep host tasks off the VM's pinned CPUs while it runs
    devices: tuple[RecordedDevice, ...] = field(default=())
    # The VM takes the host's only (boot) GPU: the hook stops the desktop first and brings it back.
    single_gpu: bool = False


_MANAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "binding": ("vfiodesk", "libvirt"),
    "hugepages": ("none", "runtime"),
    "isolate-cpus": ("yes", "no"),
    "single-gpu": ("yes", "no"),
}


def find_vm_element(metadata: etree._Element | None) -> etree._Element | None:
    """Our element among <metadata>'s children, or None."""
    return None if metadata is None else metadata.find(ROOT_TAG)


def parse_vm_management(element: etree._Element) -> VmManagement:
    """Read and validate our element; unknown options are errors, never guessed."""
    manage = element.find(MANAGE_TAG)
    values = {"binding": "vfiodesk", "hugepages": "none", "isolate-cpus": "no", "single-gpu": "no"}
    if manage is not None:
        for name, value in ((str(k), str(v)) for k, v in manage.attrib.items()):
            allowed = _MANAGE_OPTIONS.get(name)
            if allowed is None:
                raise InputError(f"unknown vfiodesk option {name!r} in the domain metadata", _HINT)
            if value not in allowed:
                raise InputError(f"vfiodesk option {name}={value!r} is not one of {', '.join(allowed)}",
                                 _HINT)
            values[name] = value
    for child in element:
        if isinstance(child.tag, str) and child.tag not in (MANAGE_TAG, DEVICE_TAG):
            raise InputError(f"unknown element {child.tag!r} in the vfiodesk metadata", _HINT)
    devices = tuple(_parse_device(child) for child in element.findall(DEVICE_TAG))
    binding: Binding = "libvirt" if values["binding"] == "libvirt" else "vfiodesk"
    hugepages: HugepagesMode = "runtime" if values["hugepages"] == "runtime" else "none"
    if values["single-gpu"] == "yes" and binding != "vfiodesk":
        raise InputError("vfiodesk option single-gpu=yes needs binding=vfiodesk (the hook must bind)",
                         _HINT)
    return VmManagement(binding, hugepages, values["isolate-cpus"] == "yes", devices,
                        values["single-gpu"] == "yes")


def _parse_device(element: etree._Element) -> RecordedDevice:
    def hex_attr(name: str, digits: int, required: bool) -> int | None:
        text = element.get(name)
        if text is None:
            if required:
                raise InputError(f"a vfiodesk:device lacks its {name!r} attribute", _HINT)
            return None
        if len(text) != digits or not all(c in "0123456789abcdef" for c in text):
            raise InputError(f"vfiodesk:device {name}={text!r} is not {digits} lowercase hex digits",
                             _HINT)
        return int(text, 16)

    address_text = element.get("address")
    if address_text is None:
        raise InputError("a vfiodesk:device lacks its 'address' attribute", _HINT)
    group_text = element.get("iommu-group")
    if group_text is not None and not group_text.isdecimal():
        raise InputError(f"vfiodesk:device iommu-group={group_text!r} is not a number", _HINT)
    return RecordedDevice(
        address=PciAddress.parse(address_text),
        vendor_id=hex_attr("vendor", 4, True) or 0,
        device_id=hex_attr("device", 4, True) or 0,
        subsystem_vendor_id=hex_attr("subsystem-vendor", 4, False),
        subsystem_device_id=hex_attr("subsystem-device", 4, False),
        iommu_group=None if group_text is None else int(group_text),
    )


def build_vm_element(management: VmManagement) -> etree._Element:
    """Our element for ``management``, declaring our prefix (a detached tree, not indented)."""
    element = etree.Element(ROOT_TAG, nsmap={PREFIX: NAMESPACE})
    etree.SubElement(element, MANAGE_TAG, {
        "binding": management.binding,
        "hugepages": management.hugepages,
        "isolate-cpus": "yes" if management.isolate_cpus else "no",
        **({"single-gpu": "yes"} if management.single_gpu else {}),
    })
    for device in management.devices:
        attributes = {"address": str(device.address), "vendor": f"{device.vendor_id:04x}",
                      "device": f"{device.device_id:04x}"}
        if device.subsystem_vendor_id is not None:
            attributes["subsystem-vendor"] = f"{device.subsystem_vendor_id:04x}"
        if device.subsystem_device_id is not None:
            attributes["subsystem-device"] = f"{device.subsystem_device_id:04x}"
        if device.iommu_group is not None:
            attributes["iommu-group"] = str(device.iommu_group)
        etree.SubElement(element, DEVICE_TAG, attributes)
    return element

