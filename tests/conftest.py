"""Shared fixtures: every test starts with no registry and a clean Chainlit app root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import resilience
from resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent

# Importing chainlit writes .chainlit/ and .files/ into its app root: keep that inside the repo's
# own (committed) .chainlit config rather than the cwd of whoever runs the tests.
os.environ.setdefault("CHAINLIT_APP_ROOT", str(ROOT))


@pytest.fixture(autouse=True)
def _no_registry() -> Iterator[None]:
    """Each test starts and ends with the proxies unbound (pass-through)."""
    resilience.shutdown_registry_sync()
    yield
    resilience.shutdown_registry_sync()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test advances it."""
    return FakeClock()
