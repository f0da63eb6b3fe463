"""Extracting a snapshot archive for ``--root`` without trusting it.

Every member is checked before anything is written: regular files, directories and relative
symbolic links only; no absolute or ``..`` names; a link must resolve inside the tree when
followed the way the kernel follows it (chains included, which is what CVE-2025-4517 abused in
tarfile's own "data" filter); hard links only to a file earlier in the archive (written as a
copy). The decompressed stream is capped, so a small archive cannot expand without bound, and
so is the member count. Files are then created with ``O_EXCL | O_NOFOLLOW`` below directories
opened with ``O_NOFOLLOW``, so nothing is written through a link.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from vfiodesk.errors import HostReadError, RefusedError
from vfiodesk.host.roots import ROOT_HINT

MAX_MEMBERS = 50_000  # a 300-device, 256-CPU host's snapshot has ~15 000
MAX_EXPANDED_BYTES = 128 * 1024 * 1024  # of tar stream; a real snapshot is a few MiB
MAX_LINK_HOPS = 40  # the kernel's limit for one path walk (ELOOP)
MAX_NAME = 4096  # PATH_MAX
_RETAKE = "take the snapshot again with `vfiodesk snapshot`"

Kind = Literal["file", "dir", "link", "hardlink"]


@dataclass(frozen=True)
class Member:
    parts: tuple[str, ...]  # normalized name, relative to the tree
    kind: Kind
    target: str = ""  # link target (symbolic: as stored; hard: the normalized name)
    executable: bool = False
    info: tarfile.TarInfo | None = None


class _CappedReader(io.RawIOBase):
    """A seekable view of a (decompressed) stream that refuses to go past ``limit`` bytes."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile, limit: int, shown: str) -> None:
        self._inner, self._limit, self._shown = inner, limit, shown

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.tell() + offset}.get(whence)
        if target is None:  # SEEK_END would decompress everything to find the end
            raise OSError("seeking from the end is not supported")
        self._check(target)
        return self._inner.seek(target)

    def read(self, size: int | None = -1) -> bytes:
        # Never ask the decompressor for more than the cap (a huge pax header would otherwise
        # be decompressed into memory before tarfile looks at it).
        allowed = self._limit + 1 - self.tell()
        wanted = allowed if size is None or size < 0 else min(size, allowed)
        data = self._inner.read(max(wanted, 0))
        self._check(self.tell())
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _check(self, position: int) -> None:
        if position > self._limit:
            raise RefusedError(f"snapshot {self._shown} expands to more than "
                               f"{self._limit // (1024 * 1024)} MiB; it was not extracted",
                               f"{_RETAKE}; a real snapshot is a few MiB")


def _decompressed(raw: IO[bytes]) -> IO[bytes] | gzip.GzipFile:
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if magic.startswith(b"\xfd7zXZ"):
        return lzma.LZMAFile(raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    return raw


def extract_archive(archive: Path, target: Path) -> int:
    """Check every member of ``archive``, then write them under the empty directory ``target``.

    Returns the number of members. Raises RefusedError for an unsafe or oversized archive and
    HostReadError for a damaged one; ``target`` may then hold part of the tree (the caller
    removes it)."""
    shown = str(archive)
    try:
        with open(archive, "rb") as raw, _decompressed(raw) as stream:
            capped = _CappedReader(stream, MAX_EXPANDED_BYTES, shown)
            with _open_tar(capped, shown) as tar:
                members = _read_members(tar, shown)
                _check_links(members, shown)
                _write_members(tar, members, target, shown)
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise HostReadError(f"snapshot {shown} is damaged or truncated: {exc}", _RETAKE) from None
    return len(members)


def _open_tar(stream: _CappedReader, shown: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=stream, mode="r:")
    except tarfile.ReadError:
        raise HostReadError(f"root {shown} is neither a directory nor a snapshot archive",
                            ROOT_HINT) from None


def _read_members(tar: tarfile.TarFile, shown: str) -> list[Member]:
    members: list[Member] = []
    kinds: dict[tuple[str, ...], Kind] = {}
    while (info := tar.next()) is not None:
        if len(members) >= MAX_MEMBERS:
            raise RefusedError(f"snapshot {shown} has more than {MAX_MEMBERS} members; it was not "
                               "extracted", f"{_RETAKE}; a real snapshot has a few thousand")
        member = _member(info, shown)
        for end in range(1, len(member.parts)):
            if kinds.get(member.parts[:end], "dir") != "dir":  # tarfile would write through a link
                raise _unsafe(shown, info.name, f"is stored below {'/'.join(member.parts[:end])!r}, "
                                                "which is not a directory (a link or a file)")
        if member.kind == "hardlink" and kinds.get(tuple(member.target.split("/"))) != "file":
            raise _unsafe(shown, info.name, f"is a hard link to {info.linkname!r}, which is not a "
                                            "file earlier in the archive")
        if member.parts in kinds and (member.kind, kinds[member.parts]) != ("dir", "dir"):
            raise _unsafe(shown, info.name, "appears twice")
        kinds[member.parts] = "file" if member.kind == "hardlink" else member.kind
        members.append(member)
    _check_end(tar, shown)
    return members


def _check_end(tar: tarfile.TarFile, shown: str) -> None:
    """tarfile takes a stream that just stops for the end of the archive; a whole archive ends
    with a block of zeros (a snapshot cut short must not replay as a host with fewer devices)."""
    stream = tar.fileobj
    assert stream is not None
    stream.seek(tar.offset)
    if stream.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise HostReadError(f"snapshot {shown} is damaged or truncated: it stops after "
                            "a member without the end-of-archive marker", _RETAKE)
    while stream.read(1024 * 1024):  # to the end, so gzip/xz/bz2 check their length and CRC
        pass


def _unsafe(shown: str, name: str, why: str) -> RefusedError:
    return RefusedError(f"snapshot {shown} is unsafe: member {name!r} {why}; nothing was used",
                        "vfiodesk snapshot writes only files, directories and links inside the tree: "
                        "this archive was made or changed by something else; do not use it as root")


def _normalized(name: str, shown: str, original: str) -> tuple[str, ...]:
    if not name or len(name) > MAX_NAME or "\0" in name:
        raise _unsafe(shown, original, "has an empty, overlong or binary name")
    if name.startswith("/"):
        raise _unsafe(shown, original, "has an absolute name")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _unsafe(shown, original, "has '..' in its name")
    if not parts:
        raise _unsafe(shown, original, "names the tree itself")
    if any(len(part.encode()) > 255 for part in parts):
        raise _unsafe(shown, original, "has a name component longer than 255 bytes")
    return parts


def _member(info: tarfile.TarInfo, shown: str) -> Member:
    parts = _normalized(info.name, shown, info.name)
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return Member(parts, "file", executable=bool(info.mode & 0o111), info=info)
    if info.type == tarfile.DIRTYPE:
        return Member(parts, "dir", info=info)
    if info.type == tarfile.SYMTYPE:
        if not info.linkname or len(info.linkname) > MAX_NAME or "\0" in info.linkname:
            raise _unsafe(shown, info.name, "is a link with an empty or overlong target")
        if info.linkname.startswith("/"):
            raise _unsafe(shown, info.name, f"is a link to the absolute path {info.linkname!r}")
        return Member(parts, "link", target=info.linkname, info=info)
    if info.type == tarfile.LNKTYPE:
        target = _normalized(info.linkname, shown, info.name)
        return Member(parts, "hardlink", target="/".join(target), info=info)
    kinds = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
             tarfile.FIFOTYPE: "a FIFO", tarfile.CONTTYPE: "a contiguous file",
             tarfile.GNUTYPE_SPARSE: "a sparse file"}
    raise _unsafe(shown, info.name, f"is {kinds.get(info.type, f'of tar type {info.type!r}')}")


def _check_links(members: list[Member], shown: str) -> None:
    """Each symbolic link, followed as the kernel would (through other links of the tree,
    '..' after a link applying to the link's target), stays inside the tree."""
    links = {member.parts: member.target for member in members if member.kind == "link"}
    for parts, target in links.items():
        # The link's own directory is reached through links too, so walk it from the top.
        _resolve(links, [*parts[:-1], *target.split("/")], shown, "/".join(parts), target)


def _resolve(links: dict[tuple[str, ...], str], path: list[str], shown: str, name: str,
             target: str) -> None:
    current: list[str] = []
    pending = path[::-1]
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                raise _unsafe(shown, name, f"is a link to {target!r}, which leads out of the tree")
            current.pop()
            continue
        current.append(part)
        followed = links.get(tuple(current))
        if followed is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise _unsafe(shown, name, f"starts a chain of more than {MAX_LINK_HOPS} links "
                                           "(a loop, or a chain built to escape the tree)")
            if followed.startswith("/"):
                raise _unsafe(shown, name, "leads to a link to an absolute path")
            current.pop()
            pending.extend(followed.split("/")[::-1])


def _write_members(tar: tarfile.TarFile, members: list[Member], target: Path, shown: str) -> None:
    top = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for member in members:
            parent = _open_parents(top, member.parts[:-1], shown, "/".join(member.parts))
            try:
                _write_one(tar, member, parent, shown, top)
            finally:
                os.close(parent)
    finally:
        os.close(top)


def _open_parents(top: int, parts: tuple[str, ...], shown: str, name: str) -> int:
    """The directory holding a member, opened component by component without following links."""
    fd = os.dup(top)
    for index, part in enumerate(parts):
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o755, dir_fd=fd)
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise _unsafe(shown, name, f"is stored below {'/'.join(parts[:index + 1])!r}, "
                                                  "which is not a directory (a link or a file)") from None
        os.close(fd)
        fd = child
    return fd


def _write_one(tar: tarfile.TarFile, member: Member, parent: int, shown: str, top: int) -> None:
    leaf, name = member.parts[-1], "/".join(member.parts)
    if member.kind == "dir":
        try:
            os.mkdir(leaf, 0o755, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(leaf, dir_fd=parent, follow_symlinks=False).st_mode):
                raise _unsafe(shown, name, "is a directory over a file or link of the same name") from None
        return
    if member.kind == "link":
        try:
            os.symlink(member.target, leaf, dir_fd=parent)
        except FileExistsError:
            raise _unsafe(shown, name, "appears twice") from None
        return
    data = _data(tar, member, top, shown)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(leaf, flags, 0o755 if member.executable else 0o644, dir_fd=parent)
    except FileExistsError:
        raise _unsafe(shown, name, "appears twice") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _data(tar: tarfile.TarFile, member: Member, top: int, shown: str) -> bytes:
    if member.kind == "hardlink":  # a copy of the earlier file, read back from the tree
        *parents, leaf = member.target.split("/")
        parent = _open_parents(top, tuple(parents), shown, member.target)
        try:
            fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
        finally:
            os.close(parent)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()
    assert member.info is not None
    extracted = tar.extractfile(member.info)
    return extracted.read() if extracted is not None else b""
