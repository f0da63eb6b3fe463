"""The binding engine on the lab's real kernel: real vfio-pci, a nested QEMU, faults."""

from __future__ import annotations

from typing import Any

import pytest

from tests.labkit import run_scenario

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def steps() -> dict[str, Any]:
    return run_scenario("binding", last_step="device-gone")


def test_gpu_pair_goes_to_vfio_and_a_nested_vm_sees_it(steps: dict[str, Any]) -> None:
    before, bound = steps["before"], steps["bind"]
    assert (before["gpu"], before["audio"]) == ("bochs-drm", "snd_hda_intel")
    assert bound["rc"] == 0, bound["out"]
    assert (bound["gpu"], bound["audio"]) == ("vfio-pci", "vfio-pci") and bound["dev_vfio"]
    # The boot GPU's framebuffer console was bound; while the GPU is away only the dummy is.
    assert before["consoles"]["(M) frame buffer device"] == "1"
    assert bound["consoles"].get("(M) frame buffer device", "0") == "0"
    assert bound["consoles"]["(M) dummy device"] == "1"
    nested = steps["nested-qemu"]
    assert nested["sees_gpu"] and nested["sees_audio"], nested["err"]


def test_second_bind_is_a_no_op(steps: dict[str, Any]) -> None:
    again = steps["bind-again"]
    assert again["rc"] == 0 and "already on vfio-pci" in again["out"] and again["gpu"] == "vfio-pci"


def test_unbind_gives_drivers_and_console_back(steps: dict[str, Any]) -> None:
    released = steps["unbind"]
    assert released["rc"] == 0, released["out"]
    assert (released["gpu"], released["audio"]) == ("bochs-drm", "snd_hda_intel")
    assert released["consoles"] == steps["before"]["consoles"] and released["journal"] == []


def test_stranger_alone_is_refused_and_nothing_changes(steps: dict[str, Any]) -> None:
    refused = steps["stranger"]
    assert refused["rc"] == 4 and "shares the group but was not named" in refused["err"]
    assert refused["after"] == refused["before"] == "serial" and refused["override"] == "(null)"


def test_failure_on_the_second_device_rolls_back_the_first(steps: dict[str, Any]) -> None:
    faulted = steps["fault"]
    assert faulted["rc"] != 0 and "injected fault" in faulted["err"]
    assert (faulted["gpu"], faulted["audio"]) == ("bochs-drm", "snd_hda_intel")
    assert faulted["consoles"] == steps["before"]["consoles"]


def test_a_bind_killed_midway_is_finished_by_restore(steps: dict[str, Any]) -> None:
    crashed = steps["crash-restore"]
    assert crashed["rc"] == -9 and crashed["mid"]["gpu"] == "vfio-pci" and crashed["mid"]["audio"] is None
    assert crashed["restore_rc"] == 0, crashed["out"]
    assert (crashed["gpu"], crashed["audio"]) == ("bochs-drm", "snd_hda_intel")
    assert crashed["consoles"] == steps["before"]["consoles"]


def test_release_without_bind_and_already_bound(steps: dict[str, Any]) -> None:
    assert steps["release-without-bind"]["rc"] == 0
    assert "nothing to do" in steps["release-without-bind"]["out"]
    already = steps["already-bound"]
    assert already["usb"] == "vfio-pci" and "already on vfio-pci" in already["out"]
    assert steps["usb-back"]["usb"] == "xhci_hcd"


def test_a_device_gone_from_the_bus_is_a_clear_error(steps: dict[str, Any]) -> None:
    gone = steps["device-gone"]
    assert gone["rc"] == 2 and "no PCI device 0000:02:00.0" in gone["err"]
