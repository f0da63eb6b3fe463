"""Where each boot loader takes kernel parameters, and the command that makes them stick."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vfiodesk import paths as P
from vfiodesk.errors import HostReadError, InputError, VfiodeskError
from vfiodesk.host.boot import BootFacts
from vfiodesk.plan.hostconfig.change import Argv, FileChange, HostPlan, decode, encode
from vfiodesk.plan.hostconfig.grub import plan_grub
from vfiodesk.plan.hostconfig.params import Want, plan_words
from vfiodesk.plan.hostconfig.words import splice, split_words

LOADERS = ("grub", "systemd-boot", "grubby", "kernelstub", "rpm-ostree")
_LOADER_HINT = "name it: --boot-loader " + "|".join(LOADERS)
# A loader entry's options line (Boot Loader Specification: "options" key, repeatable).
_OPTIONS_RE = re.compile(r"^(?P<key>[ \t]*options[ \t]+)(?P<value>.*?)(?P<end>\r?\n?)$")
# Words of /proc/cmdline that the boot loader adds itself.
_LOADER_WORDS = ("BOOT_IMAGE=", "initrd=")


def detect_loader(facts: BootFacts) -> str:
    """The loader that owns the kernel command line on this host."""
    if facts.ostree:
        return "rpm-ostree"
    if facts.kernelstub_config and facts.programs.get("kernelstub"):
        return "kernelstub"  # Pop!_OS: kernelstub rewrites systemd-boot's entries itself
    if facts.programs.get("grubby") and facts.loader_entries:
        return "grubby"  # Fedora/RHEL: GRUB reading BLS entries that grubby maintains
    if facts.grub_files:
        return "grub"
    if facts.loader_entries or facts.ukis or facts.kernel_cmdline is not None:
        return "systemd-boot"
    raise VfiodeskError("cannot tell which boot loader this host uses (no /etc/default/grub, "
                        "no loader entries, no rpm-ostree, grubby or kernelstub)", _LOADER_HINT)


def plan_kernel_params(facts: BootFacts, loader: str, wants: Sequence[Want], title: str) -> HostPlan:
    """The files and commands that put ``wants`` on the command line of future boots."""
    if loader == "grub":
        return _plan_grub(facts, wants, title)
    if loader == "systemd-boot":
        return _plan_systemd_boot(facts, wants, title)
    if loader in ("grubby", "kernelstub", "rpm-ostree"):
        return _plan_by_command(facts, loader, wants, title)
    raise InputError(f"unknown boot loader {loader!r}", _LOADER_HINT)


def grub_update_command(facts: BootFacts) -> Argv:
    """update-grub (Debian family), else grub2-mkconfig/grub-mkconfig -o the file GRUB reads."""
    if facts.programs.get("update-grub"):
        return ("update-grub",)
    if facts.programs.get("grub2-mkconfig"):
        # EFI before Fedora 34 read a full grub.cfg on the ESP; since then it is a stub.
        full = [path for path, stub in facts.efi_grub_configs if not stub]
        return ("grub2-mkconfig", "-o", full[0] if facts.efi and full else "/boot/grub2/grub.cfg")
    if facts.programs.get("grub-mkconfig"):
        return ("grub-mkconfig", "-o", "/boot/grub/grub.cfg")
    raise VfiodeskError("/etc/default/grub exists but neither update-grub nor grub-mkconfig is installed",
                        "install GRUB's tools, or " + _LOADER_HINT)


def _plan_grub(facts: BootFacts, wants: Sequence[Want], title: str) -> HostPlan:
    if not facts.grub_files:
        raise VfiodeskError("there is no /etc/default/grub", _LOADER_HINT)
    changes, edit = plan_grub(facts.grub_files, wants)
    if not changes:
        return HostPlan(title, notes=(*edit.notes, "GRUB's defaults already hold these parameters "
                                      "(run update-grub if you added them by hand)"))
    update = grub_update_command(facts)
    return HostPlan(title, tuple(changes), (update,), (update,), edit.notes)


def _plan_systemd_boot(facts: BootFacts, wants: Sequence[Want], title: str) -> HostPlan:
    changes: list[FileChange] = []
    notes: list[str] = []
    base: str | None = None
    if facts.kernel_cmdline is not None:
        base = decode(facts.kernel_cmdline)
    elif facts.proc_cmdline is not None:
        base = " ".join(_running_words(facts)) + "\n"  # what kernel-install falls back to
    if base is not None:
        edit = plan_words([split_words(base)], wants)
        new = splice(base, edit.in_segment(0), edit.append)
        changes.append(FileChange(P.ETC_KERNEL_CMDLINE, facts.kernel_cmdline, encode(new)))
        notes += edit.notes
    for path, data in facts.loader_entries:
        new_entry, entry_notes = _edit_entry(decode(data), wants)
        changes.append(FileChange(path, data, encode(new_entry)))
        notes += entry_notes
    if not changes:
        raise HostReadError("systemd-boot: no loader entries, no /etc/kernel/cmdline and no /proc/cmdline",
                            _LOADER_HINT)
    commands: tuple[Argv, ...] = ()
    if facts.ukis and facts.kernel_release and any(change.changed for change in changes):
        # A unified kernel image carries its command line inside: rebuild it (kernel-install(8)).
        release = facts.kernel_release
        commands = (("kernel-install", "add", release, f"/usr/lib/modules/{release}/vmlinuz"),)
    return HostPlan(title, tuple(changes), commands, commands, tuple(dict.fromkeys(notes)))


def _edit_entry(text: str, wants: Sequence[Want]) -> tuple[str, tuple[str, ...]]:
    lines = text.splitlines(keepends=True)
    options = [(number, match) for number, line in enumerate(lines)
               if (match := _OPTIONS_RE.match(line)) is not None]
    edit = plan_words([split_words(match["value"]) for _, match in options], wants)
    for index, (number, match) in enumerate(options):
        append = edit.append if index == len(options) - 1 else ()
        value = splice(match["value"], edit.in_segment(index), append)
        lines[number] = f"{match['key']}{value}{match['end'] or ''}"
    if not options and edit.append:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"options {' '.join(edit.append)}\n")
    return "".join(lines), edit.notes


def _running_words(facts: BootFacts) -> list[str]:
    if facts.proc_cmdline is None:
        raise HostReadError("cannot read /proc/cmdline",
                            "run on the host itself, or add proc/cmdline to the root")
    return [word for word in split_words(facts.proc_cmdline) if not word.startswith(_LOADER_WORDS)]


def _plan_by_command(facts: BootFacts, loader: str, wants: Sequence[Want], title: str) -> HostPlan:
    """Loaders that edit their own entries: we give the words to add and remove, judged against
    the running kernel's command line."""
    if not facts.programs.get(loader):
        raise VfiodeskError(f"{loader} is not installed under this root", _LOADER_HINT)
    words = _running_words(facts)
    edit = plan_words([words], wants)
    notes = (*edit.notes,
             f"{loader} edits its boot entries; judged against the running kernel's command line")
    if edit.is_empty:
        return HostPlan(title, notes=(*notes, "the running kernel already has these parameters"))
    removed, added = edit.removed([words]), edit.added()
    return HostPlan(title, commands=(_loader_command(loader, added, removed),),
                    undo_commands=(_loader_command(loader, removed, added),), notes=notes)


def _loader_command(loader: str, add: list[str], remove: list[str]) -> Argv:
    if loader == "grubby":
        return ("grubby", "--update-kernel=ALL", *(["--args=" + " ".join(add)] if add else []),
                *(["--remove-args=" + " ".join(remove)] if remove else []))
    if loader == "kernelstub":
        return ("kernelstub", *(["--delete-options", " ".join(remove)] if remove else []),
                *(["--add-options", " ".join(add)] if add else []))
    return ("rpm-ostree", "kargs", *(f"--delete-if-present={word}" for word in remove),
            *(f"--append-if-missing={word}" for word in add))

