"""Editing whitespace-separated words in place: the user's spacing around them survives."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_WORD_RE = re.compile(r"\S+")


def split_words(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def splice(text: str, replace: Mapping[int, str | None], append: Sequence[str] = ()) -> str:
    """``text`` with word i replaced by ``replace[i]`` (None removes it and the space before it)
    and ``append`` added after the last word, one space apart."""
    items: list[tuple[str, str]] = []
    position = 0
    for match in _WORD_RE.finditer(text):
        items.append((text[position:match.start()], match.group()))
        position = match.end()
    tail = text[position:]
    kept: list[tuple[str, str]] = []
    lead: str | None = None  # the leading space of the text, kept when its first word goes
    for index, (space, word) in enumerate(items):
        new = replace.get(index, word)
        if new is None:
            if not kept and lead is None:
                lead = space
            continue
        if not kept and lead is not None:
            space = lead
        kept.append((space, new))
    for word in append:
        kept.append((" " if kept else (lead or ""), word))
    if not items:
        tail = "" if append else text
    return "".join(space + word for space, word in kept) + tail
