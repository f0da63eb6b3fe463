"""The executable installed in /etc/libvirt/hooks/qemu.d/.

A POSIX sh script. libvirt gives every hook the domain XML on stdin and expects it read. For
operations the hook does not act on it drains stdin (exec cat) and leaves; for prepare and
release it leaves at once unless the XML carries vfiodesk's metadata element (its namespace
declared as an attribute: a mention of the URL in <description> is escaped text, ``&quot;``,
and does not match), so only VMs vfiodesk manages start Python: the resolved, root-owned
interpreter with -I -S, importing only the root-owned copy that `hook install` made.
"""

from __future__ import annotations

import re
import shlex

from vfiodesk.domxml.metadata import NAMESPACE
from vfiodesk.hook.run import ACTING_OPERATIONS

INSTALLED_BY = "# Installed by `vfiodesk hook install`; remove with `vfiodesk hook uninstall`."

TEMPLATE = """#!/bin/sh
{installed_by}
# vfiodesk-python: {python}
# vfiodesk-lib: {lib}
{read}case $input in
  *{element}*) ;;
  *) exit 0 ;;
esac
printf '%s\\n' "$input" | exec {python_quoted} -IS -c {code} "$@"
"""

# Only the operations the hook acts on read stdin into the shell; the rest drain it.
READ = """case $2 in
{cases}  *) exec cat >/dev/null ;;
esac
"""
READ_ALWAYS = """  {operations}) input=$(cat) ;;
"""
READ_WHEN = """  {operation}) input=$(cat)
    case $input in *{attribute}*) ;; *) exit 0 ;; esac ;;
"""

# libvirt < 6.5 runs only hooks/qemu: the user's own script moves aside and runs first, with
# the same arguments and stdin, for every operation; its failure stops a start as before.
CHAIN = """input=$(cat)
printf '%s\\n' "$input" | {chained} "$@" || exit $?
case $2 in
  {acting}) ;;
  *) exit 0 ;;
esac
"""
CHAINED_NAME = "qemu.vfiodesk-chained"

CODE = """import sys
sys.path[:0] = [{lib!r}]
from vfiodesk.hook.run import main
sys.exit(main(sys.argv[1:], sys.stdin.buffer.read()))
"""

_HEADER = re.compile(r"^# vfiodesk-(python|lib): (.+)$", re.MULTILINE)


def hook_script(python: str, lib: str, chained: str | None = None) -> str:
    """The script for interpreter ``python`` and code copy ``lib`` (paths as the host sees them)."""
    acting = "|".join(ACTING_OPERATIONS)
    always = "|".join(op for op, attribute in ACTING_OPERATIONS.items() if not attribute)
    cases = READ_ALWAYS.format(operations=always) + "".join(
        READ_WHEN.format(operation=op, attribute=shlex.quote(" " + attribute))
        for op, attribute in ACTING_OPERATIONS.items() if attribute)
    read = (CHAIN.format(chained=shlex.quote(chained), acting=acting) if chained
            else READ.format(cases=cases))
    element = "xmlns:*" + shlex.quote(f'="{NAMESPACE}"')  # the namespace as an attribute value
    return TEMPLATE.format(installed_by=INSTALLED_BY, python=python, lib=lib, read=read, element=element,
                           python_quoted=shlex.quote(python), code=shlex.quote(CODE.format(lib=lib)))


def script_header(text: str) -> dict[str, str]:
    """The interpreter and code copy an installed script names ({} for other scripts)."""
    return {key: value for key, value in _HEADER.findall(text)}
