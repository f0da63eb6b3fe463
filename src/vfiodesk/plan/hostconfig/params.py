"""Which kernel parameters a command line must hold, and the edit that gets it there.

The edit works on the words of one or more segments (a GRUB variable, a loader entry's
options line) and keeps everything it does not have to touch: unknown words, their order,
user options next to ours (intel_iommu=on,sm_on stays). Option names are those of
Documentation/admin-guide/kernel-parameters.txt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vfiodesk.errors import InputError
from vfiodesk.model.cmdline import KernelParam

# Every option the kernel knows for these parameters; anything else is a mistake copied from
# a guide (amd_iommu=on, intel_iommu=pt) that the kernel ignores or warns about.
KNOWN_OPTIONS: Mapping[str, frozenset[str]] = {
    "intel_iommu": frozenset({"on", "off", "igfx_off", "forcedac", "strict", "sp_off", "sm_on",
                              "sm_off", "tboot_noforce"}),
    "amd_iommu": frozenset({"fullflush", "off", "force_isolation", "force_enable", "pgtbl_v1",
                            "pgtbl_v2", "irtcachedis", "nohugepages", "v2_pgsizes_only"}),
}
_SAFE_WORD_RE = re.compile(r"^[A-Za-z0-9_.,:=/+-]+$")


@dataclass(frozen=True)
class Want:
    """A parameter we manage: with ``options`` among its comma-separated options (none of
    ``conflicts``, none the kernel does not know), or, when ``single``, with exactly
    ``options[0]`` as its value. No options: only checked, never added."""

    name: str
    options: tuple[str, ...]
    conflicts: frozenset[str] = frozenset()
    single: bool = False

    def __post_init__(self) -> None:
        for word in (self.name, *self.options):
            if not _SAFE_WORD_RE.match(word):
                raise InputError(f"{word!r} cannot go on a kernel command line",
                                 "use letters, digits and _ . , : = / + - only")

    @classmethod
    def value(cls, name: str, value: str) -> Want:
        return cls(name, (value,), single=True)

    @property
    def key(self) -> str:
        return KernelParam(self.name, None).key

    @property
    def word(self) -> str:
        return f"{self.name}={','.join(self.options)}"


@dataclass(frozen=True)
class WordEdit:
    """Word (segment, index) -> new word or None (removed); words to add at the end."""

    replace: Mapping[tuple[int, int], str | None] = field(default_factory=dict)
    append: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def in_segment(self, segment: int) -> dict[int, str | None]:
        return {index: new for (seg, index), new in self.replace.items() if seg == segment}

    def removed(self, segments: Sequence[Sequence[str]]) -> list[str]:
        """The words taken out (or replaced), for loaders edited by command."""
        return [segments[seg][index] for seg, index in sorted(self.replace)]

    def added(self) -> list[str]:
        return [new for _, new in sorted(self.replace.items()) if new is not None] + list(self.append)

    @property
    def is_empty(self) -> bool:
        return not self.replace and not self.append


@dataclass
class _Occurrence:
    position: tuple[int, int]
    name: str
    original: str
    options: list[str]


def plan_words(segments: Sequence[Sequence[str]], wants: Sequence[Want]) -> WordEdit:
    """The smallest edit of ``segments`` (in command-line order) that satisfies ``wants``.

    Words starting with '$' (a GRUB self-reference) are not parameters and are skipped.
    """
    by_key = {want.key: want for want in wants}
    found: dict[str, list[_Occurrence]] = {key: [] for key in by_key}
    replace: dict[tuple[int, int], str | None] = {}
    notes: list[str] = []
    for seg, words in enumerate(segments):
        for index, word in enumerate(words):
            if word.startswith("$"):
                continue
            param = KernelParam.parse(word)
            want = by_key.get(param.key)
            options = [] if param.value is None else param.value.split(",")
            if want is not None and want.single:
                found[param.key].append(_Occurrence((seg, index), param.name, word, options))
                continue
            if want is None:
                continue
            known = KNOWN_OPTIONS.get(param.key)
            kept = options
            if known is not None:
                bogus = [option for option in options if option not in known]
                kept = [option for option in options if option in known]
                notes += [f"removed {param.name}={option}: the kernel has no such option" for option in bogus]
            dropped = [option for option in kept if option in want.conflicts]
            kept = [option for option in kept if option not in want.conflicts]
            notes += [f"removed {param.name}={option}: it undoes {want.word}" for option in dropped]
            found[param.key].append(_Occurrence((seg, index), param.name, word, kept))
    append: list[str] = []
    for want in wants:
        occurrences = found[want.key]
        if want.single:
            append += _settle_single(want, occurrences, replace, notes)
        else:
            append += _settle_options(want, occurrences, replace)
    return WordEdit(replace, tuple(append), tuple(notes))


def _settle_single(want: Want, occurrences: list[_Occurrence],
                   replace: dict[tuple[int, int], str | None], notes: list[str]) -> list[str]:
    if not occurrences:
        return [want.word]
    *earlier, last = occurrences
    for occurrence in earlier:
        replace[occurrence.position] = None
        notes.append(f"removed {occurrence.original}: a later {want.name}= overrides it")
    if last.options != list(want.options):
        replace[last.position] = f"{last.name}={want.options[0]}"
    return []


def _settle_options(want: Want, occurrences: list[_Occurrence],
                    replace: dict[tuple[int, int], str | None]) -> list[str]:
    present = {option for occurrence in occurrences for option in occurrence.options}
    missing = [option for option in want.options if option not in present]
    if occurrences and missing:
        occurrences[-1].options += missing
    for occurrence in occurrences:
        new = f"{occurrence.name}={','.join(occurrence.options)}" if occurrence.options else None
        if new != occurrence.original and not (new is None and "=" not in occurrence.original):
            replace[occurrence.position] = new
    return [want.word] if missing and not occurrences else []
