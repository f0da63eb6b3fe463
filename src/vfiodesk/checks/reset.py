"""Reset preflight: can the device be reset between VM runs?

Without a reset (no FLR, bus or power-management reset) a GPU keeps state from the last
run and often hangs the next start. Some AMD GPU families have a known reset bug
(vendor-reset exists for them; Navi 21+ fixed it).
"""

from __future__ import annotations

from vfiodesk.model.pci import PciDevice

AMD = 0x1002
# Device ID ranges of AMD families with the reset bug (Polaris 10/11/12, Vega 10/20, Navi 10/14),
# as listed by the vendor-reset project's device table.
_AMD_RESET_BUG = (
    ("Polaris", 0x67C0, 0x67FF), ("Polaris 12", 0x6980, 0x699F), ("Vega 10", 0x6860, 0x687F),
    ("Vega 20", 0x66A0, 0x66AF), ("Navi 10", 0x7310, 0x731F), ("Navi 14", 0x7340, 0x734F),
)


def reset_advice(device: PciDevice) -> list[str]:
    """Warnings about resetting ``device``; empty when nothing is known to be wrong."""
    advice = []
    if device.reset_methods == ():
        advice.append(f"{device.address} offers no reset method: the VM may not restart cleanly")
    elif device.reset_methods is not None and "flr" not in device.reset_methods and device.is_display:
        advice.append(f"{device.address} has no FLR (only {', '.join(device.reset_methods)}): "
                      "a secondary bus reset also resets its other functions")
    if device.vendor_id == AMD and device.is_display:
        for family, low, high in _AMD_RESET_BUG:
            if low <= device.device_id <= high:
                advice.append(f"{device.address} is an AMD {family} GPU with the known reset bug: "
                              "install the vendor-reset module")
    return advice
