"""Synergy / Input Leap server configuration (the seed shares keyboard and mouse with Synergy
over the isolated network; Alt+W locks the cursor to one screen)."""

from __future__ import annotations

import re

from vfiodesk.errors import InputError

SIDES = {"left": "right", "right": "left", "up": "down", "down": "up"}
# Synergy's Config::isValidScreenName (kept by Barrier and Input Leap), for screen names and
# aliases alike: dot-separated labels of [-_A-Za-z0-9] that neither start nor end with '-'; a
# trailing dot is accepted. Anything else (spaces, newlines, ':' of IPv6) makes the server
# refuse the file, or worse, a newline would start a section of the attacker's choosing.
_LABEL = r"[A-Za-z0-9_](?:[-A-Za-z0-9_]*[A-Za-z0-9_])?"
_SCREEN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


def check_screen_name(name: str, what: str) -> None:
    if len(name) > 253 or not _SCREEN.match(name):
        raise InputError(f"{what} {name[:60]!r} is not a Synergy screen name",
                         "use a host name or IPv4 address: letters, digits, '-', '_' between dots "
                         "(Synergy refuses IPv6 addresses and spaces here)")


def server_config(host_screen: str, vm_screen: str, side: str, vm_address: str | None = None) -> str:
    """The config text: two screens, linked on ``side`` of the host, and the Alt+W hotkey."""
    if side not in SIDES:
        raise InputError(f"unknown side {side!r}", f"use one of {', '.join(SIDES)}")
    check_screen_name(host_screen, "--host-screen")
    check_screen_name(vm_screen, "--vm-screen")
    if vm_address is not None:
        check_screen_name(vm_address, "--vm-address")
    alias = f"\n\t\t{vm_address}" if vm_address else ""
    return (
        "section: screens\n"
        f"\t{host_screen}:\n"
        f"\t{vm_screen}:\n"
        "end\n"
        + (f"section: aliases\n\t{vm_screen}:{alias}\nend\n" if vm_address else "")
        + "section: links\n"
        f"\t{host_screen}:\n\t\t{side} = {vm_screen}\n"
        f"\t{vm_screen}:\n\t\t{SIDES[side]} = {host_screen}\n"
        "end\n"
        "section: options\n"
        "\tkeystroke(Alt+w) = lockCursorToScreen(toggle)\n"
        "end\n"
    )


def parse_config(text: str) -> dict[str, dict[str, list[str]]]:
    """A reader of the section grammar (section: NAME ... end), to check what we write."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    key = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("section:"):
            if current is not None:
                raise ValueError("nested section")
            current = sections.setdefault(line.split(":", 1)[1].strip(), {})
            key = ""
        elif line == "end":
            if current is None:
                raise ValueError("end without section")
            current = None
        elif current is None:
            raise ValueError(f"text outside a section: {line!r}")
        elif line.endswith(":") and raw.startswith("\t") and not raw.startswith("\t\t"):
            key = line[:-1]
            current.setdefault(key, [])
        else:
            current.setdefault(key, []).append(line)
    if current is not None:
        raise ValueError("section not closed")
    return sections
