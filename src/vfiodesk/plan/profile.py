"""Profiles: TOML files whose keys are a command's option names (memory = "8G", gpu = "01:00").

`vm create --profile` and `setup --profile` read theirs here, so one bad file gets the same
error from both; the values' own checks are ``VmRequest.validate``'s, which both run too.
"""

from __future__ import annotations

import os
import types
import typing
from typing import Any

from vfiodesk.errors import InputError
from vfiodesk.host.userfiles import load_toml

_KINDS = {bool: "true or false", int: "a whole number", str: "a string"}


def read_profile(path: str | os.PathLike[str], options: type, *,
                 leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile's values by field name of the dataclass ``options`` (``leave_out``: fields
    the command takes otherwise); a key may be spelt with '-' or '_'. An unknown key or a value
    of the wrong type is an InputError naming the file."""
    data = load_toml(path, "profile")
    expected = {name: _kind(hint) for name, hint in typing.get_type_hints(options).items()
                if name not in leave_out}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in expected:
            raise InputError(f"unknown key {key!r} in profile {os.fspath(path)}",
                             f"known keys: {', '.join(sorted(n.replace('_', '-') for n in expected))}")
        kind = expected[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"profile key {key!r} must be {_KINDS[kind]}, not {value!r}",
                             f"fix {os.fspath(path)}")
        values[name] = value
    return values


def _kind(hint: Any) -> type:
    """bool, int or str from a field's annotation (``X | None`` counts as X)."""
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if hint not in _KINDS:
        raise TypeError(f"a profile cannot hold {hint!r}")  # a new field of another type
    return typing.cast(type, hint)
