from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakehost import FakeHost, desktop_host

# pytest-xdist's workers export COLUMNS=80; the CLI takes COLUMNS as the width the user chose,
# so tables would be cut to 80 columns only when the tests run in parallel.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture
def desktop(tmp_path: Path) -> FakeHost:
    return desktop_host(tmp_path / "host")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, so the two workers end together: the lab demo (test_lab.py),
    then the other lab boots, then the quick tests that fill the gaps."""
    def cost(item: pytest.Item) -> int:
        if item.path.name == "test_lab.py":
            return 0
        return 1 if item.get_closest_marker("lab") else 2
    items.sort(key=cost)  # stable: each file's tests keep their order


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true",
                     help="Rewrite tests/data/golden/*.xml from the current output.")


@pytest.fixture
def regenerate_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--regenerate-golden"))


@pytest.fixture(scope="session")
def libvirtd() -> str:
    """A real libvirtd for the session (started here when none runs: CI has no systemd)."""
    import subprocess
    import time

    uri = "qemu:///system"
    if subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, check=False).returncode:
        subprocess.run(["virtlogd", "-d"], check=False)
        subprocess.run(["libvirtd", "-d"], check=True)
        for _ in range(100):
            if subprocess.run(["virsh", "-c", uri, "version"], capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.1)
    return uri
