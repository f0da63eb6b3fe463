"""The change journal under var/lib/vfiodesk/changes: one directory per applied change, holding
change.json (files, checksums of what we wrote, undo commands) and the original files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError, InputError
from vfiodesk.hostfiles.atomic import open_lock, read_journal_file, write_atomic

_ID_RE = re.compile(r"^(\d{4,})-[a-z0-9-]+$")


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the root
    backup: str | None  # name of the original's copy in the change directory; None: it was absent
    sha256: str  # of what vfiodesk wrote


@dataclass(frozen=True)
class ChangeRecord:
    id: str
    title: str
    created: str
    files: tuple[FileRecord, ...]
    undo_commands: tuple[tuple[str, ...], ...]
    undone: bool = False


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def changes_dir(host: P.HostPaths) -> Path:
    return host(P.VAR_LIB_VFIODESK, "changes")


@contextlib.contextmanager
def locked(host: P.HostPaths) -> Iterator[Path]:
    """One writer of host files at a time."""
    directory = changes_dir(host)
    with open(open_lock(directory / ".lock", f"/{P.VAR_LIB_VFIODESK}/changes/.lock")) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield directory


def new_change_id(host: P.HostPaths, title: str) -> str:
    numbers = [int(match[1]) for record in _dirs(host) if (match := _ID_RE.match(record.name))]
    return f"{max(numbers, default=0) + 1:04d}-{title}"


def save(host: P.HostPaths, record: ChangeRecord) -> None:
    path = changes_dir(host) / record.id / "change.json"
    write_atomic(path, json.dumps(asdict(record), indent=2).encode() + b"\n", f"/{P.VAR_LIB_VFIODESK}"
                 f"/changes/{record.id}/change.json", mode=0o600)


def mark_undone(host: P.HostPaths, record: ChangeRecord) -> ChangeRecord:
    done = replace(record, undone=True)
    save(host, done)
    return done


def read_changes(host: P.HostPaths) -> list[ChangeRecord]:
    """Every journaled change, oldest first."""
    return [_load(directory) for directory in _dirs(host) if (directory / "change.json").is_file()]


def find_change(host: P.HostPaths, change_id: str | None) -> ChangeRecord:
    """The named change, or the newest one not undone yet."""
    records = read_changes(host)
    if change_id is None:
        pending = [record for record in records if not record.undone]
        if not pending:
            raise InputError("there is no vfiodesk change to undo", "list them: vfiodesk host history")
        return pending[-1]
    for record in records:
        if change_id in (record.id, record.id.split("-", 1)[0], str(int(record.id.split("-", 1)[0]))):
            return record
    raise InputError(f"no change {change_id!r} in the journal", "list them: vfiodesk host history")


def _dirs(host: P.HostPaths) -> list[Path]:
    directory = changes_dir(host)
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if _ID_RE.match(path.name))


def _load(directory: Path) -> ChangeRecord:
    path = directory / "change.json"
    try:
        raw = json.loads(read_journal_file(path))
        if not (isinstance(raw, dict) and isinstance(raw["files"], list)
                and all(isinstance(argv, list) for argv in raw["undo_commands"])):
            raise TypeError("its fields are not the lists vfiodesk writes")
        record = ChangeRecord(raw["id"], raw["title"], raw["created"],
                              tuple(FileRecord(f["path"], f["backup"], f["sha256"]) for f in raw["files"]),
                              tuple(tuple(argv) for argv in raw["undo_commands"]), raw["undone"])
        _check_record(record, directory.name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HostReadError(f"the change journal {path} is damaged ({exc})",
                            "restore the files from the backups in that directory by hand") from None
    return record


_BACKUP_NAME = re.compile(r"[0-9]{1,4}\.orig")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_record(record: ChangeRecord, directory: str) -> None:
    """Every field has the type and shape vfiodesk writes (paths are checked against the
    root where they are used: ``confined``)."""
    if record.id != directory:
        raise ValueError(f"its id {record.id!r} is not its directory's name")
    if not all(isinstance(value, str) for value in (record.title, record.created)):
        raise TypeError("title and created must be text")
    if not isinstance(record.undone, bool):
        raise TypeError("undone must be true or false")
    for entry in record.files:
        if not isinstance(entry.path, str) or not isinstance(entry.sha256, str):
            raise TypeError(f"file entry {entry!r} is not path + sha256 text")
        if entry.backup is not None and not (isinstance(entry.backup, str)
                                             and _BACKUP_NAME.fullmatch(entry.backup)):
            raise ValueError(f"backup {entry.backup!r} is not a backup file name (N.orig)")
        if not _SHA256.fullmatch(entry.sha256):
            raise ValueError(f"{entry.sha256!r} is not a sha256 digest")
    for argv in record.undo_commands:
        if not argv or not all(isinstance(arg, str) and "\0" not in arg for arg in argv):
            raise ValueError(f"undo command {argv!r} is not a list of arguments")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
