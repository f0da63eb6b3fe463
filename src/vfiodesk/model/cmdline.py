"""The kernel command line as a sequence of parameters (Documentation/admin-guide/kernel-parameters.rst)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelParam:
    """``name`` or ``name=value``; the kernel treats '-' and '_' in names alike."""

    name: str
    value: str | None

    @classmethod
    def parse(cls, token: str) -> KernelParam:
        name, sep, value = token.partition("=")
        return cls(name, value if sep else None)

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"


@dataclass(frozen=True)
class KernelCmdline:
    """An ordered kernel command line."""

    params: tuple[KernelParam, ...]

    @classmethod
    def parse(cls, text: str) -> KernelCmdline:
        # The kernel splits on spaces and honours double quotes (lib/cmdline.c next_arg).
        lexer = shlex.shlex(text.strip(), posix=True)
        lexer.whitespace_split = True
        lexer.quotes = '"'
        lexer.escape = ""
        return cls(tuple(KernelParam.parse(token) for token in lexer))

    def values(self, name: str) -> list[str | None]:
        """Every value given for ``name`` (the kernel uses the last one for most)."""
        key = name.replace("-", "_")
        return [param.value for param in self.params if param.key == key]

    def last(self, name: str) -> str | None:
        values = self.values(name)
        return values[-1] if values else None

    def has(self, name: str) -> bool:
        return bool(self.values(name))

    def options(self, name: str) -> list[str]:
        """Comma-separated options of every ``name=a,b`` (intel_iommu=on,igfx_off)."""
        return [opt for value in self.values(name) if value for opt in value.split(",") if opt]

    def __str__(self) -> str:
        return " ".join(str(param) for param in self.params)
