"""README's first two commands are the project's contract: keep them true."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    """The indented command lines at the top of README.md, before the first rule."""
    top = (ROOT / "README.md").read_text().split("\n---\n", 1)[0]
    return [line.strip() for line in top.splitlines() if line.startswith("    ")]


def test_readme_starts_with_the_main_job_and_the_test_command() -> None:
    main_job, tests = readme_commands()
    assert main_job == "./scripts/setup && .venv/bin/vfiodesk lab demo"
    assert tests == "./scripts/setup && .venv/bin/python -m pytest"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = readme_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
