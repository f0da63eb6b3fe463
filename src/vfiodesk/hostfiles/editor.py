"""Applying a HostPlan's files with backups and a journal entry, and undoing it exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError, RefusedError, VfiodeskError
from vfiodesk.host.configfiles import CONFIG_LIMIT, read_config
from vfiodesk.hostfiles import journal
from vfiodesk.hostfiles.atomic import check_writable, confined, read_journal_file, remove, write_atomic
from vfiodesk.plan.hostconfig.change import FileChange, HostPlan


def apply_plan(host: P.HostPaths, plan: HostPlan) -> journal.ChangeRecord | None:
    """Write the plan's changed files; None when there was nothing to journal.

    Order: backups and the journal entry first, then the files; if one file fails, those
    already written get their originals back and the entry is removed.
    """
    changes = plan.changed_files
    if not changes and not plan.undo_commands:
        return None
    for change in changes:
        check_writable(host(change.path), f"/{change.path}")
    with journal.locked(host):
        for change in changes:
            if read_config(host, change.path, binary_ok=True) != change.old:
                raise VfiodeskError(f"/{change.path} changed while vfiodesk was planning; nothing written",
                                    "run the command again")
        change_id = journal.new_change_id(host, plan.title)
        directory = journal.changes_dir(host) / change_id
        written: list[FileChange] = []
        try:
            record = _journal(host, change_id, plan)
            for change in changes:
                write_atomic(host(change.path), change.new, f"/{change.path}")
                written.append(change)
        except VfiodeskError as exc:
            try:
                for change in reversed(written):
                    _put_back(host, change.path, change.old)
            except VfiodeskError as again:
                raise VfiodeskError(f"{exc.message}; putting back the files written before failed too: "
                                    f"{again.message}", f"vfiodesk host undo {change_id}") from None
            _discard(directory)
            raise
    return record


def undo_change(host: P.HostPaths, change_id: str | None) -> journal.ChangeRecord:
    """Restore the originals of a change, only where the files still hold what we wrote;
    if any file was changed since, restore nothing and say which."""
    with journal.locked(host):
        record = journal.find_change(host, change_id)
        if record.undone:
            raise RefusedError(f"change {record.id} was already undone", "list them: vfiodesk host history")
        directory = journal.changes_dir(host) / record.id
        restore: list[tuple[str, bytes | None]] = []
        conflicts: list[str] = []
        for entry in record.files:
            confined(host.root, entry.path, f"change {record.id}")
            original = _backup(directory, entry.backup, record.id)
            current = read_config(host, entry.path, binary_ok=True)
            if current is not None and journal.sha256(current) == entry.sha256:
                restore.append((entry.path, original))
            elif current != original:
                where = f"; its original is {directory / entry.backup}" if entry.backup else ""
                conflicts.append(f"/{entry.path} changed since vfiodesk wrote it{where}")
        if conflicts:
            raise RefusedError(f"cannot undo {record.id}: " + "; ".join(conflicts) + ". Nothing was restored",
                               "merge your edits by hand, then undo again or drop the change")
        for path, original in restore:
            _put_back(host, path, original)
        return journal.mark_undone(host, record)


def _backup(directory: Path, name: str | None, change_id: str) -> bytes | None:
    if name is None:
        return None
    try:
        return read_journal_file(directory / name, limit=CONFIG_LIMIT)
    except ValueError as exc:
        raise HostReadError(f"the backup {directory / name} of change {change_id} is unusable ({exc})",
                            "restore that file by hand; nothing was changed") from None


def _put_back(host: P.HostPaths, relative: str, original: bytes | None) -> None:
    if original is None:
        remove(host(relative), f"/{relative}")
    else:
        write_atomic(host(relative), original, f"/{relative}")


def _journal(host: P.HostPaths, change_id: str, plan: HostPlan) -> journal.ChangeRecord:
    """Copies of the originals, then the journal entry that names them."""
    directory = journal.changes_dir(host) / change_id
    files = []
    for number, change in enumerate(plan.changed_files):
        backup = None
        if change.old is not None:
            backup = f"{number}.orig"
            write_atomic(directory / backup, change.old, f"the backup of /{change.path}", mode=0o600)
        files.append(journal.FileRecord(change.path, backup, journal.sha256(change.new)))
    record = journal.ChangeRecord(change_id, plan.title, journal.now(), tuple(files), plan.undo_commands)
    journal.save(host, record)
    return record


def _discard(directory: Path) -> None:
    if directory.is_dir():
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def with_current(host: P.HostPaths, plan: HostPlan) -> HostPlan:
    """The plan with the present content of files it creates (``old`` None): vfiodesk's own
    files may exist from an earlier run, and the journal must back them up."""
    files = tuple(replace(change, old=read_config(host, change.path, binary_ok=True))
                  if change.old is None else change for change in plan.files)
    return replace(plan, files=files)
