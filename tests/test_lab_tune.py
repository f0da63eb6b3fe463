"""In the lab: a VM made with --binding vfiodesk --hugepages survives `vm tune` unchanged in
meaning, and libvirtd + the hook still hand it the GPU."""

from __future__ import annotations

from typing import Any

import pytest

from tests.labkit import run_scenario

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def steps() -> dict[str, Any]:
    return run_scenario("tune", last_step="start")


def test_tune_on_a_vfiodesk_made_vm_changes_nothing(steps: dict[str, Any]) -> None:
    tune = steps["tune"]
    assert tune["create"] == 0 and tune["tune"] == 0, tune["err"]
    assert tune["diff"] == "" and "no change" in tune["diff_err"]
    assert tune["same"]
    # libvirt writes the metadata element back with double quotes, its own elements with single.
    manage = tune["manage"][0].replace('"', "'") if len(tune["manage"]) == 1 else tune["manage"]
    assert "binding='vfiodesk'" in manage and "hugepages='runtime'" in manage, tune["manage"]
    assert tune["managed"] and set(tune["managed"]) == {"no"}, tune["managed"]


def test_the_tuned_vm_starts_with_the_gpu_bound_by_the_hook(steps: dict[str, Any]) -> None:
    start = steps["start"]
    assert start["rc"] == 0, start["err"]
    assert set(start["during"].values()) == {"vfio-pci"}
    assert start["after"] == start["original"]
