"""One error type for everything a user can cause or fix, and the exit codes of the CLI."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Process exit codes; distinct so scripts can tell failures apart."""

    OK = 0
    ERROR = 1
    USAGE = 2
    HOST_NOT_READY = 3
    REFUSED = 4
    INTERRUPTED = 130


class VfiodeskError(Exception):
    """A failure with a message saying what is wrong and a hint saying how to fix it."""

    exit_status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, hint: str = "", *, exit_status: ExitStatus | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_status is not None:
            self.exit_status = exit_status

    def __str__(self) -> str:
        return self.message


class InputError(VfiodeskError):
    """Bad user input (an address, a size, a profile): nothing was changed."""

    exit_status = ExitStatus.USAGE


class HostReadError(VfiodeskError):
    """A host file (sysfs, proc, a snapshot) is missing or not what was expected."""


class RefusedError(VfiodeskError):
    """A change was refused because it would hurt the host; nothing was changed."""

    exit_status = ExitStatus.REFUSED
