from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakehost import FakeHost, desktop_host


@pytest.fixture
def desktop(tmp_path: Path) -> FakeHost:
    return desktop_host(tmp_path / "host")


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
