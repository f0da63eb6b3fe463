"""The hook in the lab: libvirtd starts a VM made by vm create (with --hugepages, then put
through vm tune), the hook binds, gives back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.labkit import run_scenario

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def steps() -> dict[str, Any]:
    return run_scenario("hook", last_step="two-vms")


def test_vm_create_and_hook_install_in_the_lab(steps: dict[str, Any]) -> None:
    setup = steps["setup"]
    assert setup["install"] == 0 and setup["create"] == 0, setup["err"]


def test_tune_on_a_vfiodesk_made_vm_changes_nothing(steps: dict[str, Any]) -> None:
    tune = steps["tune"]
    assert tune["tune"] == 0, tune["err"]
    assert tune["diff"] == "" and "no change" in tune["diff_err"]
    assert tune["same"]
    # libvirt writes the metadata element back with double quotes, its own elements with single.
    manage = tune["manage"][0].replace('"', "'") if len(tune["manage"]) == 1 else tune["manage"]
    assert "binding='vfiodesk'" in manage and "hugepages='runtime'" in manage, tune["manage"]
    assert tune["managed"] and set(tune["managed"]) == {"no"}, tune["managed"]


def test_a_new_disk_on_a_tmpfs_without_direct_io_is_refused_and_taken_back(steps: dict[str, Any]) -> None:
    disk = steps["tmpfs-disk"]
    if disk["direct"]:
        pytest.skip("this lab kernel's tmpfs takes O_DIRECT (Linux 6.6 and later)")
    assert disk["rc"] == 2 and "without direct I/O (O_DIRECT)" in disk["err"], disk["err"]
    assert disk["left"] == [] and "vfdlab-tmpfs" not in disk["pools"] and not disk["defined"]


def test_start_hands_the_gpu_and_usb_to_the_running_vm(steps: dict[str, Any]) -> None:
    start = steps["start"]
    assert start["rc"] == 0, start["err"]
    assert set(start["drivers"].values()) == {"vfio-pci"}
    assert start["vfio_devices"] == 3 and start["passed"] == ["0000:01:00.0", "0000:01:00.1", "0000:02:00.0"]


def test_destroy_gives_everything_back(steps: dict[str, Any]) -> None:
    destroy = steps["destroy"]
    assert destroy["drivers"] == steps["setup"]["original"] and destroy["journal"] == []


def test_libvirtd_restart_reconnects_without_killing_the_vm(steps: dict[str, Any]) -> None:
    reconnect = steps["reconnect"]
    assert reconnect["state"] == "running"
    assert set(reconnect["during"].values()) == {"vfio-pci"}
    assert reconnect["after"] == steps["setup"]["original"]


def test_prepare_failing_halfway_strands_nothing(steps: dict[str, Any]) -> None:
    failed = steps["prepare-fails"]
    assert failed["rc"] != 0 and "injected fault" in failed["err"]
    assert failed["drivers"] == steps["setup"]["original"]


def test_hook_killed_mid_prepare_is_finished(steps: dict[str, Any]) -> None:
    killed = steps["hook-killed"]
    assert killed["rc"] != 0
    assert killed["drivers"] == steps["setup"]["original"], killed


def test_two_managed_vms_start_together(steps: dict[str, Any]) -> None:
    two = steps["two-vms"]
    assert two["create"] == [0, 0] and two["rc"] == [0, 0], two["err"]
    assert set(two["both"].values()) == {"vfio-pci"}
    assert two["after"] == steps["setup"]["original"]
