"""What the hook adds to `virsh start` of a VM vfiodesk manages (type qemu, no hostdevs, so
prepare and release have nothing to do), on a real libvirtd, median of N starts each:
no hook, an empty sh hook (libvirt's own cost of running hooks), the hook as installed, and
the same hook starting Python for every operation (how it was before); the reference is one
start of the hook's interpreter (`python -I -S -c pass`).

The daemon is private: it runs in its own mount namespace with a private /run, its own
/etc/libvirt/hooks, domain configs and state, so this host's libvirtd and hooks are untouched.
Needs root and libvirtd/virtlogd/qemu-system-x86_64; prints why when it cannot run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vfiodesk.domxml.metadata import NAMESPACE

DOMAIN = f"""<domain type='qemu'><name>vfiodesk-bench</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><video><model type='none'/></video>
</devices><metadata><vfiodesk:vm xmlns:vfiodesk="{NAMESPACE}"/></metadata></domain>"""

# Run inside the namespace: set up private state, start the daemons, time the starts.
SETUP = """set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lock
for private in etc/libvirt/hooks etc/libvirt/qemu var/lib/libvirt var/cache/libvirt var/log/libvirt; do
  mkdir -p "$W/$private" "/$private"
  mount --bind "$W/$private" "/$private"
done
mount -t tmpfs tmpfs /usr/local/lib
mkdir /usr/local/lib/vfiodesk
mount --bind "$W/root/usr/local/lib/vfiodesk" /usr/local/lib/vfiodesk
virtlogd -d
libvirtd -d
for i in $(seq 100); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
status=0
"$PYTHON" "$W/timing.py" || status=$?
# The daemons started above, by their pid files in the private /run (qemu went with destroy).
kill "$(cat /run/libvirtd.pid)" "$(cat /run/virtlogd.pid)" || true
exit $status
"""

TIMING = """import json, os, statistics, subprocess, sys, time
hooks, variants, repeat, python = json.load(open(os.environ["W"] + "/args.json"))
virsh = ["virsh", "-c", "qemu:///system", "-q"]
def run(*args):
    done = subprocess.run([*virsh, *args], capture_output=True, text=True, timeout=120)
    if done.returncode:
        sys.exit(f"virsh {' '.join(args)}: {done.stderr.strip()}")
run("define", os.environ["W"] + "/domain.xml")
def use(variant):
    target = os.path.join(hooks, "qemu.d", "vfiodesk")
    if os.path.exists(target):
        os.unlink(target)
    if variant:
        os.symlink(variants[variant], target)
samples = {name: [] for name in ["none", *variants]}
for index in range(repeat + 1):
    for name in samples:
        use(None if name == "none" else name)
        started = time.perf_counter()
        run("start", "vfiodesk-bench")
        took = time.perf_counter() - started
        run("destroy", "vfiodesk-bench")
        if index:
            samples[name].append(took)
python_start = []
for index in range(repeat + 1):
    started = time.perf_counter()
    subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)
    if index:
        python_start.append(time.perf_counter() - started)
print(json.dumps({"starts": {k: statistics.median(v) for k, v in samples.items()},
                  "python": statistics.median(python_start)}))
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace and libvirtd)"
    for program in ("unshare", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"):
        if shutil.which(program) is None:
            return f"needs {program}"
    return None


def report(repeat: int) -> list[str]:
    why = _missing()
    if why:
        return [f"hook cost at virsh start: skipped ({why})"]
    repeat = max(repeat, 10)
    work = Path(tempfile.mkdtemp(prefix="vfiodesk-bench-start-"))
    try:
        return _measure(work, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path, repeat: int) -> list[str]:
    root = work / "root"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "vfiodesk", "hook", "install", "--root", str(root)], check=True,
                   capture_output=True)
    installed = root / "etc/libvirt/hooks/qemu.d/vfiodesk"
    text = installed.read_text()
    variants = work / "variants"
    variants.mkdir()
    (variants / "hook").write_text(text)
    # The same script, but Python for every operation (the front before this change).
    every = text.replace("prepare|release) input=$(cat) ;;", "*) input=$(cat) ;;")
    (variants / "every-operation").write_text(every)
    # The floor any hook pays (libvirt spawning a script for each operation): drain stdin, exit.
    (variants / "empty").write_text("#!/bin/sh\nexec cat >/dev/null\n")
    for script in variants.iterdir():
        script.chmod(0o755)
    hooks = work / "etc/libvirt/hooks"
    (hooks / "qemu.d").mkdir(parents=True)
    shutil.copy2(variants / "hook", hooks / "qemu.d/vfiodesk")  # present at daemon start
    (work / "domain.xml").write_text(DOMAIN)
    (work / "timing.py").write_text(TIMING)
    python = text.split("# vfiodesk-python: ", 1)[1].split("\n", 1)[0]
    (work / "args.json").write_text(json.dumps(
        ["/etc/libvirt/hooks", {name: str(variants / name) for name in ("empty", "hook", "every-operation")},
         repeat, python]))
    lines = _direct(work, variants, python, repeat)
    done = subprocess.run(["unshare", "--mount", "sh", "-c", SETUP],
                          env={**os.environ, "W": str(work), "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["?"])[-1]
        return [*lines, f"hook cost at virsh start: failed ({why})"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    starts, python_start = result["starts"], result["python"]
    none = starts["none"]
    lines += [f"hook cost at virsh start (managed VM, type qemu, no hostdevs, median of {repeat}):",
             f"  no hook {none * 1000:.0f} ms; one `python -I -S -c pass` {python_start * 1000:.0f} ms"]
    empty = starts["empty"]
    lines.append(f"  an empty sh hook {empty * 1000:.0f} ms: ratio {empty / none:.2f}x (libvirt's own cost "
                 "of running a hook at each operation)")
    for name, label in (("hook", "vfiodesk hook"), ("every-operation", "Python for every operation")):
        added = starts[name] - empty
        goal = f" (goal <= 1.00: {'met' if added <= python_start else 'MISSED'})" if name == "hook" else ""
        lines.append(f"  {label} {starts[name] * 1000:.0f} ms: ratio {starts[name] / none:.2f}x to no hook, "
                     f"{starts[name] / empty:.2f}x to an empty hook; added over the empty hook "
                     f"{added * 1000:.0f} ms = {added / python_start:.2f} Python starts{goal}")
    return lines


# The operations libvirt runs the hook for during `virsh start` (libvirt.org/hooks.html).
START_OPERATIONS = (("prepare", "begin"), ("start", "begin"), ("started", "begin"))


def _direct(work: Path, variants: Path, python: str, repeat: int) -> list[str]:
    """The hook scripts run as libvirtd runs them for one start, without libvirtd: the scripts'
    own cost, wall and CPU (median of ``repeat``), steadier than whole starts on a busy host."""
    lib = work / "root/usr/local/lib/vfiodesk"
    scripts = {}
    for name in ("empty", "hook", "every-operation"):
        scripts[name] = work / f"direct-{name}"
        scripts[name].write_text((variants / name).read_text().replace("/usr/local/lib/vfiodesk", str(lib)))
        scripts[name].chmod(0o755)
    domain = work / "direct-domain.xml"
    domain.write_text(DOMAIN)
    env = {**os.environ, "VFIODESK_ROOT": str(work / "root")}

    def one_start(name: str) -> None:
        for operation, sub in START_OPERATIONS:
            with open(domain, "rb") as stdin:
                subprocess.run([str(scripts[name]), "vfiodesk-bench", operation, sub, "-"], stdin=stdin,
                               env=env, check=True, stdout=subprocess.DEVNULL)

    def bare() -> None:
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)

    runs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ("python", *scripts)}
    for index in range(repeat + 1):
        for name, call in (("python", bare), *((name, lambda n=name: one_start(n)) for name in scripts)):
            before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            call()
            wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
            if index:
                runs[name][0].append(wall)
                runs[name][1].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    wall = {name: statistics.median(samples[0]) for name, samples in runs.items()}
    cpu = {name: statistics.median(samples[1]) for name, samples in runs.items()}
    lines = [f"hook scripts for one start ({', '.join(op for op, _ in START_OPERATIONS)}), run directly, "
             f"median of {repeat}: one `python -I -S -c pass` {wall['python'] * 1000:.0f} ms wall, "
             f"{cpu['python'] * 1000:.0f} ms CPU; an empty sh hook {wall['empty'] * 1000:.0f} ms wall"]
    for name, label in (("hook", "vfiodesk hook"), ("every-operation", "Python for every operation")):
        added, added_cpu = wall[name] - wall["empty"], cpu[name] - cpu["empty"]
        goal = f" (goal <= 1.00: {'met' if added <= wall['python'] else 'MISSED'})" if name == "hook" else ""
        lines.append(f"  {label}: added over the empty hook {added * 1000:.0f} ms wall = "
                     f"{added / wall['python']:.2f} Python starts{goal}; CPU {added_cpu * 1000:.0f} ms = "
                     f"{added_cpu / cpu['python']:.2f} starts' CPU")
    return lines


if __name__ == "__main__":
    started = time.perf_counter()
    print("\n".join(report(int(sys.argv[1]) if len(sys.argv) > 1 else 10)))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
