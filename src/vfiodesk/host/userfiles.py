"""Files the user names (profiles, domain XML, configs): bounded, UTF-8, parsed with limits.

The reading itself is host/sysfs.py's ``read_bytes`` (the one bounded reader); failures here
are InputError (exit 2): the user gave the file and can fix it.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from vfiodesk.errors import InputError
from vfiodesk.host.sysfs import decode_text, read_file_bytes

USER_FILE_LIMIT = 1024 * 1024  # profiles and configs are a few lines
XML_FILE_LIMIT = 8 * 1024 * 1024  # a domain XML with a large <metadata> stays far below


def read_user_bytes(path: str | os.PathLike[str], what: str, limit: int = USER_FILE_LIMIT) -> bytes:
    """A regular file of at most ``limit`` bytes (XML: its parser reads the encoding)."""
    return read_file_bytes(path, limit, what, InputError)


def read_user_text(path: str | os.PathLike[str], what: str, limit: int = USER_FILE_LIMIT) -> str:
    """A regular file of UTF-8 text of at most ``limit`` bytes, or an InputError naming it."""
    return decode_text(read_user_bytes(path, what, limit), f"{what} {os.fspath(path)}", InputError)


def load_toml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A TOML file's table; bad syntax or nesting too deep for the parser is an InputError."""
    text = read_user_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what} {os.fspath(path)} is not valid TOML: {exc}", "fix the file") from None
    except RecursionError:
        raise InputError(f"{what} {os.fspath(path)} nests too deeply", "fix the file") from None
