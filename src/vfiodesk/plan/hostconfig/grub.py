"""Editing the kernel command line in /etc/default/grub (and /etc/default/grub.d/*.cfg).

grub-mkconfig sources these files as shell (util/grub-mkconfig.in) and passes
GRUB_CMDLINE_LINUX followed by GRUB_CMDLINE_LINUX_DEFAULT to normal boot entries
(util/grub.d/10_linux.in). We only edit assignments we can follow exactly: one quoted or
bare value per line, self-references like "$GRUB_CMDLINE_LINUX_DEFAULT quiet", outside any
if/case/loop. Anything else that sets these variables is refused, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vfiodesk.errors import VfiodeskError
from vfiodesk.plan.hostconfig.change import FileChange, decode, encode
from vfiodesk.plan.hostconfig.params import Want, WordEdit, plan_words
from vfiodesk.plan.hostconfig.words import splice, split_words

LINUX = "GRUB_CMDLINE_LINUX"
DEFAULT = "GRUB_CMDLINE_LINUX_DEFAULT"
_NAMES = f"(?:{DEFAULT}|{LINUX})"
_ASSIGN_RE = re.compile(
    rf"""^(?P<prefix>[ \t]*(?:export[ \t]+)?(?P<name>{_NAMES})=)"""
    r"""(?P<value>"[^"\\`]*"|'[^']*'|[^\s"'\\`;&|<>()#$]*)(?P<trail>[ \t]*(?:#.*)?)$""")
# Anything else that could set the variables: assignments in other shapes, +=, unset, read.
_SETS_RE = re.compile(rf"(?:^|[\s;&|(`]){_NAMES}\+?=|\b(?:unset|read|local|declare|typeset)\b.*\b{_NAMES}\b")
_OPENERS = frozenset({"if", "case", "for", "while", "until", "select"})
_CLOSERS = frozenset({"fi", "esac", "done"})
_QUOTED_RE = re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`")
_HINT = ("edit the file by hand so each GRUB_CMDLINE_LINUX* line is a plain assignment, "
         "or use --boot-loader grubby/kernelstub if your system has one")


class GrubParseError(VfiodeskError):
    """A GRUB defaults file sets the command line in a way we cannot follow safely."""


@dataclass(frozen=True)
class Assignment:
    file: int
    line: int
    name: str
    prefix: str
    quote: str  # '"', "'" or "" (a bare word)
    content: str
    trail: str  # spaces and a comment after the value
    extends: bool  # refers to its own previous value

    def render(self, content: str) -> str:
        quote = self.quote or ('"' if content != self.content else "")
        return f"{self.prefix}{quote}{content}{quote}{self.trail}"


def parse_assignments(files: Sequence[tuple[str, str]]) -> list[Assignment]:
    """Every assignment to the command-line variables, in the order the shell runs them."""
    found: list[Assignment] = []
    for file_index, (path, text) in enumerate(files):
        depth = 0
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            depth += _depth_change(stripped)
            where = f"/{path} line {number}"
            match = _ASSIGN_RE.match(line)
            if match is None:
                if _SETS_RE.search(line):
                    raise GrubParseError(f"{where} sets the kernel command line with shell we do not "
                                         f"follow: {stripped}", _HINT)
                continue
            if depth > 0:
                raise GrubParseError(f"{where} sets {match['name']} inside an if/case/loop block", _HINT)
            found.append(_assignment(file_index, number, match, where))
    return found


def _depth_change(line: str) -> int:
    """Blocks opened minus closed on a line (quoted text and comments aside)."""
    words = re.split(r"[\s;]+", _QUOTED_RE.sub("", line).split("#", 1)[0])
    return sum(word in _OPENERS for word in words) - sum(word in _CLOSERS for word in words)


def _assignment(file_index: int, number: int, match: re.Match[str], where: str) -> Assignment:
    name, value = match["name"], match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    content = value[1:-1] if quote else value
    extends = False
    if quote == '"' and "$" in content:
        for word in split_words(content):
            if word in (f"${name}", f"${{{name}}}"):
                extends = True
            elif "$" in word:
                raise GrubParseError(f"{where} builds {name} from {word}, which we cannot follow", _HINT)
    return Assignment(file_index, number, name, match["prefix"], quote, content, match["trail"], extends)


def live_assignments(assignments: Sequence[Assignment]) -> list[Assignment]:
    """The assignments whose words reach the kernel: a plain assignment discards earlier ones of
    the same variable; one that extends itself keeps them. GRUB_CMDLINE_LINUX's come first."""
    live: dict[str, list[Assignment]] = {LINUX: [], DEFAULT: []}
    for assignment in assignments:
        if assignment.extends:
            live[assignment.name].append(assignment)
        else:
            live[assignment.name] = [assignment]
    return live[LINUX] + live[DEFAULT]


def plan_grub(files: Sequence[tuple[str, bytes]], wants: Sequence[Want]) -> tuple[list[FileChange], WordEdit]:
    """Changed files (first: /etc/default/grub) that give the kernel ``wants``.

    New words go to the last live GRUB_CMDLINE_LINUX_DEFAULT (else GRUB_CMDLINE_LINUX); when
    neither is set, a GRUB_CMDLINE_LINUX_DEFAULT line is added to /etc/default/grub.
    """
    texts = [(path, decode(data)) for path, data in files]
    live = live_assignments(parse_assignments(texts))
    segments = [split_words(assignment.content) for assignment in live]
    edit = plan_words(segments, wants)
    lines = [text.splitlines(keepends=True) for _, text in texts]
    for index, assignment in enumerate(live):
        append = edit.append if index == len(live) - 1 else ()
        replace = edit.in_segment(index)
        if not replace and not append:
            continue
        old = lines[assignment.file][assignment.line - 1]
        ending = old[len(old.rstrip("\r\n")):]
        lines[assignment.file][assignment.line - 1] = (
            assignment.render(splice(assignment.content, replace, append)) + ending)
    if not live and edit.append:
        main = lines[0]
        if main and not main[-1].endswith("\n"):
            main[-1] += "\n"
        main.append(f'{DEFAULT}="{" ".join(edit.append)}"\n')
    changes = [FileChange(path, data, encode("".join(new_lines)))
               for (path, data), new_lines in zip(files, lines, strict=True)]
    return [change for change in changes if change.changed], edit
