"""Booting the lab kernel with virtme-ng and running one command inside it as root.

virtme-ng shares this machine's root filesystem read-only into the guest (with writable
overlays on /etc, /var, /tmp...), so the guest runs this very vfiodesk and Python.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vfiodesk.errors import InputError, VfiodeskError
from vfiodesk.lab.firmware import FIRMWARES, Firmware, find_uefi_firmware
from vfiodesk.lab.kernel import check_lab_kernel, find_lab_kernel
from vfiodesk.lab.layout import IOMMU_KERNEL_ARGS, IOMMU_KINDS, IommuKind, qemu_args
from vfiodesk.lab.virtiofs import write_shim
from vfiodesk.model.sizes import MIB, parse_size

_SETUP_HINT = "run `vfiodesk lab setup` to install the lab's packages"


@dataclass(frozen=True)
class LabSpec:
    """How to boot the lab machine."""

    iommu: IommuKind = "intel"
    # SeaBIOS boots faster under TCG; OVMF gives the kernel a GOP framebuffer (efifb), like a desktop.
    firmware: Firmware = "bios"
    kernel: Path | None = None
    cpus: int = 2
    memory: str = "1G"
    cmdline: str = ""
    qemu_args: str = ""
    bare: bool = False
    accel: str = "tcg"
    env: dict[str, str] = field(default_factory=dict)
    rw_dirs: tuple[Path, ...] = ()  # host directories the guest may write (results, captures)
    numa: tuple[str, ...] = ()  # vng --numa specs: "512M,cpus=0-1"

    def validate(self) -> None:
        if self.iommu not in IOMMU_KINDS:
            raise InputError(f"unknown IOMMU {self.iommu!r}", "use --iommu intel or --iommu amd")
        if self.firmware not in FIRMWARES:
            raise InputError(f"unknown firmware {self.firmware!r}",
                             "use --firmware uefi or --firmware bios")
        if not 1 <= self.cpus <= 64:
            raise InputError(f"--cpus {self.cpus} is out of range", "give 1 to 64 CPUs")
        if parse_size(self.memory, default_unit="M") < 256 * MIB:
            raise InputError(f"--memory {self.memory} is too small", "give at least 256M")
        if self.accel not in ("tcg", "kvm"):
            raise InputError(f"unknown accelerator {self.accel!r}", "use --accel tcg or --accel kvm")
        try:
            shlex.split(self.qemu_args)
        except ValueError as exc:
            raise InputError(f"--qemu-args cannot be split into arguments: {exc}",
                             "quote it like a shell would: --qemu-args '-device foo,bar=1'") from None


def tool_path(name: str) -> str:
    """A lab tool from the venv vfiodesk runs in, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise VfiodeskError(f"{name} is not installed", _SETUP_HINT)
    return found


def build_vng_argv(spec: LabSpec, kernel: Path, script: Path) -> list[str]:
    """The virtme-ng command line that boots ``kernel`` and runs ``script`` inside."""
    memory_mib = parse_size(spec.memory, default_unit="M") // MIB
    append = " ".join((*IOMMU_KERNEL_ARGS[spec.iommu], spec.cmdline)).strip()
    firmware = find_uefi_firmware().qemu_args() if spec.firmware == "uefi" else ()
    qemu = qemu_args(spec.iommu, bare=spec.bare,
                     extra=(*firmware, *shlex.split(spec.qemu_args)))
    argv = [tool_path("vng"), "--run", str(kernel), "--memory", f"{memory_mib}M",
            "--cpus", str(spec.cpus), f"--qemu-opts={shlex.join(qemu)}",
            "--exec", f"sh {shlex.quote(str(script))}"]
    if spec.accel == "tcg":
        # KVM cannot run every guest on every host (nested VMX quirks); TCG always works.
        argv.insert(1, "--disable-kvm")
    if append:
        argv += ["--append", append]
    argv += [f"--rwdir={directory}" for directory in spec.rw_dirs]
    argv += [f"--numa={node}" for node in spec.numa]
    return argv


LAB_CACHE_ENV = "VFIODESK_LAB_CACHE"  # the guest finds the host's lab cache directory here


def lab_cache_dir() -> Path:
    """Where lab boots keep what outlives one boot (libvirt's QEMU probe): the user's cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vfiodesk" / "lab"


def with_lab_cache(spec: LabSpec, cache: Path) -> LabSpec:
    """``spec`` with the host's lab cache writable in the guest, named in its environment."""
    cache.mkdir(parents=True, exist_ok=True)
    return replace(spec, rw_dirs=(*spec.rw_dirs, cache), env={LAB_CACHE_ENV: str(cache), **spec.env})


def write_guest_script(workdir: Path, command: Sequence[str] | str, env: dict[str, str]) -> Path:
    """A script the guest runs: PATH with this venv first, then the command.

    It lives under a host directory the guest sees read-only (virtme-ng shares the root).
    """
    lines = ["set -u", f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines.append(command if isinstance(command, str) else f"exec {shlex.join(command)}")
    script = workdir / "guest.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


@dataclass(frozen=True)
class LabResult:
    returncode: int
    output: str
    seconds: float


def run_in_lab(spec: LabSpec, command: Sequence[str] | str, *,
               on_line: Callable[[str], None] | None = None, timeout: float = 900) -> LabResult:
    """Boot the lab, run ``command`` (argv, or a shell script text) as root, return its status.

    The whole QEMU process group is killed on any exit path (error, timeout, Ctrl-C, SIGTERM,
    SIGHUP), so no stray QEMU stays behind.
    """
    spec.validate()
    kernel = check_lab_kernel(spec.kernel) if spec.kernel else find_lab_kernel()
    tool_path("qemu-system-x86_64")
    if spec.accel == "kvm" and not os.path.exists("/dev/kvm"):
        raise InputError("--accel kvm needs /dev/kvm, and this host has none",
                         "leave --accel out: the lab runs under TCG by default")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # vng calls virtme-run
    lines: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vfiodesk-lab-", dir=_shared_tmp()) as workdir, \
            _signals_unwind():
        spec = with_lab_cache(spec, lab_cache_dir())
        shim = write_shim(Path(workdir, "bin"))
        if shim is not None:  # virtme-ng shares the root over virtio-fs instead of 9p
            env["PATH"] = f"{shim}:{env['PATH']}"
        script = write_guest_script(Path(workdir), command, spec.env)
        argv = build_vng_argv(spec, kernel, script)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
        # A guest that hangs silently never ends the read loop: the watchdog kills the group.
        watchdog = threading.Timer(timeout, _kill_group, (process,))
        watchdog.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n")
                lines.append(line)
                if on_line is not None:
                    on_line(line)
            returncode = process.wait()
        finally:
            watchdog.cancel()
            _kill_group(process)
    seconds = time.monotonic() - started
    if seconds >= timeout:
        # A caller that printed nothing (a test) gets the guest's last words in the error.
        last = "" if on_line else ":\n" + "\n".join(lines[-30:])
        raise VfiodeskError(f"the lab did not finish in {timeout:.0f} s{last}",
                            "raise the timeout, or look at the output above")
    return LabResult(returncode, "\n".join(lines), seconds)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP (a CI timeout, a closed terminal) unwind like Ctrl-C, so the
    ``finally`` that kills QEMU runs. Python can set handlers only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _shared_tmp() -> str:
    """A host directory the guest can read: /tmp is overlaid in the guest but shows the host's files."""
    return tempfile.gettempdir()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        # The leader is gone; anything it left in its group (a QEMU) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
