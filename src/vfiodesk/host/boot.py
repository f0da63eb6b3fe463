"""What the boot loader configuration looks like: the facts that pick a loader and its edit."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from vfiodesk import paths as P
from vfiodesk.host.configfiles import read_config, read_config_dir
from vfiodesk.host.kernel import read_kernel_release
from vfiodesk.host.sysfs import read_attr
from vfiodesk.host.system import find_program

BOOT_PROGRAMS = ("update-grub", "grub-mkconfig", "grub2-mkconfig", "grubby", "kernelstub",
                 "rpm-ostree", "bootctl", "kernel-install")


@dataclass(frozen=True)
class BootFacts:
    grub_files: tuple[tuple[str, bytes], ...]  # etc/default/grub then grub.d/*.cfg; () if absent
    kernel_cmdline: bytes | None  # etc/kernel/cmdline
    loader_entries: tuple[tuple[str, bytes], ...]  # Boot Loader Specification type 1 entries
    ukis: tuple[str, ...]  # unified kernel images (type 2 entries), host paths
    efi: bool
    efi_grub_configs: tuple[tuple[str, bool], ...]  # (host path, is a stub that loads another)
    programs: Mapping[str, str | None]
    ostree: bool
    kernelstub_config: bool
    proc_cmdline: str | None
    kernel_release: str | None


def read_boot_facts(host: P.HostPaths) -> BootFacts:
    grub = read_config(host, P.ETC_DEFAULT_GRUB)
    grub_files = ((P.ETC_DEFAULT_GRUB, grub), *read_config_dir(host, P.ETC_DEFAULT_GRUB_D, ".cfg")) \
        if grub is not None else ()
    entries = tuple(entry for directory in P.LOADER_ENTRY_DIRS
                    for entry in read_config_dir(host, directory, ".conf"))
    ukis = tuple(f"/{directory}/{name}" for directory in P.UKI_DIRS if os.path.isdir(host(directory))
                 for name in sorted(os.listdir(host(directory))) if name.endswith(".efi"))
    return BootFacts(
        grub_files=grub_files,
        kernel_cmdline=read_config(host, P.ETC_KERNEL_CMDLINE),
        loader_entries=entries,
        ukis=ukis,
        efi=os.path.isdir(host(P.SYS_FIRMWARE_EFI)),
        efi_grub_configs=_efi_grub_configs(host),
        programs={name: find_program(host, name) for name in BOOT_PROGRAMS},
        ostree=os.path.exists(host(P.RUN_OSTREE_BOOTED)),
        kernelstub_config=os.path.isfile(host(P.ETC_KERNELSTUB_CONFIG)),
        proc_cmdline=read_attr(host(P.PROC_CMDLINE)),
        kernel_release=read_kernel_release(host),
    )


def _efi_grub_configs(host: P.HostPaths) -> tuple[tuple[str, bool], ...]:
    """grub.cfg files on the ESP; since Fedora 34 these are stubs that `configfile` the real
    /boot/grub2/grub.cfg (fedoraproject.org/wiki/Changes/UnifyGrubConfig)."""
    try:
        vendors = sorted(os.listdir(host(P.BOOT_EFI_EFI)))
    except OSError:
        return ()
    found = []
    for vendor in vendors:
        relative = f"{P.BOOT_EFI_EFI}/{vendor}/grub.cfg"
        data = read_config(host, relative)
        if data is not None:
            found.append((f"/{relative}", b"configfile" in data and b"menuentry" not in data))
    return tuple(found)
