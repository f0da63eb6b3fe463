"""Opening ``--root``: a directory that mirrors /, or a snapshot archive extracted read-only."""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError

ROOT_HINT = "give a directory that mirrors / or an archive made by `vfiodesk snapshot`"


def open_root(root: str | os.PathLike[str] | None, stack: ExitStack) -> P.HostPaths:
    """HostPaths for ``root`` (or $VFIODESK_ROOT, or /); archives are checked member by member
    and extracted to a temp dir removed when ``stack`` closes."""
    host = P.HostPaths.from_env(root)
    if host.root.is_dir():
        return host
    if not host.root.exists():
        raise HostReadError(f"root {host.root} does not exist", ROOT_HINT)
    if not host.root.is_file():  # a FIFO or a device would block or never end
        raise HostReadError(f"root {host.root} is neither a directory nor a snapshot archive",
                            ROOT_HINT)
    from vfiodesk.host.archive import extract_archive  # only archives need it: plain --root stays fast

    target = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vfiodesk-root-")))
    extract_archive(host.root, target)
    return P.HostPaths(target)
