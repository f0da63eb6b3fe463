"""Reading host configuration files as bytes, so an edit can keep every other byte."""

from __future__ import annotations

import os

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError
from vfiodesk.host.sysfs import NotRegularFileError, TooLargeError, read_bytes

CONFIG_LIMIT = 1024 * 1024  # configuration files are small; more means the wrong file


def read_config(host: P.HostPaths, relative: str, *, binary_ok: bool = False) -> bytes | None:
    """The file's bytes, or None when it does not exist. ``binary_ok``: any bytes (the editor
    comparing a file with what it wrote); else a file with NUL bytes is refused."""
    path = host(relative)
    try:
        data = read_bytes(path, CONFIG_LIMIT)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotRegularFileError as exc:
        raise HostReadError(f"/{relative} is {exc.strerror}, not a config file",
                            "check what that path is") from None
    except TooLargeError:
        raise HostReadError(f"/{relative} is larger than {CONFIG_LIMIT // 1024} KiB: not a config file",
                            "check what that file is") from None
    except OSError as exc:
        raise HostReadError(f"cannot read /{relative}: {exc.strerror}",
                            "run as root, or check the file's permissions") from None
    # Other encodings are kept byte for byte (edits touch ASCII words only), but NUL bytes mean
    # a binary or UTF-16 file: editing it as text would be silent damage.
    if b"\x00" in data and not binary_ok:
        raise HostReadError(f"/{relative} holds binary data (NUL bytes), not a text config; "
                            "it was left as it was",
                            f"check what /{relative} is; restore it from a backup or save it as UTF-8")
    return data


def read_config_dir(host: P.HostPaths, relative: str, suffix: str) -> list[tuple[str, bytes]]:
    """``(relative path, bytes)`` of the directory's ``*suffix`` files, in glob (name) order."""
    try:
        names = sorted(name for name in os.listdir(host(relative)) if name.endswith(suffix))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise HostReadError(f"cannot list /{relative}: {exc.strerror}", "run as root") from None
    found = []
    for name in names:
        if not os.path.isfile(host(relative, name)):
            continue  # a directory or socket named *.cfg is not sourced
        data = read_config(host, f"{relative}/{name}")
        if data is not None:
            found.append((f"{relative}/{name}", data))
    return found
