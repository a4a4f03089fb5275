"""Reliability fixtures: a fleet of its own for every test (see `tests.reliability.fleet`).

Sizes come from ``HALO_RELIABILITY_SCALE`` (`tests.reliability.scale`): CI runs the ``ci`` sizes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.fleet import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A private Redis (with AOF), a fake Halo and a producer; workers are started by the
    test. Skipped locally when redis-server is missing; a failure in CI."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not on the PATH; the reliability tests need it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with Fleet(tmp_path) as made:
        yield made
