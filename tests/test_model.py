from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfiodesk.errors import InputError
from vfiodesk.model.cmdline import KernelCmdline
from vfiodesk.model.cpuset import CpuSet
from vfiodesk.model.pci import PciAddress, parse_pci_pattern
from vfiodesk.model.sizes import GIB, MIB, format_size, parse_size


@pytest.mark.parametrize("text", ["0000:01:00.0", "01:00.0", "1:0.0", "0000:01:00.0\n"])
def test_address_forms_name_the_same_function(text: str) -> None:
    assert str(PciAddress.parse(text)) == "0000:01:00.0"


def test_slot_pattern_matches_every_function_of_the_card() -> None:
    pattern = parse_pci_pattern("01:00")
    assert pattern.matches(PciAddress.parse("01:00.1"))
    assert not pattern.matches(PciAddress.parse("01:01.0"))


@pytest.mark.parametrize("text", ["", "01", "zz:00.0", "01:00.8", "01:20.0", "10000:01:00.0",
                                  "01:00.0;reboot"])
def test_bad_addresses_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InputError) as caught:
        PciAddress.parse(text)
    assert "0000:01:00.0" in caught.value.hint


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))
def test_address_round_trips(domain: int, bus: int, slot: int, function: int) -> None:
    address = PciAddress(domain, bus, slot, function)
    assert PciAddress.parse(str(address)) == address


def test_cpuset_parses_and_formats_kernel_lists() -> None:
    cpus = CpuSet.parse("0-3,8-11,6\n")
    assert list(cpus) == [0, 1, 2, 3, 6, 8, 9, 10, 11]
    assert str(cpus) == "0-3,6,8-11"
    assert str(CpuSet.parse("")) == ""


@given(st.frozensets(st.integers(0, 511)))
def test_cpuset_round_trips(cpus: frozenset[int]) -> None:
    assert CpuSet.parse(str(CpuSet(cpus))).cpus == cpus


@pytest.mark.parametrize("text", ["a-b", "3-1", "-1"])
def test_cpuset_rejects_garbage(text: str) -> None:
    with pytest.raises(InputError):
        CpuSet.parse(text)


@pytest.mark.parametrize(("text", "size"), [("8G", 8 * GIB), ("8GiB", 8 * GIB), ("512M", 512 * MIB),
                                             ("1.5G", 1536 * MIB), ("4096", 4096), ("2 gb", 2 * GIB)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["8 gigs", "", "G", "0", "-1G", "1.3B"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        parse_size(text)


def test_format_size_picks_the_largest_exact_unit() -> None:
    assert format_size(8 * GIB) == "8GiB"
    assert format_size(1536 * MIB) == "1536MiB"


def test_cmdline_reads_options_and_quotes() -> None:
    line = KernelCmdline.parse('BOOT_IMAGE=/vmlinuz ro intel_iommu=on,igfx_off iommu=pt '
                               'dyndbg="file vfio.c +p" quiet')
    assert line.options("intel_iommu") == ["on", "igfx_off"]
    assert line.last("iommu") == "pt"
    assert line.last("dyndbg") == "file vfio.c +p"
    assert line.has("quiet") and not line.has("amd_iommu")
    assert KernelCmdline.parse("a-b=1").has("a_b")
