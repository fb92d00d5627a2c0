"""Streams under a breaker: async generators (``stream``) and generators (``stream_sync``), direct and via proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from resilience import (
    BreakerConfig,
    CallTimeoutError,
    CircuitBreakerProxy,
    CircuitOpenError,
    CircuitState,
    PersistentCircuitBreaker,
    RegistryConfig,
    init_registry_sync,
)
from resilience.testing import FakeClock

NAME = "llm_stream"


def _config(**settings: Any) -> BreakerConfig:
    return BreakerConfig(**{"failure_threshold": 1, "failure_rate_threshold": None, "reset_timeout_s": 1, **settings})


@pytest.fixture(params=["direct", "proxy"])
def route(request: pytest.FixtureRequest) -> str:
    """Streams go through the breaker's own methods or through a proxy-decorated generator."""
    return str(request.param)


def _breaker(route: str, clock: FakeClock, **settings: Any) -> PersistentCircuitBreaker:
    if route == "proxy":
        return init_registry_sync(RegistryConfig(breakers={NAME: _config(**settings)}), clock=clock).get(NAME)
    return PersistentCircuitBreaker(NAME, _config(**settings), clock=clock)


def _astream(route: str, breaker: PersistentCircuitBreaker, fn: Any, *args: Any) -> AsyncIterator[Any]:
    if route == "proxy":
        return CircuitBreakerProxy(NAME)(fn)(*args)  # type: ignore[no-any-return]
    return breaker.stream(fn, *args)


def _sstream(route: str, breaker: PersistentCircuitBreaker, fn: Any, *args: Any) -> Iterator[Any]:
    if route == "proxy":
        return CircuitBreakerProxy(NAME)(fn)(*args)  # type: ignore[no-any-return]
    return breaker.stream_sync(fn, *args)


async def tokens(n: int, fail_at: int | None = None) -> AsyncIterator[str]:
    """Yield ``n`` tokens, raising ConnectionError before token ``fail_at``."""
    for i in range(n):
        if i == fail_at:
            raise ConnectionError("stream broke")
        yield f"t{i}"


def sync_tokens(n: int, fail_at: int | None = None) -> Iterator[str]:
    """Sync twin of :func:`tokens`."""
    for i in range(n):
        if i == fail_at:
            raise ConnectionError("stream broke")
        yield f"t{i}"


async def _open_then_half_open(breaker: PersistentCircuitBreaker, clock: FakeClock) -> None:
    with pytest.raises(ConnectionError):
        await breaker.call(_boom)
    clock.advance(1)


async def _boom() -> None:
    raise ConnectionError("down")


# ---------------------------------------------------------------- async generators


async def test_async_stream_success_counts_once(route: str, clock: FakeClock) -> None:
    """A fully consumed async stream yields every item and counts one success."""
    breaker = _breaker(route, clock)
    assert [t async for t in _astream(route, breaker, tokens, 3)] == ["t0", "t1", "t2"]
    assert breaker.metrics()["successes"] == 1


async def test_async_stream_failure_mid_stream_counts(route: str, clock: FakeClock) -> None:
    """A failure after some items counts as a failure (and trips); the consumer gets its own exception."""
    breaker = _breaker(route, clock)
    got: list[str] = []
    with pytest.raises(ConnectionError, match="stream broke"):
        async for item in _astream(route, breaker, tokens, 5, 2):
            got.append(item)
    assert got == ["t0", "t1"]
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await anext(_astream(route, breaker, tokens, 1))


async def test_async_stream_closed_early_counts_nothing(route: str, clock: FakeClock) -> None:
    """aclose() after a few items counts neither success nor failure."""
    breaker = _breaker(route, clock)
    async with aclosing(_astream(route, breaker, tokens, 5)) as stream:  # type: ignore[type-var]
        async for _ in stream:
            break
    metrics = breaker.metrics()
    assert (metrics["successes"], metrics["failures"]) == (0, 0)


async def test_async_stream_closed_early_frees_trial(route: str, clock: FakeClock) -> None:
    """Closing a half-open trial stream early frees its permit: the next stream is admitted and closes it."""
    breaker = _breaker(route, clock)
    await _open_then_half_open(breaker, clock)
    stream = _astream(route, breaker, tokens, 5)
    assert await anext(stream) == "t0"
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):  # the permit is held while the stream is open
        await breaker.call(_boom)
    await stream.aclose()  # type: ignore[attr-defined]
    assert breaker.state is CircuitState.HALF_OPEN
    assert [t async for t in _astream(route, breaker, tokens, 2)] == ["t0", "t1"]
    assert breaker.state is CircuitState.CLOSED


async def test_async_stream_cancelled_frees_trial(route: str, clock: FakeClock) -> None:
    """Cancelling the task that consumes a half-open trial stream frees the permit and counts nothing."""
    breaker = _breaker(route, clock)
    await _open_then_half_open(breaker, clock)
    started = asyncio.Event()

    async def hanging() -> AsyncIterator[str]:
        yield "first"
        started.set()
        await asyncio.Event().wait()
        yield "never"

    async def consume() -> None:
        async for _ in _astream(route, breaker, hanging):
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics()["failures"] == 1  # only the one that opened it
    assert [t async for t in _astream(route, breaker, tokens, 1)] == ["t0"]
    assert breaker.state is CircuitState.CLOSED


async def test_async_stream_rejected_when_open(route: str, clock: FakeClock) -> None:
    """An open breaker rejects a stream before the generator function even starts."""
    breaker = _breaker(route, clock)
    await breaker.force_open()
    started: list[bool] = []

    async def gen() -> AsyncIterator[int]:
        started.append(True)
        yield 1

    with pytest.raises(CircuitOpenError) as info:
        await anext(_astream(route, breaker, gen))
    assert info.value.state == "forced_open"
    assert started == []


async def test_async_stream_item_deadline(route: str, clock: FakeClock) -> None:
    """call_timeout_s bounds each wait for the next item: a stuck stream raises CallTimeoutError and counts."""
    breaker = _breaker(route, clock, call_timeout_s=0.01)

    async def stuck() -> AsyncIterator[str]:
        yield "first"
        await asyncio.Event().wait()
        yield "never"

    got: list[str] = []
    with pytest.raises(CallTimeoutError):
        async for item in _astream(route, breaker, stuck):
            got.append(item)
    assert got == ["first"]
    assert breaker.state is CircuitState.OPEN


async def test_async_stream_passes_through_when_disabled(route: str, clock: FakeClock) -> None:
    """A disabled breaker streams everything and counts nothing, even a failure."""
    breaker = _breaker(route, clock)
    await breaker.disable()
    with pytest.raises(ConnectionError):
        async for _ in _astream(route, breaker, tokens, 3, 1):
            pass
    assert breaker.state is CircuitState.DISABLED
    assert breaker.metrics()["failures"] == 0


# ---------------------------------------------------------------- sync generators


async def test_sync_stream_success_counts_once(route: str, clock: FakeClock) -> None:
    """A fully consumed generator yields every item and counts one success."""
    breaker = _breaker(route, clock)
    assert list(_sstream(route, breaker, sync_tokens, 3)) == ["t0", "t1", "t2"]
    assert breaker.metrics()["successes"] == 1


async def test_sync_stream_failure_mid_stream_counts(route: str, clock: FakeClock) -> None:
    """A generator failing after some items counts as a failure; the consumer gets its own exception."""
    breaker = _breaker(route, clock)
    got: list[str] = []
    with pytest.raises(ConnectionError, match="stream broke"):
        for item in _sstream(route, breaker, sync_tokens, 5, 2):
            got.append(item)  # noqa: PERF402 -- the items before the failure are the point
    assert got == ["t0", "t1"]
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        next(_sstream(route, breaker, sync_tokens, 1))


async def test_sync_stream_break_frees_trial(route: str, clock: FakeClock) -> None:
    """Breaking out of a half-open trial generator (which closes it) frees the permit and counts nothing."""
    breaker = _breaker(route, clock)
    await _open_then_half_open(breaker, clock)
    for _ in _sstream(route, breaker, sync_tokens, 5):
        break
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics()["successes"] == 0
    assert list(_sstream(route, breaker, sync_tokens, 2)) == ["t0", "t1"]
    assert breaker.state is CircuitState.CLOSED


async def test_sync_stream_close_frees_trial(route: str, clock: FakeClock) -> None:
    """close() on a half-open trial generator frees the permit."""
    breaker = _breaker(route, clock)
    await _open_then_half_open(breaker, clock)
    stream = _sstream(route, breaker, sync_tokens, 5)
    assert next(stream) == "t0"
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: None)
    stream.close()  # type: ignore[attr-defined]
    assert breaker.call_sync(lambda: "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_sync_stream_send_and_return_value(route: str, clock: FakeClock) -> None:
    """Values sent into the stream reach the generator, and its return value comes back."""
    breaker = _breaker(route, clock)

    def echo() -> Any:
        total = 0
        while True:
            value = yield total
            if value is None:
                return f"total={total}"
            total += value

    stream: Any = _sstream(route, breaker, echo)
    assert next(stream) == 0
    assert stream.send(2) == 2
    assert stream.send(3) == 5
    with pytest.raises(StopIteration) as info:
        next(stream)
    assert info.value.value == "total=5"
    assert breaker.metrics()["successes"] == 1
