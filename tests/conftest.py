from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakehost import FakeHost, desktop_host


@pytest.fixture
def desktop(tmp_path: Path) -> FakeHost:
    return desktop_host(tmp_path / "host")
