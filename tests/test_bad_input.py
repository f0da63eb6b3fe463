"""Bad input gets a clear error, a documented exit code and no change: one test per kind of
input the tool reads (sysfs, procfs, host configuration, the user's files and options)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.fakehost import FakeHost, ready_host
from tests.test_pinning import intel_4c8t, write_topology
from vfiodesk.errors import ExitStatus, HostReadError, InputError
from vfiodesk.host.sysfs import read_attr
from vfiodesk.host.userfiles import load_toml, read_user_text
from vfiodesk.model.cpuset import CpuSet
from vfiodesk.model.sizes import DISK_SIZE, VM_MEMORY, parse_size

GPU = "sys/devices/pci0000:00/0000:01:00.0"


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    tree = ready_host(tmp_path / "host")
    write_topology(tree.root, intel_4c8t())
    return tree


def devices_json(capsys: pytest.CaptureFixture[str], host: FakeHost) -> dict[str, dict[str, object]]:
    result = run_cli(capsys, "devices", "--json", "--root", str(host.root))
    assert result.status == 0, result.stderr
    return {device["address"]: device for device in result.json()["devices"]}


def doctor_findings(capsys: pytest.CaptureFixture[str],
                    host: FakeHost) -> tuple[int, dict[str, dict[str, str]]]:
    result = run_cli(capsys, "doctor", "--json", "--root", str(host.root))
    return result.status, {check["id"]: check for check in result.json()["checks"]}


# --- the one bounded reader ----------------------------------------------------------------


def test_fifo_devices_and_directories_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a plain open() would block forever
    (tmp_path / "dir").mkdir()
    started = time.monotonic()
    for path in (fifo, Path("/dev/zero"), tmp_path / "dir"):
        with pytest.raises(HostReadError, match=r"not a regular file|is a directory"):
            read_attr(path)
        with pytest.raises(InputError, match=re.escape(str(path))):
            read_user_text(path, "profile")
    assert time.monotonic() - started < 5


def test_size_cap_holds_for_files_that_report_no_size(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"1" * (70 * 1024))
    with pytest.raises(HostReadError, match="larger than 64 KiB"):
        read_attr(big)
    # procfs files report st_size 0: the cap is enforced by reading, not by trusting the size.
    assert read_attr("/proc/self/stat") is not None


@pytest.mark.parametrize(("content", "message"), [
    ('memory = "4G"\n'.encode("utf-16"), "UTF-16"),
    (b'memory = "4G" # caf\xe9\n', "not UTF-8"),
    (bytes(range(256)), "binary"),
])
def test_user_files_in_another_encoding_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        load_toml(path, "profile")
    assert "UTF-8" in caught.value.hint


def test_deeply_nested_toml_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputError, match=r"deep|not valid TOML"):
        load_toml(path, "profile")


@pytest.mark.parametrize("name", ["utf16", "binary", "fifo", "dir"])
def test_vm_create_profile_and_tune_xml_refuse_bad_files(host: FakeHost, tmp_path: Path, name: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    if name == "fifo":
        os.mkfifo(path)
    elif name == "dir":
        path.mkdir()
    else:
        path.write_bytes('memory = "4G"\n'.encode("utf-16") if name == "utf16" else bytes(range(256)))
    created = run_cli(capsys, "vm", "create", "w", "--profile", str(path), "--print-xml",
                      "--root", str(host.root))
    assert created.status == ExitStatus.USAGE and str(path) in created.stderr and "hint:" in created.stderr
    tuned = run_cli(capsys, "vm", "tune", "--xml", str(path), "--print-xml", "--root", str(host.root))
    assert tuned.status == ExitStatus.USAGE and "hint:" in tuned.stderr


# --- parsing with explicit limits ----------------------------------------------------------


def test_a_cpu_list_of_a_billion_cpus_is_refused_at_once(host: FakeHost,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(InputError, match="beyond the kernel's limit"):
        CpuSet.parse("0-999999999")
    host.file("sys/devices/system/cpu/online", "0-999999999\n")
    result = run_cli(capsys, "cpus", "--root", str(host.root))
    assert result.status == ExitStatus.ERROR and "sys/devices/system/cpu/online" in result.stderr
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("text", "limits", "message"), [
    ("1B", VM_MEMORY, "too small"), ("1K", VM_MEMORY, "too small"), ("99999T", VM_MEMORY, "too large"),
    ("0", DISK_SIZE, "larger than zero"), ("1.0000001G", VM_MEMORY, "whole number of bytes"),
    ("1" * 30 + "G", VM_MEMORY, "is not a size"), ("8 gigs", VM_MEMORY, "is not a size"),
])
def test_sizes_have_per_option_bounds(text: str, limits: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_size(text, default_unit="M", limits=limits)  # type: ignore[arg-type]


def test_sizes_are_exact_at_any_magnitude() -> None:
    # 16 TiB minus one KiB: a float would round it; integers do not.
    assert parse_size("17179869183K", limits=VM_MEMORY) == 16 * 1024**4 - 1024
    assert parse_size("1.5G", limits=VM_MEMORY) == 3 * 1024**3 // 2


@pytest.mark.parametrize("memory", ["1B", "1K", "99999T"])
def test_vm_create_refuses_absurd_memory(host: FakeHost, memory: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "vm", "create", "w", "--memory", memory, "--print-xml", "--root", str(host.root))
    assert result.status == ExitStatus.USAGE and "--memory" in result.stderr
    assert "hint: give at" in result.stderr


@pytest.mark.parametrize("resolution", ["0x0", "1x1", "99999x99999", "1920x", "1920\u00d71080", "-1920x1080"])
def test_looking_glass_refuses_impossible_resolutions(tmp_path: Path, resolution: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "desktop", "looking-glass", "--xml", str(tmp_path / "unused.xml"),
                     "--resolution", resolution)
    assert result.status == ExitStatus.USAGE and "resolution" in result.stderr


@pytest.mark.parametrize("address", ["192.168.100.2\nend\nsection: options", "host name", "fe80::1", "-x",
                                     "a..b"])
def test_synergy_address_cannot_inject_config(tmp_path: Path, address: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synergy.conf"
    result = run_cli(capsys, "desktop", "input", "--mode", "synergy", "--host-screen", "desk",
                     "--vm-address", address, "--output", str(out))
    assert result.status == ExitStatus.USAGE and "--vm-address" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(("disk", "message"), [
    ("./w.img", "is not an absolute path"), ("../w.img", "is not an absolute path"),
    ("~/w.img", "is not an absolute path"), ("w.img", "neither an absolute path nor POOL/VOL"),
    ("default/sub/w.img", "neither an absolute path nor POOL/VOL"),
])
def test_relative_disk_paths_are_refused_with_the_absolute_one(host: FakeHost, disk: str, message: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "vm", "create", "w", "--disk", disk, "--print-xml", "--root", str(host.root))
    assert result.status == ExitStatus.USAGE and message in result.stderr, result.stderr
    if disk.startswith("."):
        assert f"--disk {os.path.abspath(disk)}" in result.stderr


def test_print_xml_makes_up_no_path_for_a_pool_volume(host: FakeHost,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "vm", "create", "w", "--disk", "default/w.img", "--print-xml",
                     "--root", str(host.root))
    assert result.status == ExitStatus.USAGE and "cannot know where pool 'default'" in result.stderr
    assert result.stdout == ""


def test_paths_with_control_characters_are_refused(host: FakeHost,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--iso", "--disk"):
        result = run_cli(capsys, "vm", "create", "w", option, "/isos/a\nb.iso", "--print-xml",
                         "--root", str(host.root))
        assert result.status == ExitStatus.USAGE and "control characters" in result.stderr, result.stderr


# --- junk in sysfs is junk -------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"\xff\xfe\x00j", b"0x1b80zz\n", b"0x10de0000\n", b""])
def test_junk_vendor_is_shown_as_junk_and_doctor_fails(host: FakeHost, junk: bytes,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    host.file(f"{GPU}/vendor", junk)
    gpu = devices_json(capsys, host)["0000:01:00.0"]
    assert gpu["vendor_id"] is None and gpu["device_id"] is None and gpu["class_code"] is None
    assert gpu["problems"] and "vendor" in str(gpu["problems"])
    table = run_cli(capsys, "devices", "--root", str(host.root)).stdout
    assert "unreadable" in table and "junk" in table and "1b80" not in table.split("0000:01:00.0")[1][:30]
    status, findings = doctor_findings(capsys, host)
    assert status == ExitStatus.HOST_NOT_READY and findings["pci-sysfs"]["status"] == "fail"


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_fifo_or_device_as_a_sysfs_attribute_does_not_hang(host: FakeHost, kind: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    vendor = host.root / GPU / "vendor"
    vendor.unlink()
    if kind == "fifo":
        os.mkfifo(vendor)
    else:
        vendor.symlink_to("/dev/zero")
    started = time.monotonic()
    gpu = devices_json(capsys, host)["0000:01:00.0"]
    assert gpu["vendor_id"] is None and "not a regular file" in str(gpu["problems"])
    assert doctor_findings(capsys, host)[1]["pci-sysfs"]["status"] == "fail"
    assert time.monotonic() - started < 10


def test_a_driver_link_loop_is_junk_not_a_driver(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    link = host.root / GPU / "driver"
    link.unlink()
    link.symlink_to("driver")  # points at itself: ELOOP
    gpu = devices_json(capsys, host)["0000:01:00.0"]
    assert gpu["driver"] is None and "symlink loop" in str(gpu["problems"])
    assert doctor_findings(capsys, host)[1]["pci-sysfs"]["status"] == "fail"


def test_a_driver_name_with_a_space_is_a_driver_not_junk(host: FakeHost,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Real kernels name drivers freely: the lab's (and many chipsets') watchdog is "i6300ESB timer".
    host.pci("0000:00:1b.0", 0x8086, 0x25AB, 0x088000, driver="i6300ESB timer", group=99)
    watchdog = devices_json(capsys, host)["0000:00:1b.0"]
    assert watchdog["driver"] == "i6300ESB timer" and not watchdog["problems"]
    assert doctor_findings(capsys, host)[1]["pci-sysfs"]["status"] == "pass"


def test_a_junk_group_link_is_reported(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    link = host.root / GPU / "iommu_group"
    link.unlink()
    link.symlink_to("../../../kernel/iommu_groups/1b80x")
    gpu = devices_json(capsys, host)["0000:01:00.0"]
    assert gpu["iommu_group"] is None and "not a group number" in str(gpu["problems"])


def test_a_gpu_without_a_group_is_not_a_clean_group(host: FakeHost,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for gpu in (GPU, "sys/devices/pci0000:00/0000:02:00.0"):  # both spare GPUs
        (host.root / gpu / "iommu_group").unlink()
    status, findings = doctor_findings(capsys, host)
    gpu = findings["gpu-candidate"]
    assert gpu["status"] == "fail" and "has no IOMMU group" in gpu["summary"]
    assert "None" not in gpu["summary"] and status == ExitStatus.HOST_NOT_READY


# --- host configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'.encode("utf-16"), b"\x7fELF\x02\x01\x01\x00" + bytes(200)])
def test_a_binary_grub_file_is_refused_and_left_alone(host: FakeHost, content: bytes,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    grub = host.file("etc/default/grub", content)
    result = run_cli(capsys, "host", "iommu", "--boot-loader", "grub", "--apply", "--root", str(host.root))
    assert result.status == ExitStatus.ERROR and "binary data" in result.stderr and "hint:" in result.stderr
    assert grub.read_bytes() == content


# --- where output goes -------------------------------------------------------------------------


def test_output_into_a_missing_directory_or_onto_a_directory(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for target, message in ((tmp_path / "no" / "such" / "s.conf", "does not exist"),
                            (tmp_path, "is a directory")):
        result = run_cli(capsys, "desktop", "input", "--mode", "synergy", "--host-screen", "desk",
                         "--output", str(target))
        assert result.status == ExitStatus.USAGE and message in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "no").exists()


# --- usage errors say what to do ------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["devices", "--bogus"], ["nosuch"], ["vm", "create"],
                                  ["vm", "create", "w", "--cpus", "many"], ["cpus", "--vcpus"]])
def test_click_usage_errors_carry_a_hint(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, *argv)
    assert result.status == ExitStatus.USAGE
    lines = result.stderr.splitlines()
    assert lines[0].startswith("vfiodesk: error: ") and lines[1].startswith("hint: ")
    assert "--help" in lines[1]


def test_bind_refuses_a_group_with_junk_in_sysfs(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    host.file("sys/devices/pci0000:00/0000:01:00.1/device", b"0xzz\n")  # the GPU's audio function
    result = run_cli(capsys, "bind", "01:00.0", "--dry-run", "--root", str(host.root))
    assert result.status == ExitStatus.ERROR and "0000:01:00.1 holds junk in sysfs" in result.stderr
    assert (host.root / GPU / "driver_override").read_text() == "(null)\n"
