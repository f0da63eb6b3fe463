"""The hook's no-op path (a VM vfiodesk does not manage) against `python3 -c pass` and a bash
dispatcher in the style of VFIO-Tools (qemu.d/<vm>/<op>/<subop>/*)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.__main__ import Benchmark, Command
from vfiodesk.hook.install import interpreter
from vfiodesk.hook.script import hook_script

# VFIO-Tools' hook_helper, reduced to its dispatch: look for scripts of this VM and phase.
DISPATCHER = """#!/bin/bash
GUEST_NAME="$1"; HOOK_NAME="$2"; STATE_NAME="$3"
BASEDIR="$(dirname $0)"
HOOKPATH="$BASEDIR/qemu.d/$GUEST_NAME/$HOOK_NAME/$STATE_NAME"
set -e
if [ -f "$HOOKPATH" ]; then eval \\"$HOOKPATH\\" "$@"
elif [ -d "$HOOKPATH" ]; then
  while read file; do eval \\"$file\\" "$@"; done <<< "$(find -L "$HOOKPATH" -maxdepth 1 -type f -executable)"
fi
"""

UNMANAGED = """<domain type='kvm'><name>other</name><memory>4194304</memory><devices>
<disk type='file' device='disk'><source file='/var/lib/libvirt/images/other.qcow2'/></disk>
</devices></domain>"""


def benchmarks() -> list[Benchmark]:
    work = Path(tempfile.mkdtemp(prefix="vfiodesk-bench-hook-"))
    ours, theirs, xml = work / "vfiodesk", work / "vfio-tools", work / "domain.xml"
    ours.write_text(hook_script(interpreter(), "/usr/local/lib/vfiodesk/lib-bench"))
    theirs.write_text(DISPATCHER)
    xml.write_text(UNMANAGED * 20)  # a realistic few KiB of XML
    for script in (ours, theirs):
        script.chmod(0o755)
    args = ["other", "prepare", "begin", "-"]
    return [Benchmark(
        name="hook no-op for an unmanaged VM",
        subject=Command("vfiodesk hook", [str(ours), *args], stdin=str(xml)),
        references=[Command("python3 -c pass", [sys.executable, "-c", "pass"], stdin=str(xml)),
                    Command("VFIO-Tools-style bash dispatcher", [str(theirs), *args], stdin=str(xml))],
        goals={"python3 -c pass": 1.3, "VFIO-Tools-style bash dispatcher": 1.0},
    )]
