"""Desktop devices edited into a domain: evdev input, audio, shared memory (Scream, Looking Glass)."""

from __future__ import annotations

import re

from vfiodesk.domxml.document import DomainDocument
from vfiodesk.errors import InputError


def set_evdev(doc: DomainDocument, keyboard: str, mouse: str) -> None:
    """evdev passthrough (formatdomain.html#input-devices): the keyboard grabs all and both
    Ctrl keys toggle between host and VM: the modern replacement of Synergy on one machine."""
    for element in [e for e in doc.iter_devices("input") if e.get("type") == "evdev"]:
        doc.remove(element)
    kbd = doc.append(doc.devices, "input", {"type": "evdev"})
    doc.append(kbd, "source", {"dev": keyboard, "grab": "all", "grabToggle": "ctrl-ctrl", "repeat": "on"})
    ptr = doc.append(doc.devices, "input", {"type": "evdev"})
    doc.append(ptr, "source", {"dev": mouse})


AUDIO_BACKENDS = ("pulseaudio", "none", "scream")


def set_audio(doc: DomainDocument, backend: str, server: str | None = None) -> None:
    """An ICH9 HDA sound card fed by libvirt's <audio> (formatdomain.html#audio-backends): the
    modern form of the seed's QEMU_AUDIO_DRV environment in qemu:commandline. Scream sends the
    sound over shared memory instead, so the emulated card goes."""
    for sound in list(doc.iter_devices("sound")):
        doc.remove(sound)
    for audio in list(doc.iter_devices("audio")):
        doc.remove(audio)
    _remove_shmem(doc, "scream-ivshmem")
    if backend == "scream":
        _add_shmem(doc, "scream-ivshmem", 2)
        return
    audio = doc.append(doc.devices, "audio", {"id": "1", "type": backend})
    if backend == "pulseaudio" and server:
        audio.set("serverName", server)
    sound = doc.append(doc.devices, "sound", {"model": "ich9"})
    doc.append(sound, "audio", {"id": "1"})


def set_looking_glass(doc: DomainDocument, size_mib: int) -> None:
    _remove_shmem(doc, "looking-glass")
    _add_shmem(doc, "looking-glass", size_mib)


# Looking Glass's host application captures up to 16K frames; below 320x200 nothing is usable.
_RESOLUTION = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")
RESOLUTION_MIN = (320, 200)
RESOLUTION_MAX = (16384, 16384)


def parse_resolution(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` within what a monitor can show; anything else is refused by name."""
    match = _RESOLUTION.match(text)
    if match is None:
        raise InputError(f"{text[:40]!r} is not a resolution", "write WIDTHxHEIGHT, e.g. 2560x1440")
    width, height = int(match[1]), int(match[2])
    if not (RESOLUTION_MIN[0] <= width <= RESOLUTION_MAX[0]
            and RESOLUTION_MIN[1] <= height <= RESOLUTION_MAX[1]):
        raise InputError(f"resolution {width}x{height} is outside "
                         f"{RESOLUTION_MIN[0]}x{RESOLUTION_MIN[1]}..{RESOLUTION_MAX[0]}x{RESOLUTION_MAX[1]}",
                         "give the VM monitor's resolution, e.g. 1920x1080")
    return width, height


def looking_glass_size(width: int, height: int) -> int:
    """MiB for Looking Glass: two 32-bit frames plus 10 MiB, rounded up to a power of two
    (looking-glass.io, "Determining memory"); integer arithmetic, exact at any size."""
    needed = width * height * 4 * 2 + 10 * 1024 * 1024
    size = 1
    while size * 1024 * 1024 < needed:
        size *= 2
    return size


def _add_shmem(doc: DomainDocument, name: str, size_mib: int) -> None:
    shmem = doc.append(doc.devices, "shmem", {"name": name})
    doc.append(shmem, "model", {"type": "ivshmem-plain"})
    doc.append(shmem, "size", {"unit": "M"}, str(size_mib))


def _remove_shmem(doc: DomainDocument, name: str) -> None:
    for shmem in list(doc.iter_devices("shmem")):
        if shmem.get("name") == name:
            doc.remove(shmem)
