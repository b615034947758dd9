from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_client import ConsoleClient, School


@pytest.fixture
def school(tmp_path: Path) -> Iterator[School]:
    made = School(tmp_path)
    yield made
    made.close()


@pytest.fixture
def console(school: School) -> Iterator[ConsoleClient]:
    client = ConsoleClient(school.app())
    yield client
    client.close()
