"""Benchmark runner: each benchmark prints its time as a ratio against references measured
in the same run, on the same machine, so the numbers mean something anywhere.

    python -m bench [NAME...] [--repeat N]
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import pkgutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Command:
    label: str
    argv: Sequence[str]
    env: dict[str, str] | None = None
    stdin: str | None = None  # a file fed on standard input


@dataclass
class Benchmark:
    name: str
    subject: Command
    references: list[Command]
    goals: dict[str, float] = field(default_factory=dict)  # reference label -> max ratio


def time_command(command: Command, repeat: int) -> float:
    """Median wall time of ``repeat`` runs (after one warm-up run)."""
    samples = []
    for index in range(repeat + 1):
        with open(command.stdin or "/dev/null", "rb") as stdin:
            started = time.perf_counter()
            subprocess.run(command.argv, env=command.env, stdin=stdin, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
        if index:
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def run(benchmark: Benchmark, repeat: int) -> list[str]:
    subject = time_command(benchmark.subject, repeat)
    lines = [f"{benchmark.name}: {benchmark.subject.label} {subject * 1000:.1f} ms"]
    for reference in benchmark.references:
        seconds = time_command(reference, repeat)
        ratio = subject / seconds
        goal = benchmark.goals.get(reference.label)
        verdict = "" if goal is None else f" (goal <= {goal:.2f}x: {'met' if ratio <= goal else 'MISSED'})"
        lines.append(f"  vs {reference.label} {seconds * 1000:.1f} ms: ratio {ratio:.2f}x{verdict}")
    return lines


def discover() -> dict[str, object]:
    modules = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("bench_"):
            modules[info.name[len("bench_"):]] = importlib.import_module(f"bench.{info.name}")
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    # Byte-compiled, as an installed package is: with PYTHONDONTWRITEBYTECODE set, or after an
    # edit, a source tree would otherwise be compiled again at every timed start.
    import vfiodesk

    compileall.compile_dir(Path(vfiodesk.__file__).parent, quiet=1)
    for name, module in sorted(discover().items()):
        if args.names and name not in args.names:
            continue
        if hasattr(module, "report"):  # benchmarks that time themselves (inside the lab)
            print("\n".join(module.report(args.repeat)), flush=True)
            continue
        for benchmark in module.benchmarks():  # type: ignore[attr-defined]
            print("\n".join(run(benchmark, args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
