"""What the hook runs, made root-owned: libvirtd runs the hook as root, so the interpreter and
every file it imports must be writable by root alone (a user-owned checkout or venv on the
hook's path would be a way from that user to root).

``hook install`` copies the packages the hook imports (vfiodesk and its dependencies, found by
importing the hook in a child interpreter) into /usr/local/lib/vfiodesk/lib-<digest>, owned by
root, modes 0755/0644, byte-compiled there (libvirtd starts a fresh interpreter for every
operation: without .pyc files each start would compile every module it imports); the hook
script names that directory and the resolved interpreter, and ``hook status`` checks both
again, and that the copy still holds what its digest says.
"""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vfiodesk import paths as P
from vfiodesk.errors import RefusedError, VfiodeskError

LIB_DIR = "usr/local/lib/vfiodesk"
# What the hook imports, lazy imports included (the domain XML parser loads lxml on first use).
HOOK_MODULES = ("vfiodesk.hook.run", "vfiodesk.hook.actions", "vfiodesk.binding.engine",
                "vfiodesk.binding.handoff", "vfiodesk.domxml.tune", "vfiodesk.hostfiles.atomic",
                "vfiodesk.runner", "vfiodesk.host.services", "vfiodesk.model.cpuset", "lxml.etree")
_FIX = ("install vfiodesk with a root-owned Python (e.g. `sudo pip install .` into the system "
        "Python, or a venv under /opt owned by root), then run `vfiodesk hook install` again")

# Run in a child interpreter: the modules the hook imports, and where the stdlib lives.
_PROBE = """import json, os, sys
sys.path[:0] = {paths!r}
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
files = sorted({{m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}})
tops = {{n: getattr(sys.modules.get(n), "__file__", None)
        for n in {{n.split(".")[0] for n in set(sys.modules) - before}}}}
print(json.dumps({{"files": files, "tops": {{n: f for n, f in tops.items() if f}},
                  "tag": sys.implementation.cache_tag, "stdlib": os.path.dirname(os.__file__)}}))
"""


@dataclass(frozen=True)
class Probe:
    files: tuple[str, ...]  # every module file the hook imports
    tops: dict[str, str]  # top-level modules it loaded (beyond the interpreter's start): file
    stdlib: str
    tag: str

    def in_stdlib(self, path: str) -> bool:
        real = os.path.realpath(path)
        return (real.startswith(os.path.realpath(self.stdlib) + os.sep)
                and not any(part in real.split(os.sep) for part in ("site-packages", "dist-packages")))


def interpreter() -> str:
    """The interpreter itself, not a venv's link to it (the hook runs it with -I -S)."""
    return os.path.realpath(sys.executable)


def probe(python: str, paths: list[str], *, isolated: bool) -> Probe:
    argv = [python, *(["-I", "-S"] if isolated else []), "-c",
            _PROBE.format(paths=paths, modules=list(HOOK_MODULES))]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise VfiodeskError(f"{python} cannot import the hook's modules from {paths}: {last}",
                            "run `vfiodesk hook install` again")
    raw = json.loads(done.stdout)
    return Probe(tuple(raw["files"]), dict(raw["tops"]), raw["stdlib"], raw["tag"])


def unsafe_owners(path: str, *, walk: bool = False) -> list[str]:
    """Why ``path`` (its resolved path and every directory above; with ``walk``, everything
    below it too) could be changed by someone other than root; empty when it cannot."""
    problems: list[str] = []
    real = os.path.realpath(path)
    chain = [real, *(str(parent) for parent in Path(real).parents)]
    if real != os.path.abspath(path):  # the link itself and the directories holding it
        chain += [str(parent) for parent in Path(os.path.abspath(path)).parents]
    for entry in dict.fromkeys(chain):
        problems += _owner_problem(entry)
    if walk and os.path.isdir(real):
        for directory, names, files in os.walk(real):
            for name in names + files:
                problems += _owner_problem(os.path.join(directory, name), inside=True)
    return problems


def _owner_problem(path: str, *, inside: bool = False) -> list[str]:
    try:
        info = os.lstat(path)
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    mode = info.st_mode
    if inside and stat.S_ISLNK(mode):
        return [f"{path} is a symbolic link"]
    if info.st_uid != 0:
        return [f"{path} is owned by uid {info.st_uid}, not root"]
    sticky_dir = stat.S_ISDIR(mode) and mode & stat.S_ISVTX  # /tmp: others cannot replace entries
    if mode & stat.S_IWOTH and not sticky_dir:
        return [f"{path} is writable by everyone (mode {stat.S_IMODE(mode):04o})"]
    if mode & stat.S_IWGRP and info.st_gid != 0 and not sticky_dir:
        return [f"{path} is writable by group {info.st_gid} (mode {stat.S_IMODE(mode):04o})"]
    return []


def source_packages(found: Probe) -> list[Path]:
    """The top-level packages or modules the hook imports from outside the standard library."""
    sources = []
    for location in sorted(found.tops.values()):
        if not found.in_stdlib(location):
            path = Path(location)
            sources.append(path.parent if path.name == "__init__.py" else path)
    return sources


def digest(sources: list[Path]) -> str:
    """Names and contents of what would be copied (not the byte code made from it): the same
    install gives the same directory, and a copy whose modules were changed a different digest."""
    hasher = hashlib.sha256()
    for source, relative in sorted(_files(sources), key=lambda item: item[1]):
        hasher.update(relative.encode() + b"\0" + source.read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


def _files(sources: list[Path]) -> list[tuple[Path, str]]:
    found = []
    for top in sources:
        if top.is_file():
            found.append((top, top.name))
            continue
        for directory, names, files in os.walk(top):
            names[:] = sorted(n for n in names if n != "__pycache__")
            for name in sorted(files):
                if not name.endswith((".pyc", ".pyo")):
                    path = Path(directory, name)
                    found.append((path, str(path.relative_to(top.parent))))
    return found


def install_lib(host: P.HostPaths, sources: list[Path], name: str) -> Path:
    """Copy ``sources`` into LIB_DIR/``name`` (root-owned, 0755/0644) and byte-compile it; an
    existing copy of the same digest is kept. Returns the directory under the root.

    The .pyc files are checked-hash ones (PEP 552): the interpreter hashes each module's source
    when it imports it and compiles the source instead of a .pyc made from other text, so
    byte code never runs in place of the copy's .py files, which ``hook status`` verifies."""
    base = host(LIB_DIR)
    final = base / name
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    staging = Path(tempfile.mkdtemp(dir=base, prefix=".staging-"))  # 0700, new: nobody else's
    try:
        for source, relative in _files(sources):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target, follow_symlinks=True)
            os.chmod(target, 0o755 if os.stat(source).st_mode & 0o111 else 0o644)
        compile_lib(staging, f"/{LIB_DIR}/{name}")
        for directory, names, files in os.walk(staging):
            os.chown(directory, 0, 0)
            os.chmod(directory, 0o755)
            for entry in names + files:
                os.chown(os.path.join(directory, entry), 0, 0, follow_symlinks=False)
            for entry in files:
                path = os.path.join(directory, entry)
                if not os.stat(path).st_mode & 0o111:
                    os.chmod(path, 0o644)
        os.rename(staging, final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise VfiodeskError(f"cannot copy the hook's code to /{LIB_DIR}: {exc.strerror or exc}",
                            "run as root, with space on /usr/local") from None
    return final


def compile_lib(lib: Path, shown: str) -> None:
    """Byte code for every module of the copy in ``lib`` (at ``shown`` when it runs), made by
    this interpreter (the hook's: its cache tag). A module that does not compile (a test file
    of a dependency) keeps no .pyc; the interpreter reports it if the hook ever imports it."""
    compileall.compile_dir(lib, ddir=shown, quiet=2, workers=1,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def copy_changes(lib: Path) -> list[str]:
    """Why the copy in ``lib`` no longer holds what its name's digest says; empty when it does."""
    tops = sorted(entry for entry in lib.iterdir() if entry.name != "__pycache__")
    if lib.name != f"lib-{digest(tops)}":
        return [f"the hook's code in {lib} was changed since it was installed "
                "(its modules no longer match the digest in its name)"]
    return []


def remove_other_libs(host: P.HostPaths, keep: str) -> list[Path]:
    """Older copies no installed hook names any more."""
    base = host(LIB_DIR)
    removed = []
    for entry in sorted(base.glob("lib-*")) + sorted(base.glob(".staging-*")):
        if entry.name != keep and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
            removed.append(entry)
    return removed


def check_runnable(python: str, lib: Path) -> list[str]:
    """Problems that would let a non-root user change what the hook runs, checked as the hook
    runs: ``python -I -S`` importing the hook's modules from ``lib`` only."""
    problems = unsafe_owners(python) + unsafe_owners(str(lib), walk=True)
    if problems:
        return problems
    found = probe(python, [str(lib)], isolated=True)
    inside = os.path.realpath(lib) + os.sep
    for path in found.files:
        if not (os.path.realpath(path).startswith(inside) or found.in_stdlib(path)):
            problems.append(f"the hook imports {path}, outside {lib} and the standard library")
        problems += unsafe_owners(path)
    return sorted(set(problems + unsafe_owners(found.stdlib)))


def refuse_unsafe(problems: list[str], what: str) -> None:
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise RefusedError(f"{what}: a non-root user could change the code libvirtd runs as root: "
                           f"{shown}", _FIX)
