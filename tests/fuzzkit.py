"""Helpers of the fuzz tests: bounded hypothesis profiles, a time bound, a clean environment,
and the state of this machine that a stray write would change."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("random", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("deep", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


def real_host_state() -> dict[str, object]:
    """What a stray write on this machine would change: bindings, boot and libvirt hook files."""
    state: dict[str, object] = {}
    devices = Path("/sys/bus/pci/devices")
    for device in sorted(devices.iterdir()) if devices.is_dir() else []:
        driver = device / "driver"
        state[str(driver)] = os.readlink(driver) if driver.is_symlink() else None
        with contextlib.suppress(OSError):
            state[str(device / "driver_override")] = (device / "driver_override").read_text()
    for path in ("/etc/default/grub", "/etc/libvirt/hooks", "/run/vfiodesk", "/var/lib/vfiodesk",
                 "/etc/modprobe.d", "/etc/sysctl.d"):
        with contextlib.suppress(OSError):
            info = os.stat(path)
            state[path] = (info.st_mtime_ns, info.st_size,
                           sorted(os.listdir(path)) if os.path.isdir(path) else None)
    return state


@contextlib.contextmanager
def time_bound(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the command ran past {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


