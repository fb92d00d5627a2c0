"""Smoke test of the public surface (the full suites live beside it)."""

from __future__ import annotations

import pytest

from resilience import CircuitOpenError, init_registry_sync, rag_api_breaker
from resilience.testing import FakeClock


def test_trip_and_recover(clock: FakeClock) -> None:
    """Five failures open the default breaker; after the reset timeout a success closes it."""

    @rag_api_breaker
    def fetch(fail: bool) -> str:
        if fail:
            raise ConnectionError("down")
        return "ok"

    assert fetch(False) == "ok"  # pass-through before init
    init_registry_sync(environ={}, clock=clock)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            fetch(True)
    with pytest.raises(CircuitOpenError) as info:
        fetch(False)
    assert info.value.name == "rag_api"
    assert info.value.retry_after_s == pytest.approx(30.0)
    clock.advance(30.0)
    assert fetch(False) == "ok"
    assert rag_api_breaker.breaker is not None
    assert rag_api_breaker.breaker.state.value == "closed"
