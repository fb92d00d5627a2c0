"""Functions decorated with breaker proxies at import time, before any registry exists.

``test_proxy.test_import_before_registry`` imports this module with no registry installed. Set
``OUTAGE.down = True`` to make every dependency here fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from resilience import CircuitBreakerProxy

dep_breaker = CircuitBreakerProxy("decorated_dep")
fallback_breaker = CircuitBreakerProxy("decorated_fb", fallback=lambda *a, **kw: "cached")


class Outage:
    """Whether the fake dependency is down."""

    down = False


OUTAGE = Outage()


def _check() -> None:
    if OUTAGE.down:
        raise ConnectionError("dependency down")


@dep_breaker
def lookup(key: str) -> str:
    """Sync call to a dependency."""
    _check()
    return f"value:{key}"


@dep_breaker
async def fetch(key: str) -> str:
    """Async call to a dependency."""
    _check()
    return f"fetched:{key}"


@dep_breaker
async def stream_tokens(n: int) -> AsyncIterator[str]:
    """Async token stream from a dependency."""
    for i in range(n):
        _check()
        yield f"tok{i}"


@dep_breaker
def sync_tokens(n: int) -> Iterator[str]:
    """Sync token stream from a dependency."""
    for i in range(n):
        _check()
        yield f"tok{i}"


@fallback_breaker
async def fetch_with_fallback(key: str) -> str:
    """Async call whose proxy has a fallback."""
    _check()
    return f"fresh:{key}"


@fallback_breaker
def lookup_with_fallback(key: str) -> str:
    """Sync call whose proxy has a fallback."""
    _check()
    return f"fresh:{key}"


@dep_breaker(fallback=lambda n: iter(["cached-tok"]))
async def stream_with_fallback(n: int) -> AsyncIterator[str]:
    """Async stream with a per-function fallback (``@proxy(fallback=...)`` form)."""
    for i in range(n):
        _check()
        yield f"tok{i}"


@dep_breaker(fallback=lambda n: iter(["cached-tok"]))
def sync_stream_with_fallback(n: int) -> Iterator[str]:
    """Sync stream with a per-function fallback."""
    for i in range(n):
        _check()
        yield f"tok{i}"
