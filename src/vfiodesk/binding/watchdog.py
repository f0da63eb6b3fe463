"""The single-GPU watchdog: brings the host display back when no release will.

prepare starts it detached (handoff.spawn_watchdog: it must never hold libvirt's hook pipes or
make the hook wait).
It gives the display back when the VM has not reached ``started`` within the bound after
prepare began, or when QEMU is gone while the hand-off still says ``started`` (libvirtd died
or was killed with it, so no release hook runs). It ends as soon as a release begins.
"""

from __future__ import annotations

import sys
import syslog
import time
from collections.abc import Callable

from vfiodesk import paths as P
from vfiodesk.binding.handoff import logged, read_state, release_single_gpu
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.sysfs import read_attr

START_BOUND = 120.0  # seconds from prepare to `started` once libvirt has given up on the domain
# libvirt still starts it (its status file or QEMU exists) but has not said `started`: a slow
# start (huge memory to pre-fault, nested TCG), not a lost one; taking the GPU from under it
# would fail the start.
STARTING_BOUND = 600.0
EXIT_GRACE = 5.0  # QEMU gone and the daemon that ran the hooks gone too: no release will come
# QEMU gone while that daemon lives: it tears the domain down and runs the release hook itself
# (a destroy under load took over 20 s in the lab before release began); only a daemon stuck
# that long is not waited for.
TEARDOWN_BOUND = 120.0
POLL = 1.0


def process_alive(host: P.HostPaths, pid: int) -> bool:
    """The process exists and is not a zombie (proc/PID/stat's third field)."""
    stat = read_attr(host(P.PROC, str(pid), "stat"))
    if stat is None:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def libvirt_starting(host: P.HostPaths, vm: str) -> bool:
    """libvirt still works on the start: its status file for the domain exists (written before
    QEMU runs, removed when the domain stops) or the VM's QEMU runs."""
    if host(P.RUN_LIBVIRT_QEMU, f"{vm}.xml").exists():
        return True
    text = read_attr(host(P.RUN_LIBVIRT_QEMU, f"{vm}.pid"))
    return bool(text and text.isdigit() and process_alive(host, int(text)))


def watch(host: P.HostPaths, vm: str, say: Callable[[str], None], *, bound: float = START_BOUND,
          starting_bound: float = STARTING_BOUND, grace: float = EXIT_GRACE,
          teardown_bound: float = TEARDOWN_BOUND, poll: float = POLL,
          sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait for a release; if none can come, release. Returns why it ended."""
    began = time.monotonic()
    gone_since: float | None = None
    while True:
        state = read_state(host)
        if state is None or state.vm != vm or state.phase in ("releasing", "failed"):
            return "a release began; nothing to do"
        now = time.monotonic()
        reason = None
        limit = starting_bound if libvirt_starting(host, vm) else bound
        if state.phase in ("preparing", "prepared") and now - began > limit:
            reason = f"{vm} did not reach started within {limit:.0f} s"
        elif state.phase == "started" and state.qemu_pid is not None and \
                not process_alive(host, state.qemu_pid):
            gone_since = gone_since if gone_since is not None else now
            daemon_lives = state.daemon_pid is not None and process_alive(host, state.daemon_pid)
            if now - gone_since >= (teardown_bound if daemon_lives else grace):
                reason = f"QEMU (pid {state.qemu_pid}) exited and no release followed"
        if reason is not None:
            say(f"{reason}: giving the host its display back")
            release_single_gpu(host, vm, say)
            return reason
        sleep(poll)


def main(argv: list[str]) -> int:
    root = "/"
    if argv[:1] == ["--root"]:
        root, argv = argv[1], argv[2:]
    if len(argv) != 1:
        print("usage: python -m vfiodesk.binding.watchdog [--root DIR] VM", file=sys.stderr)
        return 2
    vm = argv[0]
    syslog.openlog("vfiodesk-watchdog", syslog.LOG_PID, syslog.LOG_DAEMON)

    def to_syslog(line: str) -> None:
        syslog.syslog(syslog.LOG_INFO, f"{vm}: {line}")

    host = P.HostPaths.from_env(root)
    say = logged(host, vm, to_syslog)  # handoff.log too: every step of a hand-off in one place
    try:
        say(f"watchdog: {watch(host, vm, say)}")
    except VfiodeskError as exc:
        syslog.syslog(syslog.LOG_ERR, f"{vm}: {exc.message} ({exc.hint})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
