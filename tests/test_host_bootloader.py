"""Boot loader detection and the edit or command each loader takes, on fake host trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakehost import FakeHost
from vfiodesk.errors import VfiodeskError
from vfiodesk.host.boot import read_boot_facts
from vfiodesk.plan.hostconfig.bootloader import detect_loader, grub_update_command, plan_kernel_params
from vfiodesk.plan.hostconfig.params import Want

WANTS = (Want("intel_iommu", ("on",), frozenset({"off"})), Want("amd_iommu", ()),
         Want("iommu", ("pt",), frozenset({"nopt"})))
CMDLINE = "BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=1234 ro quiet amd_iommu=on\n"


@pytest.fixture
def tree(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path)
    host.file("proc/cmdline", CMDLINE)
    host.file("proc/sys/kernel/osrelease", "6.8.0-test\n")
    return host


def test_debian_grub(tree: FakeHost) -> None:
    tree.file("etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    tree.file("usr/sbin/update-grub")
    facts = read_boot_facts(tree.paths)
    assert detect_loader(facts) == "grub"
    plan = plan_kernel_params(facts, "grub", WANTS, "iommu")
    assert plan.commands == (("update-grub",),) == plan.undo_commands


@pytest.mark.parametrize(("efi", "esp_cfg", "expected"), [
    (True, "search --fs-uuid --set=dev 1234\nset prefix=($dev)/grub2\nconfigfile $prefix/grub.cfg\n",
     "/boot/grub2/grub.cfg"),  # Fedora 34+: the ESP holds a stub
    (True, "### BEGIN /etc/grub.d/10_linux ###\nmenuentry 'Fedora' {\n}\n", "/boot/efi/EFI/fedora/grub.cfg"),
    (False, None, "/boot/grub2/grub.cfg"),  # BIOS
])
def test_grub2_mkconfig_writes_the_file_grub_reads(tree: FakeHost, efi: bool, esp_cfg: str | None,
                                                   expected: str) -> None:
    tree.file("usr/sbin/grub2-mkconfig")
    if efi:
        (tree.root / "sys/firmware/efi").mkdir(parents=True)
    if esp_cfg is not None:
        tree.file("boot/efi/EFI/fedora/grub.cfg", esp_cfg)
    assert grub_update_command(read_boot_facts(tree.paths)) == ("grub2-mkconfig", "-o", expected)


def test_arch_grub_mkconfig(tree: FakeHost) -> None:
    tree.file("usr/bin/grub-mkconfig")
    assert grub_update_command(read_boot_facts(tree.paths)) == ("grub-mkconfig", "-o", "/boot/grub/grub.cfg")


def test_fedora_bls_with_grubby_uses_grubby_commands(tree: FakeHost) -> None:
    tree.file("etc/default/grub", 'GRUB_CMDLINE_LINUX="rhgb quiet"\n')
    tree.file("boot/loader/entries/abc-6.8.0.conf", "title Fedora\noptions root=UUID=1234 ro\n")
    tree.file("usr/sbin/grubby")
    facts = read_boot_facts(tree.paths)
    assert detect_loader(facts) == "grubby"
    plan = plan_kernel_params(facts, "grubby", WANTS, "iommu")
    assert plan.files == ()
    assert plan.commands == (("grubby", "--update-kernel=ALL", "--args=intel_iommu=on iommu=pt",
                              "--remove-args=amd_iommu=on"),)
    assert plan.undo_commands == (("grubby", "--update-kernel=ALL", "--args=amd_iommu=on",
                                   "--remove-args=intel_iommu=on iommu=pt"),)


def test_popos_kernelstub(tree: FakeHost) -> None:
    tree.file("etc/kernelstub/configuration", "{}")
    tree.file("usr/bin/kernelstub")
    tree.file("boot/efi/loader/entries/Pop_OS-current.conf", "options root=UUID=1234 ro quiet\n")
    facts = read_boot_facts(tree.paths)
    assert detect_loader(facts) == "kernelstub"
    plan = plan_kernel_params(facts, "kernelstub", WANTS, "iommu")
    assert plan.commands == (("kernelstub", "--delete-options", "amd_iommu=on",
                              "--add-options", "intel_iommu=on iommu=pt"),)


def test_silverblue_rpm_ostree(tree: FakeHost) -> None:
    tree.file("run/ostree-booted")
    tree.file("usr/bin/rpm-ostree")
    facts = read_boot_facts(tree.paths)
    assert detect_loader(facts) == "rpm-ostree"
    plan = plan_kernel_params(facts, "rpm-ostree", WANTS, "iommu")
    assert plan.commands == (("rpm-ostree", "kargs", "--delete-if-present=amd_iommu=on",
                              "--append-if-missing=intel_iommu=on", "--append-if-missing=iommu=pt"),)


def test_command_loader_with_nothing_to_do(tree: FakeHost) -> None:
    tree.file("proc/cmdline", "root=UUID=1234 intel_iommu=on iommu=pt\n")
    tree.file("usr/bin/rpm-ostree")
    plan = plan_kernel_params(read_boot_facts(tree.paths), "rpm-ostree", WANTS, "iommu")
    assert not plan.has_work


def test_systemd_boot_edits_entries_and_kernel_cmdline(tree: FakeHost) -> None:
    entry = ("title   Arch Linux\nlinux   /vmlinuz-linux\ninitrd  /initramfs-linux.img\n"
             "options root=UUID=1234 rw  quiet\n")
    tree.file("boot/loader/entries/arch.conf", entry)
    tree.file("boot/loader/entries/arch-fallback.conf", "title Fallback\nlinux /vmlinuz-linux\n")
    facts = read_boot_facts(tree.paths)
    assert detect_loader(facts) == "systemd-boot"
    plan = plan_kernel_params(facts, "systemd-boot", WANTS, "iommu")
    by_path = {change.path: change for change in plan.files}
    assert by_path["boot/loader/entries/arch.conf"].new.decode() == entry.replace(
        "rw  quiet\n", "rw  quiet intel_iommu=on iommu=pt\n")
    assert by_path["boot/loader/entries/arch-fallback.conf"].new.endswith(
        b"options intel_iommu=on iommu=pt\n")
    # No /etc/kernel/cmdline: kernel-install would use /proc/cmdline, so that is the base.
    assert by_path["etc/kernel/cmdline"].old is None
    assert by_path["etc/kernel/cmdline"].new == b"root=UUID=1234 ro quiet intel_iommu=on iommu=pt\n"
    assert plan.commands == ()


def test_systemd_boot_with_unified_kernel_images_rebuilds_them(tree: FakeHost) -> None:
    tree.file("etc/kernel/cmdline", "root=UUID=1234 rw\n")
    tree.file("efi/EFI/Linux/arch-linux.efi")
    plan = plan_kernel_params(read_boot_facts(tree.paths), "systemd-boot", WANTS, "iommu")
    assert plan.commands == (("kernel-install", "add", "6.8.0-test", "/usr/lib/modules/6.8.0-test/vmlinuz"),)


def test_unknown_boot_loader_is_a_clear_error(tree: FakeHost) -> None:
    with pytest.raises(VfiodeskError) as error:
        detect_loader(read_boot_facts(tree.paths))
    assert "--boot-loader" in error.value.hint


def test_grub_without_its_tools_is_a_clear_error(tree: FakeHost) -> None:
    tree.file("etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    with pytest.raises(VfiodeskError, match="update-grub"):
        plan_kernel_params(read_boot_facts(tree.paths), "grub", WANTS, "iommu")
