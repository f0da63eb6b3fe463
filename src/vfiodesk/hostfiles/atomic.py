"""Replacing a file so that a crash or a full disk leaves the old file or the new one, never half.

rename(2) within one directory is atomic; the data is fsync'ed before and the directory after
(so the rename itself survives a power cut). Mode and owner are the old file's. Nothing here
follows a link: the temporary file is new (O_EXCL | O_NOFOLLOW, random name), a link in the
target's place is refused, and lock and journal files are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from vfiodesk.errors import VfiodeskError

_HINTS = {
    errno.ENOSPC: "the filesystem is full: free some space and run the command again",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run the command again",
    errno.EROFS: "the filesystem is mounted read-only: remount it read-write first",
    errno.EACCES: "run as root",
    errno.EPERM: "run as root; if it is already root, the file may be immutable (lsattr, chattr -i)",
}


def file_error(shown: str, exc: OSError) -> VfiodeskError:
    """A clear error for ``exc`` on ``shown`` (the path as the user knows it)."""
    return VfiodeskError(f"cannot write {shown}: {exc.strerror or exc}; it was left as it was",
                         _HINTS.get(exc.errno or 0, "fix the cause and run the command again"))


def check_writable(path: Path, shown: str) -> None:
    """Refuse files we must not replace: symlinks (the edit would land elsewhere) and files
    someone made read-only on purpose (root could write them, but should not)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise file_error(shown, exc) from None
    if stat.S_ISLNK(info.st_mode):
        raise VfiodeskError(f"{shown} is a symbolic link; vfiodesk edits only regular files",
                            f"edit the file it points to ({os.readlink(path)}) by hand")
    if not stat.S_ISREG(info.st_mode):
        raise VfiodeskError(f"{shown} is not a regular file", "check what it is")
    if not info.st_mode & 0o222:
        raise VfiodeskError(f"{shown} is read-only (mode {stat.S_IMODE(info.st_mode):04o}); "
                            "nothing was changed",
                            f"if you want vfiodesk to change it: chmod u+w {shown}")


def write_atomic(path: Path, data: bytes, shown: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (mode/owner kept; ``mode`` for a new file)."""
    check_writable(path, shown)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".vfiodesk")
    except OSError as exc:
        raise file_error(shown, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            _keep_metadata(handle.fileno(), old, mode)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise file_error(shown, exc) from None
    fsync_dir(path.parent)


def _keep_metadata(fd: int, old: os.stat_result | None, mode: int) -> None:
    new = os.fstat(fd)
    wanted = stat.S_IMODE(old.st_mode) if old is not None else mode
    if stat.S_IMODE(new.st_mode) != wanted:
        os.fchmod(fd, wanted)
    if old is not None and (old.st_uid, old.st_gid) != (new.st_uid, new.st_gid):
        os.fchown(fd, old.st_uid, old.st_gid)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path, shown: str) -> None:
    """Delete a file vfiodesk created (undo), durably."""
    check_writable(path, shown)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise file_error(shown, exc) from None
    fsync_dir(path.parent)


JOURNAL_LIMIT = 1024 * 1024  # a journal entry is a few hundred bytes


def read_journal_file(path: Path, limit: int = JOURNAL_LIMIT) -> bytes:
    """A journal or state file vfiodesk wrote: a regular file (not a link, FIFO or device),
    at most ``limit`` bytes. Raises ValueError saying what it is otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise ValueError(f"cannot read it: {why}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit} bytes")
    return data


def open_lock(path: Path, shown: str) -> int:
    """A lock file's descriptor (created 0600 if absent; never through a link)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise file_error(shown, exc) from None


def confined(root: Path, relative: str, shown: str) -> Path:
    """``root/relative`` for a path read from a journal: relative, without '..', and with its
    directory inside the root once links are resolved."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or ".." in parts or "\0" in relative:
        raise VfiodeskError(f"{shown} names {relative!r}, which is not a path inside the root",
                            "the journal was changed by hand or by something else: restore the "
                            "file by hand from the backups next to it")
    path = root.joinpath(*[part for part in parts if part not in ("", ".")])
    real_root, real_parent = os.path.realpath(root), os.path.realpath(path.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise VfiodeskError(f"{shown} names /{relative}, whose directory is a link out of the root "
                            f"(to {real_parent})", "check the links under the root; nothing was changed")
    return path
