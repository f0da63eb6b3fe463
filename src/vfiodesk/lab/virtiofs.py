"""The lab's root file system over virtio-fs with the C virtiofsd that Debian 12's QEMU ships.

virtme-ng shares the host's root with the guest through virtiofsd when it finds the Rust
daemon, and otherwise over 9p. 9p has no cache in the guest: every stat and open of a Python
import is a round trip to QEMU, so under TCG one `vfiodesk --help` took 24 s in the guest and
7 s over virtio-fs (measured in the lab at idle). Debian 12 has no Rust virtiofsd package,
but QEMU 7.2 installs the C daemon at /usr/lib/qemu/virtiofsd, which takes other options and
has no read-only mode. This module is a ``virtiofsd`` that virtme-ng can call: it translates
virtme-ng's options and, for the read-only root export, serves a view of the host in which
every mount is read-only (a private mount namespace: the host's own mounts stay as they are),
so the guest cannot write to the host even as root with its root remounted read-write.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vfiodesk import paths as P

_CLONE_NEWNS = 0x00020000  # <linux/sched.h>
_SOCKET_WAIT_S = 10.0


_DAEMON = Path("/", P.QEMU_C_VIRTIOFSD)


def c_daemon() -> Path | None:
    """QEMU's C virtiofsd, where it is the one installed (it has no --shared-dir option)."""
    if not os.access(_DAEMON, os.X_OK):
        return None
    usage = subprocess.run([str(_DAEMON), "--help"], capture_output=True, text=True, check=False)
    text = usage.stdout + usage.stderr
    return _DAEMON if "-o source=" in text and "--shared-dir" not in text else None


def write_shim(directory: Path) -> Path | None:
    """A ``virtiofsd`` in ``directory`` that runs this module, for virtme-ng to find on PATH;
    None where it would not help: a virtiofsd is already on PATH (virtme-ng uses it), QEMU's
    C daemon is missing, or this is not root (the C daemon runs only as root)."""
    if shutil.which("virtiofsd") or os.geteuid() != 0 or c_daemon() is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "virtiofsd"
    shim.write_text(f"#!{sys.executable} -I\nimport sys\n"
                    "from vfiodesk.lab.virtiofs import main\nsys.exit(main(sys.argv[1:]))\n")
    shim.chmod(0o755)
    return directory


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtiofsd", add_help=False)
    parser.add_argument("--socket-path", required=True)
    parser.add_argument("--shared-dir", required=True)
    parser.add_argument("--cache", choices=("auto", "always", "never", "none"), default="auto")
    parser.add_argument("--readonly", action="store_true")
    return parser


# Listed in --help so that virtme-ng asks for a read-only root (it looks for the word).
USAGE = "virtiofsd --socket-path PATH --shared-dir DIR [--cache auto|always|never] [--readonly]\n"


def daemon_argv(daemon: Path, socket_path: str, source: str, cache: str) -> list[str]:
    """The C daemon's command line for virtme-ng's options (its cache mode "never" is "none")."""
    return [str(daemon), f"--socket-path={socket_path}", "-o", f"source={source}",
            "-o", f"cache={'none' if cache == 'never' else cache}", "-o", "sandbox=chroot"]


def mount_points_under(mountinfo: str, top: str) -> list[str]:
    """Mount points at or below ``top`` in /proc/self/mountinfo text, parents first
    (the fifth field, with the kernel's octal escapes for space, tab, newline and backslash)."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == top or point.startswith(top.rstrip("/") + "/"):
            found.append(point)
    return found


def _unescape(field: str) -> str:
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def enter_read_only_view(source: str) -> str:
    """In a new private mount namespace (this process and its children only), bind ``source``
    with all its submounts onto an empty directory and make each of those mounts read-only;
    returns that directory. Raises OSError where any step fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    # One fixed, empty directory serves every lab: each mounts its view there in its own
    # namespace, and nothing is left behind when a lab is killed.
    view = os.path.join(tempfile.gettempdir(), "vfiodesk-lab-root")
    os.makedirs(view, mode=0o700, exist_ok=True)
    found = os.lstat(view)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != 0:
        raise OSError(f"{view} is not a directory of root's")
    # private first: nothing done here may propagate back to the host's mounts
    for argv in (["mount", "--make-rprivate", "/"], ["mount", "--rbind", source, view]):
        subprocess.run(argv, check=True, capture_output=True)
    mountinfo = Path("/", P.PROC_SELF_MOUNTINFO).read_text()
    for point in mount_points_under(mountinfo, view):
        subprocess.run(["mount", "-o", "remount,bind,ro", point], check=True, capture_output=True)
    return view


def main(argv: list[str]) -> int:
    # write_shim checked the daemon's kind once; virtme-ng calls this shim several times per boot.
    daemon = _DAEMON
    if not os.access(daemon, os.X_OK):
        print(f"virtiofsd: {daemon} is not installed", file=sys.stderr)
        return 1
    if argv[:1] in (["--version"], ["-V"]):
        return subprocess.run([str(daemon), "--version"], check=False).returncode
    if argv[:1] in (["--help"], ["-h"]):
        sys.stdout.write(USAGE)
        return 0
    options, _ = _parser().parse_known_args(argv)
    source = options.shared_dir
    if options.readonly:
        try:
            source = enter_read_only_view(source)
        except (OSError, subprocess.CalledProcessError) as exc:
            # virtme-ng then shares the root over 9p, which QEMU keeps read-only itself
            print(f"virtiofsd: no read-only view of {source}: {exc}", file=sys.stderr)
            return 1
    process = subprocess.Popen(daemon_argv(daemon, options.socket_path, source, options.cache),
                               stdout=subprocess.DEVNULL)
    # virtme-ng starts QEMU once the pid file exists; QEMU needs the socket by then.
    deadline = time.monotonic() + _SOCKET_WAIT_S
    while not Path(options.socket_path).is_socket():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            return 1
        time.sleep(0.02)
    Path(f"{options.socket_path}.pid").write_text(f"{process.pid}\n")
    return process.wait()
