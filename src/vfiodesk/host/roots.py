"""Opening ``--root``: a directory that mirrors /, or a snapshot archive extracted read-only."""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError

_ROOT_HINT = "give a directory that mirrors / or an archive made by `vfiodesk snapshot`"


def open_root(root: str | os.PathLike[str] | None, stack: ExitStack) -> P.HostPaths:
    """HostPaths for ``root`` (or $VFIODESK_ROOT, or /); archives are extracted to a temp dir
    removed when ``stack`` closes."""
    host = P.HostPaths.from_env(root)
    if host.root.is_dir():
        return host
    import tarfile  # only archives need it; keeps plain --root fast

    if not host.root.exists():
        raise HostReadError(f"root {host.root} does not exist", _ROOT_HINT)
    if not tarfile.is_tarfile(host.root):
        raise HostReadError(f"root {host.root} is neither a directory nor a snapshot archive",
                            _ROOT_HINT)
    target = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vfiodesk-root-")))
    try:
        with tarfile.open(host.root) as archive:
            # The "data" filter refuses absolute paths, links out of the tree and device nodes.
            archive.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise HostReadError(f"snapshot {host.root} is damaged or truncated: {exc}",
                            "take the snapshot again with `vfiodesk snapshot`") from None
    return P.HostPaths(target)
