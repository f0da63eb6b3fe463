"""Helpers for demo steps: run vfiodesk as a user would, read sysfs back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from vfiodesk.lab.boot import LAB_CACHE_ENV
from vfiodesk.paths import ETC_LIBVIRT_NETWORKS_AUTOSTART, VAR_CACHE_LIBVIRT_QEMU_CAPS


def vfiodesk(*args: str, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the vfiodesk CLI in the guest, the way a user types it; past ``timeout`` it is
    killed and the result is exit 124 with what it printed until then."""
    argv = [sys.executable, "-m", "vfiodesk", *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        def text(output: str | bytes | None) -> str:
            return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
        return subprocess.CompletedProcess(argv, 124, text(exc.stdout),
                                           text(exc.stderr) + f"\nkilled after {timeout:.0f} s")


def vfiodesk_json(*args: str) -> Any:
    return json.loads(vfiodesk(*args, "--json").stdout)


def driver_of(address: str) -> str | None:
    try:
        return os.path.basename(os.readlink(f"/sys/bus/pci/devices/{address}/driver"))
    except OSError:
        return None


def drivers_of(addresses: tuple[str, ...]) -> dict[str, str | None]:
    return {address: driver_of(address) for address in addresses}


def on_drivers(drivers: dict[str, str | None]) -> str:
    """``0000:01:00.0 on vfio-pci, 0000:01:00.1 on no driver``"""
    return ", ".join(f"{address} on {driver or 'no driver'}" for address, driver in drivers.items())


VIRSH = ("virsh", "-c", "qemu:///system")


def start_libvirtd() -> bool:
    """virtlogd + libvirtd in the guest (no systemd there), unless libvirtd already answers;
    True once virsh answers. libvirtd's PATH starts with the lab's stand-in programs (its
    `systemctl`, vfiodesk.lab.display_standin), which the hooks it runs then find."""
    import time

    from vfiodesk.lab.display_standin import env_with_systemctl

    if subprocess.run([*VIRSH, "version"], capture_output=True, check=False).returncode == 0:
        return True
    for directory in ("/var/log/libvirt/qemu", "/var/run/libvirt", "/var/lib/libvirt/qemu/nvram"):
        os.makedirs(directory, exist_ok=True)  # the guest's /var starts empty
    copy_newer_probes(_host_caps_cache(), _GUEST_CAPS_CACHE)
    no_network_autostart()
    subprocess.run(["modprobe", "vfio-pci"], check=False)
    subprocess.run(["virtlogd", "-d"], capture_output=True, check=False)
    subprocess.run(["libvirtd", "-d"], capture_output=True, check=False, env=env_with_systemctl())
    for _ in range(100):
        if subprocess.run([*VIRSH, "version"], capture_output=True, check=False).returncode == 0:
            copy_newer_probes(_GUEST_CAPS_CACHE, _host_caps_cache())
            return True
        time.sleep(0.2)
    return False


# libvirtd probes every QEMU binary when it starts (minutes under TCG, every boot, as the guest's
# /var starts empty). Its cache outlives the boot in the host's lab cache; libvirt itself decides
# whether a cached probe is still valid (same libvirtd and QEMU binaries, same accelerator) and
# probes again when not, so a stale copy costs time, never correctness.
_GUEST_CAPS_CACHE = "/" + VAR_CACHE_LIBVIRT_QEMU_CAPS


def _host_caps_cache() -> str | None:
    host = os.environ.get(LAB_CACHE_ENV)
    return os.path.join(host, "libvirt-qemu-capabilities") if host else None


def copy_newer_probes(source: str | None, target: str | None) -> None:
    """Each *.xml of ``source`` newer than its copy in ``target``, written whole (temp + rename:
    two labs may share the host's cache)."""
    if source is None or target is None or not os.path.isdir(source):
        return
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(source):
        origin, copy = os.path.join(source, name), os.path.join(target, name)
        if not name.endswith(".xml") or (os.path.exists(copy)
                                         and os.path.getmtime(copy) >= os.path.getmtime(origin)):
            continue
        partial = f"{copy}.{os.getpid()}.partial"
        shutil.copy2(origin, partial)
        os.replace(partial, copy)


def no_network_autostart(autostart: str = "/" + ETC_LIBVIRT_NETWORKS_AUTOSTART) -> None:
    """No libvirt network starts with the guest's libvirtd. The host's libvirt package marks its
    NAT network "default" autostart; no lab VM has a NIC, and starting it (bridge, dnsmasq,
    firewall) took 24 s of every libvirtd start under TCG. The guest's /etc is its own overlay:
    the host's autostart links stay."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(autostart):
            os.unlink(os.path.join(autostart, name))


def images_on_ext4(directory: str = "/var/lib/libvirt/images", size: str = "256M") -> None:
    """An ext4 file system for the VMs' disks, as a host has. The guest's /var is a tmpfs
    overlay without O_DIRECT, and vm create's disks use cache='none' (QEMU opens them O_DIRECT)."""
    backing = "/tmp/vfiodesk-images.ext4"
    subprocess.run(["modprobe", "loop"], check=False)
    subprocess.run(["truncate", "-s", size, backing], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", backing], check=True, capture_output=True)
    os.makedirs(directory, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", backing, directory], check=True)


def restart_libvirtd() -> bool:
    """Stop libvirtd by its pid file and start it again, so it sees a hook installed after it
    started (libvirt looks for hook scripts once, when it starts: docs/hooks.html)."""
    import time

    with contextlib.suppress(OSError, ValueError):
        with open("/run/libvirtd.pid") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 15)
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
    return start_libvirtd()


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRSH, *args], capture_output=True, text=True, timeout=300, check=False)


def bar_claims(address: str, iomem: str = "/proc/iomem") -> dict[str, list[str]]:
    """Each memory BAR of ``address`` and who holds it: the names nested under it in /proc/iomem
    (a driver's request_mem_region, efifb's framebuffer). Root sees real addresses."""
    with open(iomem) as handle:
        lines = handle.read().splitlines()
    claims: dict[str, list[str]] = {}
    for index, line in enumerate(lines):
        span, _, name = line.strip().partition(" : ")
        if name != address:
            continue
        depth = len(line) - len(line.lstrip())
        holders = claims.setdefault(span, [])
        for child in lines[index + 1:]:
            child_depth = len(child) - len(child.lstrip())
            if child_depth <= depth:
                break
            holders.append(child.strip().partition(" : ")[2])
    return claims


def console_bound() -> bool:
    """The framebuffer console (fbcon) is bound to a VT (Documentation/driver-api/console.rst)."""
    base = "/sys/class/vtconsole"
    for name in os.listdir(base):
        with open(f"{base}/{name}/name") as label, open(f"{base}/{name}/bind") as bound:
            if "frame buffer" in label.read() and bound.read().strip() == "1":
                return True
    return False


@dataclass
class NestedVm:
    """What a nested QEMU holding devices through VFIO saw on its PCI bus."""

    info_pci: str = ""
    error: str = ""
    expected: tuple[str, ...] = ()

    @property
    def sees_all(self) -> bool:
        return bool(self.info_pci) and all(ids in self.info_pci for ids in self.expected)


def _read_until(stream: IO[bytes], marker: bytes, timeout: float) -> bytes:
    """Bytes from ``stream`` up to ``marker`` (the monitor prompt has no newline to wait for)."""
    import select
    import time

    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 65536) if ready else b""
        if not chunk:
            break
        seen += chunk
    return seen


@contextlib.contextmanager
def holding_in_nested_vm(addresses: tuple[str, ...], timeout: float = 120) -> Iterator[NestedVm]:
    """A nested QEMU (TCG) holding ``addresses`` through vfio-pci for the ``with`` block;
    its ``info pci`` is read while it runs."""
    ids = []
    for address in addresses:
        with open(f"/sys/bus/pci/devices/{address}/vendor") as vendor, \
                open(f"/sys/bus/pci/devices/{address}/device") as device:
            ids.append(f"{vendor.read().strip()[2:]}:{device.read().strip()[2:]}")
    seen = NestedVm(expected=tuple(ids))
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-nodefaults", "-display", "none", "-S",
         "-monitor", "stdio", *(arg for a in addresses for arg in ("-device", f"vfio-pci,host={a}"))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert qemu.stdin is not None and qemu.stdout is not None
    try:
        # The prompt comes once every device is realized (vfio-pci has mapped the BARs).
        banner = _read_until(qemu.stdout, b"(qemu)", timeout)
        if b"(qemu)" in banner:
            qemu.stdin.write(b"info pci\n")
            qemu.stdin.flush()
            seen.info_pci = _read_until(qemu.stdout, b"(qemu)", timeout).decode("utf-8", "replace")
        else:
            seen.error = banner.decode("utf-8", "replace").strip()[-300:]
        yield seen
    finally:
        with contextlib.suppress(OSError):
            qemu.stdin.write(b"quit\n")
            qemu.stdin.close()
        try:
            qemu.wait(timeout=30)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
