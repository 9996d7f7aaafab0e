from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A real server and agents on loopback; every process is stopped at the end."""
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()
