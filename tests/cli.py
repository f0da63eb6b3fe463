"""Run the CLI in-process, as a user would from a shell, and capture what it prints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from vfiodesk.cli.main import main


@dataclass
class CliResult:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    status = main(list(args))
    captured = capsys.readouterr()
    return CliResult(status, captured.out, captured.err)
