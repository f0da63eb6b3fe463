"""`vm tune --diff` over the published domains in tests/data/realworld: lines in the diff
against lines that really changed (the diff of the same files with formatting normalised:
quote style, ``/>`` spacing, indentation). Equal means no formatting-only line.

    python -m bench.tune_diff
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "realworld"
TUNE_ARGS = ("--memory", "12G", "--memory-current", "12G", "--hugepages")  # memory, CPUs, features


def _changed(before: list[str], after: list[str]) -> int:
    return sum(1 for line in difflib.unified_diff(before, after, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---")))


def canonical(line: str) -> str:
    """A line as an XML reader sees it: quotes, spaces and ``<x />`` versus ``<x/>`` ignored."""
    text = re.sub(r"\s*/>", "/>", line.strip().replace("'", '"'))
    return re.sub(r"\s+", " ", text)


def diff_lines(before: str, after: str) -> int:
    """Added and removed lines in the diff of the two texts."""
    return _changed(before.splitlines(), after.splitlines())


def really_changed_lines(before: str, after: str) -> int:
    """Added and removed lines once formatting is normalised on both sides."""
    return _changed([canonical(line) for line in before.splitlines()],
                    [canonical(line) for line in after.splitlines()])


def fake_host(root: Path) -> None:
    """A 12-core SMT host (24 threads), so every published vCPU count fits."""
    from tests.test_pinning import Core, write_topology

    write_topology(root, [Core((n, n + 12)) for n in range(12)])


def tune(path: Path, root: Path, *args: str) -> tuple[str, str]:
    """The file's text and vm tune's output for it."""
    from vfiodesk.cli.main import main as vfiodesk

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = vfiodesk(["vm", "tune", "--xml", str(path), "--print-xml", "--root", str(root), *args])
    if status != 0:
        raise RuntimeError(f"{path.name}: {err.getvalue()}")
    return path.read_text(), out.getvalue()


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        fake_host(root)
        total_diff = total_real = 0
        print(f"vm tune {' '.join(TUNE_ARGS)} over {CORPUS}")
        print(f"{'file':58} {'lines':>5} {'diff':>5} {'real':>5}")
        for path in sorted(CORPUS.glob("*.xml")):
            before, after = tune(path, root, *TUNE_ARGS)
            diff, real = diff_lines(before, after), really_changed_lines(before, after)
            total_diff, total_real = total_diff + diff, total_real + real
            print(f"{path.name:58} {len(before.splitlines()):5} {diff:5} {real:5}")
        print(f"total: {total_diff} diff lines, {total_real} really changed "
              f"({total_diff - total_real} formatting-only)")
    return 0 if total_diff == total_real else 1


if __name__ == "__main__":
    sys.exit(main())
