"""The hook runs only root-owned code: what `hook install` copies, what it refuses, what
`hook status` verifies; and the sh front starts Python only for vfiodesk's VMs and only for
the operations that act."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_hook import runnable
from vfiodesk.domxml.metadata import NAMESPACE
from vfiodesk.errors import ExitStatus
from vfiodesk.hook.install import LIB_DIR, interpreter, unsafe_owners
from vfiodesk.hook.script import hook_script, script_header

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making files root-owned needs root")
NOBODY = 65534


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> FakeHost:
    """One install for the module (copying the code takes a few seconds)."""
    host = ready_host(tmp_path_factory.mktemp("hook") / "host")
    from vfiodesk.cli.main import main

    assert main(["hook", "install", "--root", str(host.root)]) == 0
    return host


def script_of(host: FakeHost) -> Path:
    return host.root / "etc/libvirt/hooks/qemu.d/vfiodesk"


def lib_of(host: FakeHost) -> Path:
    return host.root / script_header(script_of(host).read_text())["lib"].lstrip("/")


def test_install_copies_the_code_root_owned_and_status_verifies_it(
        installed: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    header = script_header(script_of(installed).read_text())
    assert header["python"] == os.path.realpath(sys.executable)
    assert header["lib"].startswith(f"/{LIB_DIR}/lib-")
    lib = lib_of(installed)
    assert (lib / "vfiodesk/hook/run.py").is_file() and (lib / "lxml").is_dir()
    for path in [lib, *lib.rglob("*")]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (0, 0) and not info.st_mode & 0o022, path
        assert stat.S_IMODE(info.st_mode) in (0o755, 0o644), path
    assert unsafe_owners(str(lib), walk=True) == []
    status = run_cli(capsys, "hook", "status", "--root", str(installed.root))
    assert status.status == 0, status.stderr
    assert f"code: {header['lib']} (root-owned copy)" in status.stdout


@pytest.fixture
def copy_of(installed: FakeHost, tmp_path: Path) -> FakeHost:
    """A private copy of the installed tree, to damage."""
    shutil.copytree(installed.root, tmp_path / "host", symlinks=True)
    return FakeHost(tmp_path / "host")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda lib: os.chown(lib / "vfiodesk/hook/actions.py", NOBODY, NOBODY), "owned by uid 65534, not root"),
    (lambda lib: (os.chown(lib / "vfiodesk/hook", 0, NOBODY), os.chmod(lib / "vfiodesk/hook", 0o775)),
     "writable by group 65534"),
    (lambda lib: os.chmod(lib / "lxml", 0o777), "writable by everyone"),
    (lambda lib: shutil.rmtree(lib), "is missing"),
    (lambda lib: (lib / "vfiodesk/hook/actions.py").write_text("import os\n"),
     "was changed since it was installed"),
])
def test_status_fails_when_the_code_is_no_longer_root_only(copy_of: FakeHost, damage: object, message: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    damage(lib_of(copy_of))  # type: ignore[operator]
    result = run_cli(capsys, "hook", "status", "--root", str(copy_of.root))
    assert result.status == 1 and message in result.stderr, result.stderr
    assert "hint: vfiodesk hook install" in result.stderr


def test_the_copy_is_byte_compiled_and_never_runs_stale_byte_code(
        copy_of: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """Every module has a checked-hash .pyc (PEP 552: flags 0b11) made by the hook's interpreter,
    so no start compiles; a source changed after install runs as changed (the interpreter
    hashes the source and drops the .pyc), and status reports the change."""
    lib = lib_of(copy_of)
    modules = sorted(lib.rglob("*.py"))
    assert len(modules) > 100
    for module in modules:
        compiled = module.parent / "__pycache__" / f"{module.stem}.{sys.implementation.cache_tag}.pyc"
        header = compiled.read_bytes()[:16]
        assert int.from_bytes(header[4:8], "little") == 0b11, compiled
        assert header[8:16] == importlib.util.source_hash(module.read_bytes()), compiled
    run = lib / "vfiodesk/hook/run.py"
    run.write_text(run.read_text().replace('vm, operation = argv[0], argv[1]',
                                           'vm, operation = argv[0], argv[1]\n    print("edited")'))
    script = shutil.copy2(script_of(copy_of), copy_of.root / "hook-for-test")
    done = run_hook(runnable(copy_of.root, Path(script)), copy_of.root, "prepare", MANAGED)
    assert (done.returncode, done.stdout) == (0, "edited\n"), done.stderr
    result = run_cli(capsys, "hook", "status", "--root", str(copy_of.root))
    assert result.status == 1 and "was changed since it was installed" in result.stderr


# All that an idle prepare imports, beyond what `python -I -S` has loaded at start: the hook's
# own small modules and the interpreter's expat (no lxml, no collections, no typing).
IDLE_PREPARE_MODULES = ["__future__", "pyexpat", "pyexpat.errors", "pyexpat.model", "vfiodesk",
                        "vfiodesk.domxml", "vfiodesk.domxml.namespace", "vfiodesk.hook", "vfiodesk.hook.idle",
                        "vfiodesk.hook.run"]


def test_a_vm_with_nothing_to_bind_loads_no_binding_code(copy_of: FakeHost) -> None:
    """prepare of a managed VM without hostdevs, hugepages or CPU isolation imports nothing
    more than IDLE_PREPARE_MODULES (hook/idle.py looks with expat); release reads the XML, and the binding
    engine and the hand-off load only where they act."""
    lib = lib_of(copy_of)
    probe = (f"import sys; sys.path[:0] = [{str(lib)!r}]\n"
             "before = set(sys.modules)\n"
             "from vfiodesk.hook.run import main\n"
             "data = sys.stdin.buffer.read()\n"
             "assert main(['win10', 'prepare', 'begin', '-'], data) == 0\n"
             "loaded = sorted(set(sys.modules) - before)\n"
             f"assert loaded == {IDLE_PREPARE_MODULES!r}, loaded\n"
             "assert main(['win10', 'release', 'end', '-'], data) == 0\n"
             "print(sorted(n for n in sys.modules if n.startswith(('vfiodesk.binding', 'vfiodesk.runner',"
             " 'vfiodesk.plan', 'vfiodesk.host.services'))))")
    done = subprocess.run([interpreter(), "-I", "-S", "-c", probe], input=MANAGED, text=True,
                          capture_output=True, env={**os.environ, "VFIODESK_ROOT": str(copy_of.root)},
                          check=False)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_status_fails_when_the_interpreter_is_gone(copy_of: FakeHost,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    lib = script_header(script_of(copy_of).read_text())["lib"]
    script_of(copy_of).write_text(hook_script("/opt/gone/bin/python3", lib))
    result = run_cli(capsys, "hook", "status", "--root", str(copy_of.root))
    assert result.status == 1 and "/opt/gone/bin/python3 is missing" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"), (b"\x7fELF\x02\x01\x01\0\xff\xfe", "binary"),
    (b"#!/bin/sh\nexit 0\n", "not a hook written by this vfiodesk")])
def test_status_on_an_empty_binary_or_foreign_hook_file(tmp_path: Path, content: bytes, message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    host = ready_host(tmp_path / "host")
    host.file("etc/libvirt/hooks/qemu.d/vfiodesk", content)
    result = run_cli(capsys, "hook", "status", "--root", str(host.root))
    assert result.status == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_install_refuses_a_user_owned_interpreter(tmp_path: Path) -> None:
    """vfiodesk run by a copy of Python that a user owns (a user's pyenv or venv --copies)."""
    user_python = tmp_path / "user/bin/python3"
    user_python.parent.mkdir(parents=True)
    shutil.copy2(interpreter(), user_python)
    os.chown(user_python, NOBODY, NOBODY)
    host = ready_host(tmp_path / "host")
    site = [p for p in sys.path if p.endswith("site-packages")]
    src = str(Path(__file__).parent.parent / "src")
    done = subprocess.run([str(user_python), "-c", "import sys; from vfiodesk.cli.main import run; run()",
                           "hook", "install", "--root", str(host.root)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([src, *site]),
                               "PYTHONHOME": sys.base_prefix}, check=False)
    assert done.returncode == ExitStatus.REFUSED, done.stderr
    assert f"the interpreter {user_python}" in done.stderr and "owned by uid 65534" in done.stderr
    assert "hint: install vfiodesk with a root-owned Python" in done.stderr
    assert not (host.root / "etc/libvirt/hooks/qemu.d/vfiodesk").exists()
    assert not (host.root / LIB_DIR).exists()


def test_unsafe_owners_sees_every_directory_above(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "lib").mkdir(parents=True)
    (shared / "lib/mod.py").write_text("")
    assert unsafe_owners(str(shared / "lib/mod.py")) == []
    os.chmod(shared, 0o777)
    assert unsafe_owners(str(shared / "lib/mod.py")) == [f"{shared} is writable by everyone (mode 0777)"]
    os.chmod(shared, 0o1777)  # sticky, like /tmp: nobody else can replace lib
    assert unsafe_owners(str(shared / "lib/mod.py")) == []


MANAGED = f"""<domain type='qemu'><name>win10</name><metadata>
<vfiodesk:vm xmlns:vfiodesk="{NAMESPACE}" version="1"/></metadata></domain>"""


def run_hook(script: Path, root: Path, operation: str, xml: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), "win10", operation, "begin", "-"], input=xml, text=True,
                          capture_output=True, env={**os.environ, "VFIODESK_ROOT": str(root)}, check=False)


def test_python_starts_only_for_the_operations_that_act(tmp_path: Path) -> None:
    """With an interpreter that does not exist, an operation that started Python would fail (127)."""
    script = tmp_path / "hook"
    script.write_text(hook_script("/nonexistent/python3", "/nonexistent/lib"))
    script.chmod(0o755)
    for operation in ("start", "started", "stopped", "reconnect", "migrate", "attach", "restore"):
        done = run_hook(script, tmp_path, operation, MANAGED)
        assert (done.returncode, done.stderr) == (0, ""), operation
    for operation in ("prepare", "release"):
        assert run_hook(script, tmp_path, operation, MANAGED).returncode == 127
    manage = '<vfiodesk:manage single-gpu="yes"/>'
    single_gpu = MANAGED.replace('version="1"/>', f'version="1">{manage}</vfiodesk:vm>')
    assert run_hook(script, tmp_path, "started", single_gpu).returncode == 127  # it records QEMU's pid


def test_an_unmanaged_vm_that_mentions_the_namespace_starts(libvirtd: str, copy_of: FakeHost) -> None:
    """As libvirt hands it over: define a domain whose description and title quote vfiodesk's
    namespace, read libvirt's XML back, give it to the hook."""
    name = f"vfiodesk-test-{uuid.uuid4().hex[:8]}"
    description = f'notes: xmlns:vfiodesk="{NAMESPACE}" &lt;vfiodesk:vm xmlns:v="{NAMESPACE}"/&gt;'
    xml = (f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
           f"<description>{description}</description><os><type>hvm</type></os></domain>")
    virsh = ["virsh", "-c", libvirtd]
    source = copy_of.root / "domain.xml"
    source.write_text(xml)
    subprocess.run([*virsh, "define", str(source)], check=True, capture_output=True)
    try:
        dumped = subprocess.run([*virsh, "dumpxml", name], check=True, capture_output=True, text=True).stdout
    finally:
        subprocess.run([*virsh, "undefine", name], check=False, capture_output=True)
    assert NAMESPACE in dumped
    script = runnable(copy_of.root)
    for operation in ("prepare", "release"):
        done = run_hook(script, copy_of.root, operation, dumped)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
    # The namespace declared on someone else's element: Python looks, finds no vfiodesk:vm, passes.
    foreign = f'<domain><metadata><x:other xmlns:x="{NAMESPACE}"/></metadata></domain>'
    assert run_hook(script, copy_of.root, "prepare", foreign).returncode == 0


@pytest.fixture(scope="module")
def chain_installed(tmp_path_factory: pytest.TempPathFactory) -> FakeHost:
    """`hook install --chain` over a user's own hooks/qemu (libvirt older than 6.5)."""
    host = ready_host(tmp_path_factory.mktemp("chain") / "host")
    host.file("etc/libvirt/hooks/qemu", "#!/bin/sh\ncat >/dev/null\n").chmod(0o755)
    from vfiodesk.cli.main import main

    assert main(["hook", "install", "--chain", "--root", str(host.root)]) == 0
    return host


HOOKS = "etc/libvirt/hooks"
CHAINED = f"/{HOOKS}/qemu.vfiodesk-chained"


def test_status_verifies_a_chained_install(chain_installed: FakeHost,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "hook", "status", "--root", str(chain_installed.root))
    assert result.status == 0, result.stderr
    assert f"installed: {chain_installed.root}/{HOOKS}/qemu\n" in result.stdout
    assert f"chained: {chain_installed.root}{CHAINED} (the user's own hook, run first)" in result.stdout
    assert "also present" not in result.stdout


def _plain(root: Path) -> None:
    """hooks/qemu rewritten as a plain (unchained) hook: the user's script is never run."""
    wrapper = root / HOOKS / "qemu"
    header = script_header(wrapper.read_text())
    wrapper.write_text(hook_script(header["python"], header["lib"]))


def _twice(root: Path) -> None:
    """A plain install on top of the chained one (libvirt 6.5+ runs hooks/qemu and qemu.d/*)."""
    header = script_header((root / HOOKS / "qemu").read_text())
    (root / HOOKS / "qemu.d").mkdir(exist_ok=True)
    (root / HOOKS / "qemu.d/vfiodesk").write_text(hook_script(header["python"], header["lib"]))


@pytest.mark.parametrize(("damage", "message", "fix"), [
    (lambda root: (root / HOOKS / "qemu.vfiodesk-chained").unlink(),
     f"the user's hook {CHAINED}, which the hook runs first, is missing: every VM start fails",
     f"put your hook back at {CHAINED}, or vfiodesk hook install --chain to stop chaining"),
    (lambda root: (root / HOOKS / "qemu.vfiodesk-chained").chmod(0o644), "is not executable",
     f"chmod 0755 {CHAINED}"),
    (lambda root: os.chown(root / HOOKS / "qemu.vfiodesk-chained", NOBODY, NOBODY),
     f"the user's hook {CHAINED}: ", "chown root:root"),
    (_plain, f"the user's hook {CHAINED} is no longer run", "vfiodesk hook install --chain"),
    (lambda root: (root / HOOKS / "qemu").write_text((root / HOOKS / "qemu").read_text() + "\n# mine\n"),
     "qemu was changed since vfiodesk wrote it", "vfiodesk hook install"),
    (_twice, "vfiodesk's hook is installed twice", "vfiodesk hook uninstall, then vfiodesk hook install"),
])
def test_status_reports_a_broken_chain_with_the_fix(chain_installed: FakeHost, tmp_path: Path, damage: Any,
                                                    message: str, fix: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(chain_installed.root, tmp_path / "host", symlinks=True)
    damage(tmp_path / "host")
    result = run_cli(capsys, "hook", "status", "--root", str(tmp_path / "host"))
    assert result.status == 1 and message in result.stderr, result.stderr
    assert fix in result.stderr.split("hint: ")[1], result.stderr


def test_a_missing_chained_hook_does_stop_every_start(chain_installed: FakeHost) -> None:
    """What status warns of: the wrapper names the chained script by its host path, and sh
    fails the hook (127) when it is gone, for every operation, managed VM or not."""
    wrapper = chain_installed.root / HOOKS / "qemu"
    assert CHAINED in wrapper.read_text() and not Path(CHAINED).exists()  # gone on this machine
    for operation in ("prepare", "start", "release"):
        done = run_hook(wrapper, chain_installed.root, operation, "<domain><name>other</name></domain>")
        assert done.returncode == 127, (operation, done.stderr)
