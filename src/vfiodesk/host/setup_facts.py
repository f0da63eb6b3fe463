"""What `vfiodesk setup` reads of the host beyond doctor's facts: the boot, systemd, the hook."""

from __future__ import annotations

import os

from vfiodesk import paths as P
from vfiodesk.host.sysfs import read_attr


def read_boot_id(host: P.HostPaths) -> str | None:
    """A random id the kernel makes at each boot (proc(5)); tells a reboot from the same boot."""
    return read_attr(host(P.PROC_BOOT_ID))


def systemd_running(host: P.HostPaths) -> bool:
    return os.path.isdir(host(P.RUN_SYSTEMD_SYSTEM))


def hook_installed(host: P.HostPaths) -> bool:
    """vfiodesk's hook in qemu.d, or chained as hooks/qemu (libvirt < 6.5)."""
    hooks = host(P.ETC_LIBVIRT_HOOKS)
    if os.path.isfile(hooks / "qemu.d" / "vfiodesk"):
        return True
    legacy = read_attr(hooks / "qemu", 1 << 20)
    return legacy is not None and "vfiodesk hook install" in legacy
