"""The hook as libvirt runs it: the installed script, argv, stdin, VFIODESK_ROOT on a tree."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.fuzzkit import environment, real_host_state, time_bound
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.binding.journal import read_records
from vfiodesk.cli.main import main as cli_main
from vfiodesk.domxml.metadata import MARKER
from vfiodesk.errors import ExitStatus
from vfiodesk.hook.run import main


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, intel_4c8t())
    tree.file("sys/bus/pci/drivers/vfio-pci/.keep")
    return tree


def runnable(root: Path, script: Path | None = None) -> Path:
    """The installed script with its code path pointed into the tree (it names the path the
    host will see, /usr/local/lib/vfiodesk/...)."""
    script = script or root / "etc/libvirt/hooks/qemu.d/vfiodesk"
    text = script.read_text()
    script.write_text(text.replace("/usr/local/lib/vfiodesk/", f"{root}/usr/local/lib/vfiodesk/"))
    return script


@pytest.fixture
def script(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run_cli(capsys, "hook", "install", "--root", str(host.root)).status == 0
    return runnable(host.root)


def domain_xml(host: FakeHost, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    result = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root),
                     "--gpu", "01:00", "--cpus", "2", "--binding", "vfiodesk", *extra)
    assert result.status == 0, result.stderr
    return result.stdout


def call(script: Path, host: FakeHost, operation: str, xml: str | bytes,
         sub: str = "begin") -> subprocess.CompletedProcess[str]:
    data = xml if isinstance(xml, bytes) else xml.encode()
    return subprocess.run([str(script), "win10", operation, sub, "-"], input=data.decode("utf-8", "replace"),
                          capture_output=True, text=True, env={**os.environ, "VFIODESK_ROOT": str(host.root)},
                          check=False)


def test_unmanaged_domains_pass_through_untouched(host: FakeHost, script: Path) -> None:
    before = sorted(p.relative_to(host.root) for p in host.root.rglob("*"))
    for operation in ("prepare", "start", "release"):
        done = call(script, host, operation, "<domain type='kvm'><name>other</name></domain>")
        assert done.returncode == 0 and done.stderr == ""
    assert sorted(p.relative_to(host.root) for p in host.root.rglob("*")) == before


def test_prepare_binds_the_group_and_release_gives_it_back(host: FakeHost, script: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    xml = domain_xml(host, capsys)
    prepared = call(script, host, "prepare", xml)
    assert prepared.returncode == 0, prepared.stderr
    records = read_records(host.paths)
    assert set(records) == {"0000:01:00.0", "0000:01:00.1"}
    assert {r.owner for r in records.values()} == {"win10"}
    assert (host.root / "sys/devices/pci0000:00/0000:01:00.0/driver_override").read_text() == "vfio-pci\n"
    released = call(script, host, "release", xml, "end")
    assert released.returncode == 0 and read_records(host.paths) == {}


def test_hardware_drift_refuses_prepare_with_one_line(host: FakeHost, script: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    xml = domain_xml(host, capsys)
    (host.root / "sys/devices/pci0000:00/0000:01:00.0/device").write_text("0x1b81\n")
    done = call(script, host, "prepare", xml)
    assert done.returncode == 1 and "changed since the VM was recorded" in done.stderr
    assert "recorded 10de:1b80 subsystem 1043:8591 group 1; found 10de:1b81" in done.stderr
    assert "vfiodesk vm tune win10 --record-devices" in done.stderr
    assert read_records(host.paths) == {}


def test_runtime_hugepages_and_cpu_isolation(host: FakeHost, script: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    xml = domain_xml(host, capsys, "--hugepages", "--memory", "1G").replace('isolate-cpus="no"',
                                                                          'isolate-cpus="yes"')
    pages = host.file("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    host.file("sys/devices/system/cpu/online", "0-7\n")
    prepared = call(script, host, "prepare", xml)
    assert prepared.returncode == 0, prepared.stderr
    assert pages.read_text() == "512\n"
    assert "would run: systemctl set-property --runtime user.slice AllowedCPUs=0,2-4,6-7" in prepared.stderr
    call(script, host, "release", xml, "end")
    assert pages.read_text() == "0\n"


def test_hugepages_reserved_at_boot_are_used_before_allocating(host: FakeHost, script: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """One budget: `host hugepages` reserved them at boot, the hook allocates only the shortfall."""
    xml = domain_xml(host, capsys, "--hugepages", "--memory", "1G")
    pool = "sys/devices/system/node/node0/hugepages/hugepages-2048kB"
    pages, free = host.file(f"{pool}/nr_hugepages", "512\n"), host.file(f"{pool}/free_hugepages", "512\n")
    prepared = call(script, host, "prepare", xml)
    assert prepared.returncode == 0, prepared.stderr
    assert pages.read_text() == "512\n" and "none allocated" in prepared.stderr
    call(script, host, "release", xml, "end")
    assert pages.read_text() == "512\n"
    free.write_text("100\n")  # another VM holds 412 of them
    call(script, host, "prepare", xml)
    assert pages.read_text() == "924\n"
    call(script, host, "release", xml, "end")
    assert pages.read_text() == "512\n"
    host.file("proc/meminfo", "MemTotal: 33554432 kB\nHugepagesize: 1048576 kB\n")
    giant = host.file("sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages", "0\n")
    call(script, host, "prepare", xml)
    assert giant.read_text() == "1\n" and pages.read_text() == "512\n"


@pytest.mark.parametrize("data", [b"", b"garbage " + MARKER, MARKER + b"<domain>" * 3,
                                  b"<domain xmlns:v='" + MARKER + b"'><devices><hostdev type='pci'>"
                                  b"<source><address bus='zz'/></source></hostdev></devices></domain>"])
def test_bad_stdin_refuses_prepare_and_never_blocks_release(host: FakeHost, script: Path,
                                                            data: bytes) -> None:
    prepared = call(script, host, "prepare", data)
    assert prepared.returncode in (0, 1) and "Traceback" not in prepared.stderr
    released = call(script, host, "release", data, "end")
    assert released.returncode == 0 and "Traceback" not in released.stderr


def test_unknown_metadata_option_is_a_logged_refusal(host: FakeHost, script: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    xml = domain_xml(host, capsys).replace('hugepages="none"', 'hugepages="none" turbo="yes"')
    done = call(script, host, "prepare", xml)
    assert done.returncode == 1 and "unknown vfiodesk option 'turbo'" in done.stderr


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A host tree and a real managed domain XML (vfiodesk binding, runtime hugepages, pinning)."""
    tree = ready_host(tmp_path_factory.mktemp("hook-fuzz") / "host")
    write_topology(tree.root, intel_4c8t())
    tree.file("sys/bus/pci/drivers/vfio-pci/.keep")
    tree.file("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    tree.file("sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages", "0\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli_main(["vm", "create", "win10", "--print-xml", "--root", str(tree.root), "--gpu", "01:00",
                           "--cpus", "2", "--binding", "vfiodesk", "--hugepages", "--memory", "1G"])
    assert status == 0
    xml = out.getvalue().replace('isolate-cpus="no"', 'isolate-cpus="yes"')
    return tree.root, xml.encode()


@st.composite
def damaged_xml(draw: st.DrawFn, xml: bytes) -> bytes:
    """The real domain, then one damage a file, a tool or an attacker could do to it."""
    kind = draw(st.sampled_from(["as-is", "truncate", "insert", "value", "utf16", "latin1", "deep",
                                 "description", "metadata-twice", "huge", "random"]))
    if kind == "truncate":
        return xml[:draw(st.integers(0, len(xml)))]
    if kind == "insert":
        at = draw(st.integers(0, len(xml)))
        return xml[:at] + draw(st.binary(min_size=1, max_size=30)) + xml[at:]
    if kind == "value":  # one attribute value or text node replaced by anything
        spans = [m.span(1) if m.start(1) >= 0 else m.span(2)
                 for m in re.finditer(rb'="([^"]*)"|>([^<]+)<', xml)]
        start, end = draw(st.sampled_from(spans))
        junk = draw(st.sampled_from([b"", b"-1", b"99999999999999999999", b"0-999999999", b"x" * 300,
                                     b"&amp;", b"\xff\xfe", b"0000:zz:00.0", b"1e9"])
                    | st.binary(max_size=12))
        return xml[:start] + junk + xml[end:]
    if kind == "utf16":
        return xml.decode().encode("utf-16")
    if kind == "latin1":
        return b'<?xml version="1.0" encoding="ISO-8859-1"?>\n' + xml.replace(b"win10", b"win\xe9")
    if kind == "deep":
        depth = draw(st.integers(100, 50_000))
        return xml.replace(b"</metadata>", b"<a>" * depth + b"</a>" * depth + b"</metadata>")
    if kind == "description":  # an unmanaged VM that merely mentions the namespace
        return b"<domain type='kvm'><name>other</name><description>" + MARKER + b"</description></domain>"
    if kind == "metadata-twice":
        start = xml.index(b"<metadata>")
        end = xml.index(b"</metadata>") + len(b"</metadata>")
        return xml[:end] + xml[start:end] + xml[end:]
    if kind == "huge":
        return xml.replace(b"</domain>", b"<!--" + b"x" * (9 * 1024 * 1024) + b"--></domain>")
    if kind == "random":
        return MARKER + draw(st.binary(max_size=2000))
    return xml


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), operation=st.sampled_from(["prepare", "release", "reconnect", "bogus"]))
def test_any_stdin_is_handled_without_a_traceback(fuzz_base: tuple[Path, bytes], data: st.DataObject,
                                                  operation: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Real domain XML, damaged, on a fresh fake tree named by VFIODESK_ROOT (never this host's /):
    the hook answers 0 or 1 (0 where libvirt ignores it), within a time bound, and every failure
    is one of vfiodesk's own errors, never a crash."""
    base, xml = fuzz_base
    stdin = data.draw(damaged_xml(xml), label="stdin")
    before = real_host_state()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "host"
        shutil.copytree(base, root, symlinks=True)
        with environment(VFIODESK_ROOT=str(root)), time_bound(30):
            status = main(["win10", operation, "begin", "-"], stdin)
    err = capsys.readouterr().err
    assert status in (0, 1), err
    if operation != "prepare":
        assert status == 0, err
    assert "crashed" not in err and "Traceback" not in err, err
    assert real_host_state() == before


def test_install_keeps_a_users_hook_and_uninstall_removes_only_ours(
        host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    user_hook = host.file("etc/libvirt/hooks/qemu", "#!/bin/sh\nexit 0\n")
    assert run_cli(capsys, "hook", "install", "--root", str(host.root)).status == 0
    status = run_cli(capsys, "hook", "status", "--root", str(host.root)).stdout
    assert "also present, left alone" in status and "executable: yes" in status
    assert run_cli(capsys, "hook", "uninstall", "--root", str(host.root)).status == 0
    assert user_hook.read_text() == "#!/bin/sh\nexit 0\n"
    assert not (host.root / "etc/libvirt/hooks/qemu.d/vfiodesk").exists()
    assert run_cli(capsys, "hook", "status", "--root", str(host.root)).status == 1
    dry = run_cli(capsys, "hook", "install", "--dry-run", "--root", str(host.root))
    assert "would write" in dry.stdout and not (host.root / "etc/libvirt/hooks/qemu.d/vfiodesk").exists()


def test_chain_mode_for_old_libvirt_runs_the_users_hook_first(host: FakeHost, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "user-hook.log"
    user_text = f'#!/bin/sh\ncat > /dev/null\necho "$@" >> {log}\n[ "$1" != broken ]\n'
    user_hook = host.file("etc/libvirt/hooks/qemu", user_text)
    user_hook.chmod(0o750)
    assert run_cli(capsys, "hook", "install", "--chain", "--root", str(host.root)).status == 0
    wrapper = host.root / "etc/libvirt/hooks/qemu"
    chained = host.root / "etc/libvirt/hooks/qemu.vfiodesk-chained"
    assert chained.read_text() == user_text and oct(chained.stat().st_mode)[-3:] == "750"
    # The wrapper names the chained script by its path on the host; point it into the tree.
    wrapper.write_text(wrapper.read_text().replace("/etc/libvirt/hooks/", f"{host.root}/etc/libvirt/hooks/"))
    runnable(host.root, wrapper)
    env = {**os.environ, "VFIODESK_ROOT": str(host.root)}
    unmanaged = "<domain><name>other</name></domain>"
    ok = subprocess.run([str(wrapper), "other", "prepare", "begin", "-"], input=unmanaged, text=True,
                        capture_output=True, env=env, check=False)
    assert ok.returncode == 0 and log.read_text() == "other prepare begin -\n"
    refused = subprocess.run([str(wrapper), "broken", "prepare", "begin", "-"], input=unmanaged,
                             text=True, capture_output=True, env=env, check=False)
    assert refused.returncode == 1  # the user's hook still stops a start, as before
    assert run_cli(capsys, "hook", "uninstall", "--root", str(host.root)).status == 0
    assert wrapper.read_text() == user_text and not chained.exists()


def test_installing_the_other_way_replaces_the_hook_not_doubles_it(
        host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    """libvirt 6.5+ runs hooks/qemu and qemu.d/* both: a --chain install over a plain one (and
    back) leaves one vfiodesk hook, and the user's own script where it belongs."""
    hooks = host.root / "etc/libvirt/hooks"
    user_text = "#!/bin/sh\ncat >/dev/null\n"
    host.file("etc/libvirt/hooks/qemu", user_text).chmod(0o755)
    root = ("--root", str(host.root))
    assert run_cli(capsys, "hook", "install", *root).status == 0
    dry = run_cli(capsys, "hook", "install", "--chain", "--dry-run", *root)
    assert f"would remove {hooks}/qemu.d/vfiodesk" in dry.stdout and (hooks / "qemu.d/vfiodesk").exists()
    chained = run_cli(capsys, "hook", "install", "--chain", *root)
    assert chained.status == 0 and f"removed {hooks}/qemu.d/vfiodesk" in chained.stdout
    assert not (hooks / "qemu.d/vfiodesk").exists()
    assert (hooks / "qemu.vfiodesk-chained").read_text() == user_text
    assert run_cli(capsys, "hook", "status", *root).status == 0
    plain = run_cli(capsys, "hook", "install", *root)
    assert plain.status == 0 and f"put {hooks}/qemu.vfiodesk-chained back as {hooks}/qemu" in plain.stdout
    assert (hooks / "qemu").read_text() == user_text and not (hooks / "qemu.vfiodesk-chained").exists()
    status = run_cli(capsys, "hook", "status", *root)
    assert status.status == 0 and f"also present, left alone: {hooks}/qemu" in status.stdout


def test_a_users_script_is_never_overwritten_by_the_chained_one(
        host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    hooks = host.root / "etc/libvirt/hooks"
    root = ("--root", str(host.root))
    host.file("etc/libvirt/hooks/qemu", "#!/bin/sh\n# first\n").chmod(0o755)
    assert run_cli(capsys, "hook", "install", "--chain", *root).status == 0
    (hooks / "qemu").write_text("#!/bin/sh\n# written since, by hand\n")
    again = run_cli(capsys, "hook", "install", "--chain", *root)
    assert again.status == ExitStatus.REFUSED and "moving one would lose the other" in again.stderr
    gone = run_cli(capsys, "hook", "uninstall", *root)
    assert gone.status == 0 and f"left {hooks}/qemu.vfiodesk-chained alone" in gone.stdout
    assert (hooks / "qemu").read_text() == "#!/bin/sh\n# written since, by hand\n"
    assert (hooks / "qemu.vfiodesk-chained").read_text() == "#!/bin/sh\n# first\n"
