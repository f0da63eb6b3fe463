"""The host side of the VM's emulated sound card, as the seed sets it up: QEMU plays into the
desktop's sound server over TCP on 127.0.0.1, and libvirt lets it (qemu.conf)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vfiodesk import paths as P
from vfiodesk.errors import VfiodeskError
from vfiodesk.plan.hostconfig.change import FileChange, HostPlan, decode, encode

PIPEWIRE_FILE = f"{P.ETC_PIPEWIRE_PULSE_D}/vfiodesk-tcp.conf"
TCP_MODULE = "module-native-protocol-tcp"
_PA_LINE_RE = re.compile(rf"^(?P<comment>[ \t]*#[ \t]*)?load-module[ \t]+{TCP_MODULE}\b(?P<args>.*)$",
                         re.MULTILINE)
_ACL_RE = re.compile(r"\bauth-ip-acl=(?P<acl>\S*)")


def plan_pulseaudio(default_pa: bytes | None) -> HostPlan:
    """Enable the seed's ``load-module module-native-protocol-tcp auth-ip-acl=127.0.0.1`` in
    default.pa: uncomment it, or let an existing one also accept 127.0.0.1."""
    if default_pa is None:
        raise VfiodeskError(f"there is no /{P.ETC_PULSE_DEFAULT_PA}", "is PulseAudio installed?")
    text = decode(default_pa)
    seed_line = f"load-module {TCP_MODULE} auth-ip-acl=127.0.0.1"
    active = [match for match in _PA_LINE_RE.finditer(text) if not match["comment"]]
    if active:
        match = active[-1]
        acl = _ACL_RE.search(match["args"])
        if acl is None and "auth-anonymous=1" not in match["args"]:
            new = text[:match.end("args")] + " auth-ip-acl=127.0.0.1" + text[match.end("args"):]
        elif acl is not None and "127.0.0.1" not in acl["acl"].split(";"):
            new = text[:acl.end("acl")] + ";127.0.0.1" + text[acl.end("acl"):]
        else:
            new = text
    elif (commented := _PA_LINE_RE.search(text)) is not None:
        new = text[:commented.start()] + seed_line + text[commented.end():]
    else:
        new = text + ("" if not text or text.endswith("\n") else "\n") + seed_line + "\n"
    return HostPlan("audio", (FileChange(P.ETC_PULSE_DEFAULT_PA, default_pa, encode(new)),),
                    notes=("restart PulseAudio as your desktop user: pulseaudio -k",))


def plan_pipewire() -> HostPlan:
    """PipeWire's PulseAudio server loads the same module (pipewire-pulse-module-native-protocol-tcp(7));
    arrays in pipewire-pulse.conf.d drop-ins append to the main file's."""
    text = ("# vfiodesk host audio: QEMU plays the VM's sound through PipeWire's PulseAudio server\n"
            "# on TCP 127.0.0.1:4713, as the seed does with PulseAudio.\n"
            "pulse.cmd = [\n"
            f'    {{ cmd = "load-module" args = "{TCP_MODULE} listen=127.0.0.1 port=4713" }}\n'
            "]\n")
    return HostPlan("audio", (FileChange(PIPEWIRE_FILE, None, encode(text)),),
                    notes=("restart it as your desktop user: systemctl --user restart pipewire-pulse",))


def plan_qemu_conf(qemu_conf: bytes | None, settings: Sequence[tuple[str, str]],
                   restart: tuple[str, ...]) -> HostPlan:
    """Set ``key = value`` lines in qemu.conf; every other line stays. A commented default
    (#vnc_allow_host_audio = 0) stays as documentation, with our line after it."""
    if qemu_conf is None:
        raise VfiodeskError(f"there is no /{P.ETC_LIBVIRT_QEMU_CONF}",
                            "install libvirt first: vfiodesk host packages")
    text = decode(qemu_conf)
    for key, value in settings:
        line = f"{key} = {value}"
        active = list(re.finditer(rf"^[ \t]*{key}[ \t]*=.*$", text, re.MULTILINE))
        commented = re.search(rf"^[ \t]*#[ \t]*{key}[ \t]*=.*$", text, re.MULTILINE)
        if active:
            last = active[-1]
            if last.group().strip() != line:
                text = text[:last.start()] + line + text[last.end():]
        elif commented is not None:
            text = text[:commented.end()] + "\n" + line + text[commented.end():]
        else:
            text += ("" if not text or text.endswith("\n") else "\n") + line + "\n"
    change = FileChange(P.ETC_LIBVIRT_QEMU_CONF, qemu_conf, encode(text))
    return HostPlan("audio", (change,), (restart,), (restart,),
                    notes=("vnc_allow_host_audio = 1: libvirt lets QEMU play to the host's sound server "
                           "even with a VNC display (the seed)",))
