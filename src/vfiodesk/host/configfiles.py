"""Reading host configuration files as bytes, so an edit can keep every other byte."""

from __future__ import annotations

import os

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError
from vfiodesk.host.sysfs import read_bytes

CONFIG_LIMIT = 1024 * 1024  # configuration files are small; more means the wrong file


def read_config(host: P.HostPaths, relative: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    path = host(relative)
    try:
        data = read_bytes(path, CONFIG_LIMIT + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise HostReadError(f"cannot read /{relative}: {exc.strerror}",
                            "run as root, or check the file's permissions") from None
    if len(data) > CONFIG_LIMIT:
        raise HostReadError(f"/{relative} is larger than {CONFIG_LIMIT // 1024} KiB: not a config file",
                            "check what that file is")
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
        data = read_config(host, f"{relative}/{name}")
        if data is not None and os.path.isfile(host(relative, name)):
            found.append((f"{relative}/{name}", data))
    return found
