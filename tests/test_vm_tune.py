"""`vm tune` on domains other people wrote (tests/data/realworld, see SOURCES there) and on
vfiodesk's own: nothing of theirs lost, idempotent, schema-valid, a diff of real changes only,
and the user's choices kept unless an option asks otherwise."""

from __future__ import annotations

import difflib
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from bench.tune_diff import CORPUS, diff_lines, fake_host, really_changed_lines
from lxml import etree

from tests.cli import CliResult, run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_pinning import Core, intel_4c8t, write_topology
from vfiodesk.domxml.document import DomainDocument
from vfiodesk.errors import ExitStatus
from vfiodesk.hook.actions import prepare, release

REALWORLD = sorted(CORPUS.glob("*.xml"))
QEMU = "{http://libvirt.org/schemas/domain/qemu/1.0}"


@pytest.fixture(scope="module")
def big_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("host")
    fake_host(root)
    return root


def tune(capsys: pytest.CaptureFixture[str], path: Path, root: Path, *args: str) -> CliResult:
    return run_cli(capsys, "vm", "tune", "--xml", str(path), "--print-xml", "--root", str(root), *args)


def schema_valid(text: str, tmp_path: Path) -> bool:
    path = tmp_path / "domain.xml"
    path.write_text(text)
    return subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                          check=False).returncode == 0


def _canonical(element: etree._Element | None) -> str:
    """An element's meaning, formatting aside (for "was it kept?")."""
    return "" if element is None else etree.tostring(element, method="c14n").decode()


def users_things(text: str, *, memory_backing: bool = True, display: bool = True) -> dict[str, list[str]]:
    """What a user put in a domain that tune must never drop or alter."""
    root = etree.fromstring(text.encode())
    devices = root.find("devices")
    assert devices is not None

    def each(path: str, node: etree._Element = root) -> list[str]:
        return sorted(_canonical(e) for e in node.findall(path))

    things = {
        "disks": each("disk", devices), "interfaces": each("interface", devices),
        "macs": each("interface/mac", devices), "rom": each("hostdev/rom", devices),
        "hostdev sources": each("hostdev/source", devices), "boot": each(".//boot") + each("os/bootmenu"),
        "qemu": [_canonical(e) for e in root.iter(f"{QEMU}arg", f"{QEMU}env", f"{QEMU}override")],
        "shmem": each("shmem", devices), "tpm": each("tpm", devices),
        "filesystems": each("filesystem", devices),
        "evdev": sorted(_canonical(e) for e in devices.findall("input") if e.get("type") == "evdev"),
        "vendor_id": each("features/hyperv/vendor_id"), "seclabel": each("seclabel"),
        "loader": each("os/loader") + each("os/nvram"),
        "audio": each("audio", devices) + each("sound", devices),
        "comments": [str(c.text) for c in root.itersiblings(preceding=True) if c.tag is etree.Comment]
                    + [str(c.text) for c in root.iter(etree.Comment)],
        "redirdev": each("redirdev", devices),
        "emulator": each("emulator", devices), "uuid": each("uuid"), "os type": each("os/type"),
    }
    if memory_backing:
        things["memoryBacking"] = each("memoryBacking")
    if not display:  # --gpu-display-only removes what only SPICE can carry
        things["audio"] = [a for a in things["audio"] if "type=\"spice\"" not in a]
        things["redirdev"] = [r for r in things["redirdev"] if "spicevmc" not in r]
    return things


def lost(before: str, after: str, **which: bool) -> dict[str, list[str]]:
    """What ``before`` had that ``after`` lacks, by kind (a changed item counts as lost)."""
    had, has = users_things(before, **which), users_things(after, **which)
    return {kind: missing for kind, items in had.items()
            if (missing := list((Counter(items) - Counter(has[kind])).elements()))}


@pytest.mark.parametrize("path", REALWORLD, ids=[p.stem for p in REALWORLD])
def test_published_domains_tune_keeping_everything_of_theirs(path: Path, big_host: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = path.read_text()
    first = tune(capsys, path, big_host)
    assert first.status == 0, first.stderr
    assert lost(before, first.stdout) == {}
    assert diff_lines(before, first.stdout) == really_changed_lines(before, first.stdout)
    if schema_valid(before, tmp_path):
        assert schema_valid(first.stdout, tmp_path), first.stdout
    tuned = tmp_path / path.name
    tuned.write_text(first.stdout)
    again = run_cli(capsys, "vm", "tune", "--xml", str(tuned), "--diff", "--root", str(big_host))
    assert again.status == 0 and again.stdout == "" and "no change" in again.stderr
    hugepages = before.count("<hugepages")
    options = tune(capsys, path, big_host, "--memory", "8G", "--memory-current", "8G", "--no-hugepages",
                   "--gpu-display-only")
    assert options.status == 0, options.stderr
    assert lost(before, options.stdout, memory_backing=False, display=False) == {}
    assert "<hugepages" not in options.stdout and ("<hugepages" in first.stdout) == bool(hugepages)
    assert diff_lines(before, options.stdout) == really_changed_lines(before, options.stdout)


def test_the_corpus_is_what_the_sources_file_says() -> None:
    sources = [line.split("\t") for line in (CORPUS / "SOURCES").read_text().splitlines()
               if line and not line.startswith("#")]
    assert sorted(row[3] for row in sources) == [p.name for p in REALWORLD]
    assert all(re.fullmatch(r"[0-9a-f]{40}", row[2]) for row in sources) and len(sources) >= 25


SMALL = """<!-- my notes -->
<domain type='kvm'>
  <name>win</name>
  <memory unit='GiB'>16</memory>
  <currentMemory unit='GiB'>8</currentMemory>
  <memoryBacking>
    <hugepages/>
    <nosharepages/>
  </memoryBacking>
  <vcpu placement='static'>4</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <features>
    <hyperv>
      <vendor_id state='on' value='1234567890ab'/>
    </hyperv>
  </features>
  <clock offset='utc'/>
  <devices>
    <interface type='network'>
      <source network='default'/>
      <model type='e1000e'/>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      </source>
    </hostdev>
    <video>
      <model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
    <graphics type='spice' autoport='yes'/>
    <channel type='spicevmc'>
      <target type='virtio' name='com.redhat.spice.0'/>
    </channel>
    <redirdev bus='usb' type='spicevmc'/>
  </devices>
</domain>
"""


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, [Core((n, n + 8)) for n in range(8)])
    return tree


def small(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "small.xml"
    path.write_text(text)
    return path


def test_the_users_choices_stay_without_options(host: FakeHost, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tune(capsys, small(tmp_path), host.root)
    assert out.status == 0, out.stderr
    xml = out.stdout
    assert xml.startswith("<!-- my notes -->\n<domain type='kvm'>")
    for kept in ("<memory unit='GiB'>16</memory>", "<currentMemory unit='GiB'>8</currentMemory>",
                 "    <hugepages/>\n    <nosharepages/>", "value='1234567890ab'", "<clock offset='utc'>",
                 "<model type='e1000e'/>", "<model type='qxl'"):
        assert kept in xml
    assert "vfiodesk0000" not in xml and "hugepages='none'" in xml and "binding='libvirt'" in xml


def test_options_change_memory_in_the_users_unit_and_hugepages(host: FakeHost, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tune(capsys, small(tmp_path), host.root, "--memory", "12G", "--no-hugepages")
    assert out.status == 0, out.stderr
    assert "<memory unit='GiB'>12</memory>" in out.stdout
    assert "<currentMemory unit='GiB'>8</currentMemory>" in out.stdout
    assert "<memoryBacking>\n    <nosharepages/>\n  </memoryBacking>" in out.stdout
    out = tune(capsys, small(tmp_path), host.root, "--memory-current", "4G", "--hugepages")
    assert "<currentMemory unit='GiB'>4</currentMemory>" in out.stdout and "hugepages='runtime'" in out.stdout
    decimal = small(tmp_path, SMALL.replace("unit='GiB'>16", "unit='GB'>16").replace(
        "<currentMemory unit='GiB'>8</currentMemory>\n", ""))
    out = tune(capsys, decimal, host.root, "--memory", "20000M")
    assert "<memory unit='KiB'>20480000</memory>" in out.stdout and "not a whole number of GB" in out.stderr
    shrink = tune(capsys, small(tmp_path), host.root, "--memory", "4G")
    assert shrink.status == ExitStatus.USAGE and "<currentMemory> would be larger" in shrink.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--cpus", "0"], "0 vCPUs is not a VM"),
    (["--cpus", "-2"], "-2 vCPUs is not a VM"),
    (["--cpus", "64"], "more than this host can give"),
    (["--memory", "lots"], "'lots' is not a size"),
    (["--memory", "4G", "--memory-current", "8G"], "larger than --memory"),
])
def test_bad_options_are_refused_before_anything(host: FakeHost, tmp_path: Path, args: list[str],
                                                 message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tune(capsys, small(tmp_path), host.root, *args)
    assert out.status == ExitStatus.USAGE and message in out.stderr and out.stdout == ""


def test_managed_follows_the_binding_and_says_so(host: FakeHost, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tune(capsys, small(tmp_path), host.root, "--binding", "vfiodesk")
    assert "managed='no'" in out.stdout and "binding='vfiodesk'" in out.stdout
    assert "hostdev 0000:01:00.0: managed='yes' -> 'no'" in out.stderr
    mixed = small(tmp_path, out.stdout.replace("managed='no'", "managed='yes'"))
    again = tune(capsys, mixed, host.root)
    assert "managed='no'" in again.stdout and "binding='vfiodesk'" in again.stdout


def test_gpu_display_only_and_back(host: FakeHost, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tune(capsys, small(tmp_path), host.root, "--gpu-display-only")
    assert out.status == 0, out.stderr
    assert "<model type='none'/>" in out.stdout and "spice" not in out.stdout
    assert "--emulated-display" in out.stderr
    assert schema_valid(out.stdout, tmp_path)
    back = tune(capsys, small(tmp_path, out.stdout), host.root, "--emulated-display")
    assert "<model type='qxl'/>" in back.stdout and "<graphics type='spice'" in back.stdout
    assert "type='none'" not in back.stdout and schema_valid(back.stdout, tmp_path)


def test_aliases_named_by_qemu_commandline_keep_their_device(host: FakeHost, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    text = SMALL.replace("<domain type='kvm'>", "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/"
                         "domain/qemu/1.0'>").replace("</devices>\n", "</devices>\n  <qemu:commandline>\n"
                         "    <qemu:arg value='-set'/>\n    <qemu:arg value='device.hostdev0.x-vga=on'/>\n"
                         "    <qemu:arg value='-set'/>\n    <qemu:arg value='device.redir0.debug=1'/>\n"
                         "  </qemu:commandline>\n")
    kept = tune(capsys, small(tmp_path, text), host.root)
    assert kept.status == 0 and "device.hostdev0.x-vga=on" in kept.stdout
    assert "aliases hostdev0, redir0" in kept.stderr
    refused = tune(capsys, small(tmp_path, text), host.root, "--gpu-display-only")
    assert refused.status == ExitStatus.REFUSED and "'redir0'" in refused.stderr and refused.stdout == ""


LIVE = """<domain type='kvm' id='3' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>live</name>
  <memory unit='KiB'>4194304</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <emulator>/usr/local/bin/qemu-system-x86_64</emulator>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
      <source><address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source>
      <alias name='hostdev0'/>
    </hostdev>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-1234</label>
  </seclabel>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value='vfio-pci,host=0000:01:00.0,multifunction=on'/>
  </qemu:commandline>
</domain>
"""


def test_what_it_cannot_manage_is_kept_byte_for_byte_and_named(host: FakeHost, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tune(capsys, small(tmp_path, LIVE), host.root)
    assert out.status == 0, out.stderr
    for region in ("<devices>\n    <emulator>", "</hostdev>\n", "  <seclabel type='dynamic'",
                   "  <qemu:commandline>\n    <qemu:arg value='-device'/>\n    <qemu:arg value='vfio-pci,"):
        block = LIVE[LIVE.index(region):LIVE.index(region) + 200].split("\n  </")[0]
        assert block in out.stdout
    for said in ("-device vfio-pci", "<hostdev type='mdev'>", "several <emulator>", "live dumpxml",
                 "<seclabel>"):
        assert said in out.stderr


def test_a_vfiodesk_made_vm_survives_tune_and_the_hook_still_binds_it(
        host: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host.file("sys/bus/pci/drivers/vfio-pci/.keep")
    host.file("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    made = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root), "--gpu", "01:00",
                   "--cpus", "4", "--memory", "1G", "--binding", "vfiodesk", "--hugepages")
    assert made.status == 0, made.stderr
    tuned = tune(capsys, small(tmp_path, made.stdout), host.root)
    assert tuned.status == 0, tuned.stderr
    before, after = DomainDocument.parse(made.stdout), DomainDocument.parse(tuned.stdout)
    assert after.management() == before.management()
    assert tuned.stdout == made.stdout  # nothing to tune: vfiodesk made it
    done = prepare(host.paths, "win10", tuned.stdout.encode())
    assert any("bound" in line and "0000:01:00.0" in line for line in done), done
    assert any("512 hugepages" in line for line in done), done
    release(host.paths, "win10", tuned.stdout.encode())


def test_record_devices_after_a_confirmed_change(host: FakeHost, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    host.file("sys/bus/pci/drivers/vfio-pci/.keep")
    made = run_cli(capsys, "vm", "create", "win10", "--print-xml", "--root", str(host.root), "--gpu", "01:00",
                   "--cpus", "4", "--binding", "vfiodesk").stdout
    (host.root / "sys/devices/pci0000:00/0000:01:00.0/device").write_text("0x1b81\n")
    kept = tune(capsys, small(tmp_path, made), host.root)
    assert 'device="1b80"' in kept.stdout  # a plain tune keeps the record
    recorded = tune(capsys, small(tmp_path, made), host.root, "--record-devices")
    assert recorded.status == 0 and 'device="1b81"' in recorded.stdout
    assert [line for line in difflib.unified_diff(made.splitlines(), recorded.stdout.splitlines(), n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))] == [
        next(line for line in ("-" + x for x in made.splitlines()) if 'device="1b80"' in line
             and "01:00.0" in line),
        next(line for line in ("+" + x for x in recorded.stdout.splitlines()) if 'device="1b81"' in line)]
    done = prepare(host.paths, "win10", recorded.stdout.encode())
    assert any("bound" in line for line in done)
    release(host.paths, "win10", recorded.stdout.encode())


def test_readmes_tune_diff_is_what_tune_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    section = (Path(__file__).parent.parent / "README.md").read_text().split(
        "### Tuning a domain you already have", 1)[1]
    shown = "\n".join(line[4:] for line in section.split("\n    @@ ", 1)[1].join(["    @@ ", ""]).split(
        "\n\n", 1)[0].splitlines()) + "\n"
    write_topology(tmp_path, intel_4c8t())
    printed = run_cli(capsys, "vm", "tune", "--xml", str(CORPUS / "ipimpat-qemu-gaming-vm-win10.xml"),
                      "--diff", "--root", str(tmp_path))
    assert printed.stdout == "--- before\n+++ after\n" + shown
