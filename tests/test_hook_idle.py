"""The hook's first look at a domain (hook/idle.py): prepare skips its imports only for a VM
with nothing to do, and whenever the first look says so, the full prepare agrees."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fakehost import FakeHost, ready_host
from vfiodesk.domxml.metadata import _MANAGE_OPTIONS, NAMESPACE
from vfiodesk.errors import VfiodeskError
from vfiodesk.hook.actions import prepare
from vfiodesk.hook.idle import IDLE_OPTIONS, has_nothing_to_prepare
from vfiodesk.paths import HostPaths

HOSTDEV = ("<hostdev mode='subsystem' type='pci' managed='no'><source>"
           "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>")
DEVICE = '<vfiodesk:device address="0000:01:00.0" vendor="10de" device="1b80" iommu-group="1"/>'


def domain(inside: str = "", devices: str = "", metadata_extra: str = "") -> bytes:
    vm = (f'<vfiodesk:vm xmlns:vfiodesk="{NAMESPACE}">{inside}</vfiodesk:vm>' if inside
          else f'<vfiodesk:vm xmlns:vfiodesk="{NAMESPACE}"/>')
    return (f"<domain type='qemu'><name>win10</name><memory unit='MiB'>64</memory>"
            f"<os><type arch='x86_64'>hvm</type></os><devices>{devices}</devices>"
            f"<metadata>{vm}{metadata_extra}</metadata></domain>").encode()


def manage(**options: str) -> str:
    return "<vfiodesk:manage " + " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in options.items()) + "/>"


@pytest.mark.parametrize("xml", [
    domain(),
    domain(manage(binding="vfiodesk", hugepages="none", isolate_cpus="no")),
    domain(manage(binding="libvirt", single_gpu="no")),
    domain(devices="<interface type='network'><source network='default'/></interface>"),
    b"<domain type='qemu'><name>plain</name></domain>",  # not managed: prepare does nothing either
])
def test_idle_shapes(xml: bytes) -> None:
    assert has_nothing_to_prepare(xml)


@pytest.mark.parametrize("xml", [
    domain(devices=HOSTDEV),
    domain(manage(hugepages="runtime")),
    domain(manage(isolate_cpus="yes")),
    domain(manage(single_gpu="yes")),
    domain(manage(hugepages="Runtime")),  # invalid: the full path reports it
    domain(manage(isolate="yes")),  # unknown option
    domain(DEVICE),
    domain(manage() + "<vfiodesk:other/>"),
    domain(metadata_extra=f'<v:vm xmlns:v="{NAMESPACE}"/>'),  # a second element of ours
    domain().replace(b"</domain>", b""),  # not well-formed
    b'<!DOCTYPE domain [<!ENTITY x "y">]>' + domain(),
    b"<?xml version='1.0' encoding='latin-1'?>" + domain(),
    domain().replace(b"win10", b"win\xff"),
    b"<vm/>",
])
def test_busy_or_doubtful_shapes_take_the_full_path(xml: bytes) -> None:
    assert not has_nothing_to_prepare(xml)


_OPTION = st.sampled_from([*IDLE_OPTIONS, "isolate", "version"])
_VALUE = st.sampled_from(["vfiodesk", "libvirt", "none", "runtime", "yes", "no", ""])
_CHILD = st.one_of(
    st.dictionaries(_OPTION, _VALUE, max_size=4).map(lambda o: manage(**o) if o else "<vfiodesk:manage/>"),
    st.just(DEVICE), st.just("<vfiodesk:other/>"), st.just("<!-- a comment -->"))


def _tree_digest(root: Path) -> str:
    hasher = hashlib.sha256()
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = Path(directory, name)
            hasher.update(str(path).encode() + (b"" if path.is_symlink() else path.read_bytes()))
    return hasher.hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> FakeHost:
    return ready_host(tmp_path_factory.mktemp("idle") / "host")


def _assert_prepare_does_nothing(tree: FakeHost, xml: bytes) -> None:
    before = _tree_digest(tree.root)
    try:
        done = prepare(HostPaths(tree.root), "win10", xml)
    except VfiodeskError as exc:
        pytest.fail(f"the first look said idle, the full prepare refused: {exc.message}")
    assert done == []
    assert _tree_digest(tree.root) == before


@pytest.mark.parametrize(("option", "value"), [
    (option, value) for option, allowed in {**_MANAGE_OPTIONS, "isolate": ("yes",)}.items()
    for value in (*allowed, "", "Yes")])
def test_every_option_value_the_first_look_calls_idle_is_idle(tree: FakeHost, option: str,
                                                             value: str) -> None:
    xml = domain(manage(**{option: value}))
    if has_nothing_to_prepare(xml):
        _assert_prepare_does_nothing(tree, xml)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_CHILD, max_size=3), st.booleans(), st.booleans())
@example([manage(binding="libvirt", hugepages="none")], False, False)
def test_when_the_first_look_says_idle_the_full_prepare_does_nothing(
        tree: FakeHost, children: list[str], hostdev: bool, empty: bool) -> None:
    xml = domain("" if empty else "".join(children), HOSTDEV if hostdev else "")
    if has_nothing_to_prepare(xml):
        _assert_prepare_does_nothing(tree, xml)
