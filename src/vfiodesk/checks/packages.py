"""Package names and install commands per distribution family."""

from __future__ import annotations

import shlex

# What provides each need, per family (package names as of Debian 12, Fedora 40, Arch, openSUSE 15).
PACKAGES: dict[str, dict[str, str]] = {
    "qemu": {"debian": "qemu-system-x86", "fedora": "qemu-kvm", "arch": "qemu-full",
             "suse": "qemu-x86"},
    "ovmf": {"debian": "ovmf", "fedora": "edk2-ovmf", "arch": "edk2-ovmf", "suse": "qemu-ovmf-x86_64"},
    "libvirt": {"debian": "libvirt-daemon-system", "fedora": "libvirt", "arch": "libvirt",
                "suse": "libvirt"},
    "swtpm": {"debian": "swtpm-tools", "fedora": "swtpm-tools", "arch": "swtpm", "suse": "swtpm"},
    "virt-manager": {"debian": "virt-manager", "fedora": "virt-manager", "arch": "virt-manager",
                     "suse": "virt-manager"},
}
_INSTALL = {
    "debian": ["apt-get", "install", "-y"],
    "fedora": ["dnf", "install", "-y"],
    "arch": ["pacman", "-S", "--needed"],
    "suse": ["zypper", "install", "-y"],
}


_FAMILIES = (
    ("debian", ("debian", "ubuntu", "linuxmint", "pop")),
    ("fedora", ("fedora", "rhel", "centos")),
    ("arch", ("arch", "manjaro", "endeavouros")),
    ("suse", ("suse", "opensuse", "opensuse-leap", "opensuse-tumbleweed")),
)


def distro_family(os_release: dict[str, str]) -> str | None:
    """debian, fedora, arch or suse from os-release ID and ID_LIKE."""
    ids = [os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()]
    for ident in ids:
        for family, members in _FAMILIES:
            if ident in members:
                return family
    return None


def install_argv(os_release: dict[str, str], needs: list[str]) -> list[str] | None:
    """The install command for ``needs``, or None on an unknown distribution."""
    family = distro_family(os_release)
    if family is None:
        return None
    return [*_INSTALL[family], *(PACKAGES[need][family] for need in needs)]


def install_command(os_release: dict[str, str], needs: list[str]) -> str:
    """The command that installs ``needs`` on this distribution (or the package list)."""
    argv = install_argv(os_release, needs)
    if argv is None:
        return "install: " + ", ".join(needs) + " (with your distribution's package manager)"
    return shlex.join(argv)
