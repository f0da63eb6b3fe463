"""The executable installed in /etc/libvirt/hooks/qemu.d/.

A POSIX sh script: it reads ALL of stdin (libvirt requires it) and leaves at once for domains
without vfiodesk's metadata marker, in about the time of a bare shell; only for ours does it
start Python (-IS: isolated, no site) with vfiodesk's install location on sys.path.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from vfiodesk.domxml.metadata import NAMESPACE

TEMPLATE = """#!/bin/sh
# Installed by `vfiodesk hook install`; remove with `vfiodesk hook uninstall`.
input=$(cat)
{chain}case $input in
  *{marker}*) ;;
  *) exit 0 ;;
esac
printf '%s\\n' "$input" | exec {python} -IS -c {code} "$@"
"""

CODE = """import sys
sys.path[:0] = {paths!r}
from vfiodesk.hook.run import main
sys.exit(main(sys.argv[1:], sys.stdin.buffer.read()))
"""


# libvirt < 6.5 runs only hooks/qemu: the user's own script moves aside and runs first, with
# the same arguments and stdin; its failure stops a start as it did before.
CHAIN = """printf '%s\\n' "$input" | {chained} "$@" || exit $?
"""
CHAINED_NAME = "qemu.vfiodesk-chained"


def hook_script(python: str | None = None, chained: str | None = None) -> str:
    """The script text for this installation (its interpreter and import paths)."""
    import vfiodesk

    package_parent = str(Path(vfiodesk.__file__).resolve().parent.parent)
    site_paths = [p for p in sys.path if p.endswith("site-packages")]
    code = CODE.format(paths=[package_parent, *site_paths])
    chain = CHAIN.format(chained=shlex.quote(chained)) if chained else ""
    return TEMPLATE.format(chain=chain, marker=shlex.quote(NAMESPACE),
                           python=shlex.quote(python or sys.executable),
                           code=shlex.quote(code))
