"""The lab's graphical session: a display-server stand-in and a `systemctl` that manages it.

The lab has no systemd. ``install()`` puts a ``systemctl`` first on PATH that knows one unit,
``display-manager.service``: ``start`` runs a process that holds /dev/dri/card0 open (as a
display server does), ``stop`` sends it SIGTERM and waits until it is gone, ``is-active`` says
whether it runs. On SIGTERM the stand-in exits at once but leaves a child holding the card a
second longer, as a session's compositor outlives its display manager's unit, so vfiodesk's
wait for the device nodes is exercised for real. Plain sh: under TCG a Python start per
systemctl call would cost seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

UNIT = "display-manager.service"
BIN_DIR = Path("/run/vfiodesk-lab/bin")
PID_FILE = Path("/run/vfiodesk-lab/display-manager.pid")
CARD = "/dev/dri/card0"

# The display server: card0 on fd 3; on TERM a subshell keeps fd 3 one second longer.
_SERVER = f"exec 3<>{CARD}; trap '(sleep 1) & exit 0' TERM; while :; do sleep 0.2; done"

def env_with_systemctl() -> dict[str, str]:
    """This process's environment with the stand-in ``systemctl`` first on PATH: what libvirtd
    (and the hooks it runs) and a user's shell find, as on a host with systemd."""
    return {**os.environ, "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '')}"}


_SYSTEMCTL = f"""#!/bin/sh
# The lab's systemctl (vfiodesk.lab.display_standin): only {UNIT} exists here.
pidfile={PID_FILE}
verb= unit= quiet=
for word in "$@"; do
  case $word in
    --quiet) quiet=1 ;;
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$word; else unit=$word; fi ;;
  esac
done
if [ "$unit" != {UNIT} ]; then
  echo "lab systemctl: only {UNIT} exists here" >&2
  exit 1
fi
running() {{
  pid=$(cat $pidfile 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r /proc/$pid/stat ] || return 1
  state=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f1)
  [ "$state" != Z ]
}}
holds_card() {{
  for fd in /proc/$1/fd/*; do
    [ "$(readlink "$fd")" = {CARD} ] && return 0
  done
  return 1
}}
case $verb in
  is-active)
    if running; then [ -n "$quiet" ] || echo active; exit 0; fi
    [ -n "$quiet" ] || echo inactive
    exit 3 ;;
  start)
    running && exit 0
    mkdir -p {PID_FILE.parent}
    setsid sh -c "{_SERVER}" </dev/null >/dev/null 2>&1 &
    echo $! > $pidfile
    for i in $(seq 50); do
      holds_card $! && exit 0
      sleep 0.1
    done
    exit 1 ;;
  stop)
    running || exit 0
    kill -TERM "$(cat $pidfile)"
    for i in $(seq 100); do
      running || exit 0
      sleep 0.1
    done
    exit 1 ;;
esac
echo "lab systemctl: $verb is not known here" >&2
exit 1
"""


def install() -> str:
    """Write the stand-in systemctl; returns the directory to put first on PATH."""
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    script = BIN_DIR / "systemctl"
    script.write_text(_SYSTEMCTL)
    script.chmod(0o755)
    return str(BIN_DIR)


def running_pid() -> int | None:
    """The stand-in display server's pid while it runs (a zombie does not count)."""
    try:
        pid = int(PID_FILE.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except (OSError, ValueError):
        return None
    return None if stat.rpartition(")")[2].split()[:1] == ["Z"] else pid


def holds_card(pid: int) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == CARD:
                return True
        except OSError:
            continue
    return False
