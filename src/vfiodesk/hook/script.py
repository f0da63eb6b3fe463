"""The executable installed in /etc/libvirt/hooks/qemu.d/.

It runs Python with -IS (one shebang argument: isolated, no site: ~10 ms), reads ALL of
stdin as libvirt requires, and leaves at once for domains without vfiodesk's metadata marker; only then does
it put vfiodesk's install location on sys.path and import the hook.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vfiodesk.domxml.metadata import MARKER

TEMPLATE = '''#!{python} -IS
# Installed by `vfiodesk hook install`; remove with `vfiodesk hook uninstall`.
import sys
data = sys.stdin.buffer.read()
if {marker!r} not in data:
    sys.exit(0)
sys.path[:0] = {paths!r}
from vfiodesk.hook.run import main
sys.exit(main(sys.argv[1:], data))
'''


def hook_script(python: str | None = None) -> str:
    """The script text for this installation (its interpreter and import paths)."""
    import vfiodesk

    package_parent = str(Path(vfiodesk.__file__).resolve().parent.parent)
    site_paths = [p for p in sys.path if p.endswith("site-packages")]
    return TEMPLATE.format(python=python or sys.executable, marker=MARKER,
                           paths=[package_parent, *site_paths])
