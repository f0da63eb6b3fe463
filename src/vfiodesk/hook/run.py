"""What the hook does per operation, for domains vfiodesk manages.

Binding: with ``binding="vfiodesk"`` (hostdevs managed='no') the hook binds the hostdevs'
groups through the binding engine at prepare and gives them back at release. With
``binding="libvirt"`` (managed='yes') libvirt detaches and reattaches the devices itself; the
hook then only checks that the groups are viable and unchanged (libvirt does not), and does
the runtime hugepages and CPU isolation.
"""

from __future__ import annotations

import sys

from vfiodesk.hook.idle import has_nothing_to_prepare

# collections.abc (with collections behind it) is more than a third of an idle prepare's
# imports: for the type checker only (mypy reads TYPE_CHECKING as typing.TYPE_CHECKING).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# The operations the hook acts on, each with the attribute vfiodesk's element must carry for it
# ("": any VM vfiodesk manages); for the others the sh front never starts Python.
ACTING_OPERATIONS = {"prepare": "", "release": "", "started": 'single-gpu="yes"'}
# Operations after which libvirt ignores our status, or where non-zero would kill a running
# VM (reconnect): always 0 there (libvirt.org/hooks.html#qemu_migration).
_ALWAYS_OK = {"stopped", "release", "reconnect", "started", "attach", "restore", "migrate"}


def log(vm: str, message: str) -> None:
    """To syslog (the journal on systemd hosts) and stderr, which libvirt keeps in its log."""
    import syslog

    syslog.openlog("vfiodesk-hook", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_INFO, f"{vm}: {message}")
    print(f"vfiodesk-hook: {vm}: {message}", file=sys.stderr)


def main(argv: Sequence[str], data: bytes) -> int:
    if len(argv) < 2:
        print("vfiodesk-hook: expected: DOMAIN OPERATION SUB-OPERATION EXTRA", file=sys.stderr)
        return 0
    vm, operation = argv[0], argv[1]
    if operation == "prepare" and has_nothing_to_prepare(data):
        return 0  # a VM with nothing to bind costs about one interpreter start: nothing imported
    from vfiodesk.errors import VfiodeskError
    from vfiodesk.paths import HostPaths

    host = HostPaths.from_env()
    def say(line: str) -> None:
        log(vm, line)

    try:
        if operation == "prepare":
            from vfiodesk.hook.actions import prepare

            for line in prepare(host, vm, data, say):
                log(vm, line)
        elif operation == "started":
            from vfiodesk.hook.actions import started

            for line in started(host, vm, data):
                log(vm, line)
        elif operation == "release":
            from vfiodesk.hook.actions import release

            for line in release(host, vm, data, say):
                log(vm, line)
    except VfiodeskError as exc:
        log(vm, f"{operation} failed: {exc.message}")
        if operation in _ALWAYS_OK:
            return 0
        # One line on stderr: libvirt shows it to the user as the start error.
        print(f"vfiodesk: {exc.message} ({exc.hint})" if exc.hint else f"vfiodesk: {exc.message}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback into libvirt's log, never a stranded release
        log(vm, f"{operation} crashed: {type(exc).__name__}: {exc}")
        return 0 if operation in _ALWAYS_OK else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdin.buffer.read()))
