"""Shared fixtures: every test starts with no registry and a clean Chainlit app root."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import resilience
from resilience.testing import FakeClock

T = TypeVar("T")
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


class Harness:
    """Runs zero-argument sync callables through a breaker by one of four paths.

    ``sync``/``async`` use ``call_sync``/``call`` on the breaker; ``proxy_sync``/``proxy_async`` decorate
    the callable with a :class:`resilience.CircuitBreakerProxy` bound to a registry holding the breaker,
    which exercises the proxy's inlined hot paths.
    """

    def __init__(self, kind: str, clock: FakeClock) -> None:
        self.kind = kind
        self.clock = clock
        self.is_async = kind.endswith("async")

    def breaker(self, name: str = "svc", **settings: Any) -> resilience.PersistentCircuitBreaker:
        """A breaker with ``settings`` on the fake clock (the registry's own one for proxy paths)."""
        config = resilience.BreakerConfig(**settings)
        if self.kind.startswith("proxy"):
            registry = resilience.init_registry_sync(
                resilience.RegistryConfig(breakers={name: config}), clock=self.clock
            )
            return registry.get(name)
        return resilience.PersistentCircuitBreaker(name, config, clock=self.clock)

    async def call(self, breaker: resilience.PersistentCircuitBreaker, fn: Callable[[], T]) -> T:
        """Run ``fn`` through ``breaker`` by this harness's path."""

        async def afn() -> T:
            return fn()

        if self.kind == "sync":
            return breaker.call_sync(fn)
        if self.kind == "async":
            return await breaker.call(afn)
        if self.kind == "proxy_sync":
            return resilience.CircuitBreakerProxy(breaker.name)(fn)()
        return await resilience.CircuitBreakerProxy(breaker.name)(afn)()

    async def fail(self, breaker: resilience.PersistentCircuitBreaker, exc: BaseException | None = None) -> None:
        """One call that raises ``exc`` (a ConnectionError by default), which the test expects back."""
        error = exc if exc is not None else ConnectionError("down")

        def boom() -> None:
            raise error

        with pytest.raises(type(error)):
            await self.call(breaker, boom)

    async def ok(self, breaker: resilience.PersistentCircuitBreaker, slow_s: float = 0.0) -> None:
        """One successful call, taking ``slow_s`` seconds of fake time."""

        def fine() -> str:
            if slow_s:
                self.clock.advance(slow_s)
            return "ok"

        assert await self.call(breaker, fine) == "ok"

    async def manual(self, breaker: resilience.PersistentCircuitBreaker, action: str) -> None:
        """``force_open``/``reset``/``force_close``/``disable`` in this harness's sync or async form."""
        if self.is_async:
            await getattr(breaker, action)()
        else:
            getattr(breaker, action + "_sync")()


@pytest.fixture(params=["sync", "async", "proxy_sync", "proxy_async"])
def harness(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    """Each core-rule test runs through the breaker's two shells and the proxy's two wrappers."""
    return Harness(request.param, clock)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ carries the ``integration`` marker (``-m 'not integration'``)."""
    integration_dir = ROOT / "tests" / "integration"
    for item in items:
        if integration_dir in item.path.parents:
            item.add_marker(pytest.mark.integration)
