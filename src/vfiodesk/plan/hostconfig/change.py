"""What a host-configuration command would change: files, commands, and what to tell the user."""

from __future__ import annotations

from dataclasses import dataclass

Argv = tuple[str, ...]


def decode(data: bytes) -> str:
    """Text that encodes back to the same bytes, whatever the file held."""
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class FileChange:
    """One file's content before (None: absent) and after."""

    path: str  # relative to the root, as in paths.py ("etc/default/grub")
    old: bytes | None
    new: bytes

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass(frozen=True)
class HostPlan:
    """Files to write, then commands to run; undo restores the files, then runs undo_commands."""

    title: str
    files: tuple[FileChange, ...] = ()
    commands: tuple[Argv, ...] = ()
    undo_commands: tuple[Argv, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changed_files(self) -> tuple[FileChange, ...]:
        return tuple(change for change in self.files if change.changed)

    @property
    def has_work(self) -> bool:
        return bool(self.changed_files or self.commands)

    def merge(self, other: HostPlan) -> HostPlan:
        """Both plans as one change (undone together)."""
        return HostPlan(self.title, self.files + other.files, self.commands + other.commands,
                        self.undo_commands + other.undo_commands, self.notes + other.notes,
                        self.warnings + other.warnings)
