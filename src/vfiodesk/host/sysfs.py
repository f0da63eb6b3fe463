"""The one bounded reader for every file vfiodesk reads (sysfs/procfs attributes, host
configuration, the user's profiles and XML), and small sysfs attribute readers that name the
file on failure.

Every read opens with O_NONBLOCK (a FIFO or device never blocks the open or the read), takes
regular files only (fstat after open: sysfs attributes report st_size 4096 and procfs files 0,
so the size check is done before reading where the size is real and by reading at most one
byte past the limit everywhere), and decodes with a clear error on bad encoding.
"""

from __future__ import annotations

import errno
import os
import stat

from vfiodesk.errors import HostReadError, VfiodeskError

ATTR_LIMIT = 64 * 1024  # a sysfs attribute is at most a page; more means a wrong file
FILE_LIMIT = 64 * 1024 * 1024  # proc/cpuinfo, modules.dep, kernel log: large but bounded
_DAMAGED = "the host tree is damaged; take a fresh snapshot"


class NotRegularFileError(OSError):
    """The path is a FIFO, device, socket or directory, not a file to read."""


class TooLargeError(OSError):
    """The file holds more than the reader's limit."""


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (TooLargeError past it).

    Read in page-sized chunks: procfs sysctl files fail a single huge read (the kernel
    allocates a buffer of the requested size).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise NotRegularFileError(0, kind, os.fspath(path))
        if info.st_size > limit and not _size_is_nominal(info.st_size):
            raise TooLargeError(0, f"larger than {_human(limit)}", os.fspath(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if limit <= ATTR_LIMIT and len(chunk) < limit:
                # An attribute comes whole from the first read (sysfs fills one page at once,
                # fs/sysfs/file.c; a regular file reads short only at its end): no second read.
                break
    finally:
        os.close(fd)
    if size > limit:
        raise TooLargeError(0, f"larger than {_human(limit)}", os.fspath(path))
    return b"".join(chunks)


def _size_is_nominal(size: int) -> bool:
    """sysfs reports every attribute as one page (4096) whatever it holds."""
    return size == 4096


def _human(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"


def read_file_bytes(path: str | os.PathLike[str], limit: int, what: str,
                    error: type[VfiodeskError] = HostReadError) -> bytes:
    """``read_bytes`` with every failure turned into ``error`` naming ``what`` and the path."""
    label = f"{what} {os.fspath(path)}"
    try:
        return read_bytes(path, limit)
    except FileNotFoundError:
        raise error(f"{label} does not exist", "check the path") from None
    except NotRegularFileError as exc:
        raise error(f"{label} is {exc.strerror}", f"give the path of a {what}") from None
    except TooLargeError:
        raise error(f"{label} is larger than {_human(limit)}: not a {what}",
                    f"give the path of a {what}") from None
    except OSError as exc:
        raise error(f"cannot read {label}: {exc.strerror}", "check the path and its permissions") from None


def decode_text(data: bytes, label: str, error: type[VfiodeskError] = HostReadError) -> str:
    """UTF-8 text without NUL bytes (a UTF-16 file, a binary, or another encoding is refused)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        reason = "is UTF-16 text" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "holds binary data"
        raise error(f"{label} {reason}, not UTF-8 text", "save it as UTF-8 text (iconv -t UTF-8)")
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{label} is not UTF-8 text (byte {exc.start} is invalid)",
                    "save it as UTF-8 text (iconv -t UTF-8)") from None


def read_attr(path: str | os.PathLike[str], limit: int = ATTR_LIMIT) -> str | None:
    """The stripped text of an attribute, or None when the file does not exist."""
    try:
        data = read_bytes(path, limit)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotRegularFileError as exc:
        raise HostReadError(f"{path} is {exc.strerror}, not a sysfs attribute", _DAMAGED) from None
    except TooLargeError:
        raise HostReadError(f"{path} is larger than {_human(limit)}, not a sysfs attribute",
                            _DAMAGED) from None
    except OSError as exc:
        raise HostReadError(f"cannot read {path}: {exc.strerror}",
                            "run as root, or check that the root is a readable host tree") from exc
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise HostReadError(f"{path} holds binary data, not text", _DAMAGED) from None
    if "\x00" in text:
        raise HostReadError(f"{path} holds binary data, not text", _DAMAGED)
    return text.strip()


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


def is_kernel_name(name: str) -> bool:
    """A name the kernel gives a driver or device: anything printable but a path separator
    (drivers carry spaces: the lab's watchdog is "i6300ESB timer")."""
    return 0 < len(name) <= 128 and name.isprintable() and "/" not in name and name not in {".", ".."}


def read_link_name(path: str | os.PathLike[str]) -> str | None:
    """The last component of a symlink's target (driver, iommu_group); None when absent.

    A link that loops, or whose target is not a plain name, is junk and raises: shown as a
    name it would be a plausible wrong answer. A dangling link is kept (snapshots store the
    links without the driver directories they point to).
    """
    try:
        target = os.readlink(path)
    except FileNotFoundError:
        return None
    except OSError:
        # A directory standing in for the link (some archivers flatten links).
        return os.path.basename(path) if os.path.isdir(path) else None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HostReadError(f"{path} is a symlink loop", _DAMAGED) from None
    name = os.path.basename(target.rstrip("/"))
    if not is_kernel_name(name):
        raise HostReadError(f"{path} points to {target[:60]!r}, not a sysfs name", _DAMAGED)
    return name
