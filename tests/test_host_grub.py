"""GRUB defaults files: real-world shapes in tests/data/grub, refusals, and properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfiodesk.host.system import CpuInfo
from vfiodesk.plan.hostconfig.grub import GrubParseError, plan_grub
from vfiodesk.plan.hostconfig.iommu import plan_iommu_params
from vfiodesk.plan.hostconfig.params import Want, plan_words
from vfiodesk.plan.hostconfig.words import splice, split_words

DATA = Path(__file__).parent / "data" / "grub"
INTEL = CpuInfo("GenuineIntel", "Test CPU", frozenset({"vmx"}), 6, 158)
WANTS = plan_iommu_params(INTEL, igfx_off=False, passthrough=True).wants
GRUB = "etc/default/grub"


def edited(data: bytes, wants: tuple[Want, ...] = WANTS) -> bytes:
    changes, _ = plan_grub([(GRUB, data)], wants)
    return changes[0].new if changes else data


@pytest.mark.parametrize("case", sorted(path.stem for path in DATA.glob("*.in")))
def test_real_world_files(case: str) -> None:
    source = (DATA / f"{case}.in").read_bytes()
    expected = (DATA / f"{case}.out").read_bytes()
    assert edited(source) == expected
    assert edited(expected) == expected  # a second run changes nothing


@pytest.mark.parametrize("case", sorted(path.name for path in (DATA / "bad").glob("*.grub")))
def test_shell_we_cannot_follow_is_refused(case: str) -> None:
    with pytest.raises(GrubParseError) as error:
        plan_grub([(GRUB, (DATA / "bad" / case).read_bytes())], WANTS)
    assert "/etc/default/grub line" in error.value.message
    assert error.value.hint


def test_amd_host_drops_bogus_amd_iommu_on_and_adds_nothing_else() -> None:
    amd = CpuInfo("AuthenticAMD", "Ryzen", frozenset({"svm"}))
    wants = plan_iommu_params(amd, igfx_off=False, passthrough=False).wants
    source = b'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash amd_iommu=on iommu=off"\n'
    assert edited(source, wants) == b'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'


def test_igfx_off_joins_an_existing_intel_iommu_in_place() -> None:
    wants = plan_iommu_params(INTEL, igfx_off=True, passthrough=False).wants
    source = b'GRUB_CMDLINE_LINUX_DEFAULT="intel_iommu=on quiet"\n'
    assert edited(source, wants) == b'GRUB_CMDLINE_LINUX_DEFAULT="intel_iommu=on,igfx_off quiet"\n'


def test_dropin_that_overrides_the_main_file_is_the_one_edited() -> None:
    main = b'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'
    cloud = (b"# Cloud Image specific Grub settings for Generic Cloud Images\n"
             b'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n')
    changes, _ = plan_grub([(GRUB, main), ("etc/default/grub.d/50-cloudimg-settings.cfg", cloud)], WANTS)
    assert [change.path for change in changes] == ["etc/default/grub.d/50-cloudimg-settings.cfg"]
    assert changes[0].new.endswith(b'"console=tty1 console=ttyS0 intel_iommu=on iommu=pt"\n')


def test_single_valued_parameter_is_replaced_and_its_duplicates_dropped() -> None:
    wants = (Want.value("vfio-pci.ids", "10de:1b80,10de:10f0"),)
    source = b'GRUB_CMDLINE_LINUX_DEFAULT="vfio_pci.ids=1234:5678 quiet vfio-pci.ids=10de:1b80"\n'
    assert edited(source, wants) == b'GRUB_CMDLINE_LINUX_DEFAULT="quiet vfio-pci.ids=10de:1b80,10de:10f0"\n'


# Lines that never set the command-line variables: comments, other settings, shell noise.
_OTHER_LINE = st.one_of(
    st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=40)
    .map(lambda text: "#" + text),
    st.from_regex(r"\AGRUB_[A-Z_]{1,12}=\"[a-z0-9 ,=]{0,20}\"\Z"),
    st.just(""), st.just("   "), st.just("export GRUB_TIMEOUT=5"),
)
_PARAMS = st.sampled_from(["quiet", "splash", "intel_iommu=on", "intel_iommu=off", "amd_iommu=on",
                           "iommu=pt", "iommu=nopt", "intel_iommu=on,igfx_off", "intel_iommu=pt",
                           "nvidia-drm.modeset=1", "root=UUID=0a1b", "ro", "loglevel=3"])
_VALUE = st.tuples(st.lists(_PARAMS, max_size=6), st.sampled_from(['"', "'"]),
                   st.sampled_from([" ", "  ", "\t"]))


@given(st.lists(_OTHER_LINE, max_size=8), st.lists(_OTHER_LINE, max_size=8), _VALUE,
       st.sampled_from(["\n", "\r\n"]))
def test_surrounding_content_survives_byte_for_byte(before: list[str], after: list[str],
                                                    value: tuple[list[str], str, str], end: str) -> None:
    words, quote, space = value
    line = f"GRUB_CMDLINE_LINUX_DEFAULT={quote}{space.join(words)}{quote}"
    source = end.join([*before, line, *after]).encode("utf-8", "surrogateescape") + end.encode()
    once = edited(source)
    once_lines = once.split(end.encode())
    source_lines = source.split(end.encode())
    index = len(before)
    assert once_lines[:index] == source_lines[:index]
    assert once_lines[index + 1:] == source_lines[index + 1:]
    assert edited(once) == once


@given(st.lists(st.lists(_PARAMS, max_size=5), min_size=1, max_size=3), st.booleans(), st.booleans())
def test_plan_words_is_idempotent_and_leaves_other_words(segments: list[list[str]], igfx: bool,
                                                        passthrough: bool) -> None:
    wants = plan_iommu_params(INTEL, igfx_off=igfx, passthrough=passthrough).wants
    edit = plan_words(segments, wants)
    texts = [" ".join(words) for words in segments]
    new = [splice(text, edit.in_segment(index), edit.append if index == len(texts) - 1 else ())
           for index, text in enumerate(texts)]
    assert plan_words([split_words(text) for text in new], wants).is_empty
    ours = ("intel_iommu", "amd_iommu", "iommu")
    assert [w for t in new for w in split_words(t) if w.split("=")[0] not in ours] == \
        [w for w in (word for words in segments for word in words) if w.split("=")[0] not in ours]
    flat = [word for text in new for word in split_words(text)]
    assert "intel_iommu=on" in flat or any(w.startswith("intel_iommu=") and "on" in w for w in flat)
    assert "amd_iommu=on" not in flat and "intel_iommu=pt" not in flat


@given(st.text(alphabet=" \tab=", max_size=30))
def test_splice_without_edits_is_identity(text: str) -> None:
    assert splice(text, {}) == text
