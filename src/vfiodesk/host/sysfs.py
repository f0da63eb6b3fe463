"""Small readers for sysfs/procfs attribute files that name the file on failure."""

from __future__ import annotations

import os

from vfiodesk.errors import HostReadError

ATTR_LIMIT = 64 * 1024  # a sysfs attribute is at most a page; more means a wrong file
FILE_LIMIT = 64 * 1024 * 1024  # proc/cpuinfo, modules.dep, kernel log: large but bounded


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit`` bytes, read in page-sized chunks: procfs sysctl files fail a single
    huge read (the kernel allocates a buffer of the requested size)."""
    chunks: list[bytes] = []
    size = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_attr(path: str | os.PathLike[str], limit: int = ATTR_LIMIT) -> str | None:
    """The stripped text of an attribute, or None when the file does not exist."""
    try:
        data = read_bytes(path, limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HostReadError(f"cannot read {path}: {exc.strerror}",
                            "run as root, or check that the root is a readable host tree") from exc
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise HostReadError(f"{path} holds binary data, not text",
                            "the host tree is damaged; take a fresh snapshot") from None


def read_hex_attr(path: str | os.PathLike[str], digits: int) -> int | None:
    """A ``0x``-prefixed hex attribute (vendor, device, class); None when absent."""
    text = read_attr(path)
    if text is None:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        raise HostReadError(f"{path} holds {text[:40]!r}, expected a hex number like 0x10de",
                            "the host tree is damaged; take a fresh snapshot") from None
    if value >> (4 * digits):
        raise HostReadError(f"{path} holds {text[:40]!r}, wider than {digits} hex digits",
                            "the host tree is damaged; take a fresh snapshot")
    return value


def read_int_attr(path: str | os.PathLike[str]) -> int | None:
    text = read_attr(path)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise HostReadError(f"{path} holds {text[:40]!r}, expected a number",
                            "the host tree is damaged; take a fresh snapshot") from None


def read_link_name(path: str | os.PathLike[str]) -> str | None:
    """The last component of a symlink's target (driver, iommu_group); None when absent."""
    try:
        return os.path.basename(os.readlink(path))
    except FileNotFoundError:
        return None
    except OSError:
        # A directory standing in for the link (some archivers flatten links).
        return os.path.basename(path) if os.path.isdir(path) else None
