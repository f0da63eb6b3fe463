"""What `vfiodesk setup` reads of the host beyond doctor's facts: the boot, prime-select, the hook."""

from __future__ import annotations

import os

from vfiodesk import paths as P
from vfiodesk.host.sysfs import read_attr
from vfiodesk.host.system import find_program

# nvidia-prime keeps its choice in /etc/prime-discrete; `prime-select query` prints these names.
_PRIME_QUERY = {"on": "nvidia", "off": "intel", "on-demand": "on-demand"}


def read_boot_id(host: P.HostPaths) -> str | None:
    """A random id the kernel makes at each boot (proc(5)); tells a reboot from the same boot."""
    return read_attr(host(P.PROC_BOOT_ID))


def read_prime_select(host: P.HostPaths) -> str | None:
    """What `prime-select query` would say; None when nvidia-prime is not installed."""
    if find_program(host, "prime-select") is None:
        return None
    value = read_attr(host(P.ETC_PRIME_DISCRETE))
    # Without the file nvidia-prime has made no choice yet: the NVIDIA driver drives the desktop.
    return _PRIME_QUERY.get(value or "on", value or "nvidia")


def systemd_running(host: P.HostPaths) -> bool:
    return os.path.isdir(host(P.RUN_SYSTEMD_SYSTEM))


def hook_installed(host: P.HostPaths) -> bool:
    """vfiodesk's hook in qemu.d, or chained as hooks/qemu (libvirt < 6.5)."""
    hooks = host(P.ETC_LIBVIRT_HOOKS)
    if os.path.isfile(hooks / "qemu.d" / "vfiodesk"):
        return True
    legacy = read_attr(hooks / "qemu", 1 << 20)
    return legacy is not None and "vfiodesk hook install" in legacy
