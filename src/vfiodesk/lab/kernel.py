"""Finding a kernel for the lab: one whose modules include vfio-pci."""

from __future__ import annotations

import re
from pathlib import Path

from vfiodesk.errors import VfiodeskError

_SETUP_HINT = "run `vfiodesk lab setup` (Debian: apt-get install linux-image-amd64), or pass --kernel"


def kernel_release(image: Path) -> str:
    """``6.1.0-56-amd64`` for ``/boot/vmlinuz-6.1.0-56-amd64``."""
    return image.name.removeprefix("vmlinuz-")


def has_vfio_pci(modules_root: Path, release: str) -> bool:
    """vfio-pci is a module (modules.dep) or built in (modules.builtin) of that release."""
    for index in ("modules.dep", "modules.builtin"):
        path = modules_root / release / index
        if path.is_file() and re.search(rb"/vfio-pci\.ko", path.read_bytes()):
            return True
    return False


def _version_key(image: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part
            for part in re.split(r"[.\-+]", kernel_release(image))]


def find_lab_kernel(boot: Path = Path("/boot"), modules_root: Path = Path("/lib/modules")) -> Path:
    """The newest /boot/vmlinuz-* whose modules include vfio-pci."""
    images = sorted(boot.glob("vmlinuz-*"), key=_version_key, reverse=True)
    for image in images:
        if has_vfio_pci(modules_root, kernel_release(image)):
            return image
    if images:
        raise VfiodeskError(f"no kernel in {boot} has vfio-pci among its modules "
                            f"(looked at {', '.join(i.name for i in images)})", _SETUP_HINT)
    raise VfiodeskError(f"no kernel image (vmlinuz-*) in {boot}", _SETUP_HINT)


def check_lab_kernel(image: Path, modules_root: Path = Path("/lib/modules")) -> Path:
    """A kernel the user gave: it must exist and have vfio-pci."""
    if not image.is_file():
        raise VfiodeskError(f"kernel {image} does not exist", _SETUP_HINT)
    if not has_vfio_pci(modules_root, kernel_release(image)):
        raise VfiodeskError(
            f"kernel {image.name} has no vfio-pci module in {modules_root / kernel_release(image)}",
            "install that kernel's modules, or pick one whose config has CONFIG_VFIO_PCI=m or =y")
    return image
