"""Type-checked only (``mypy --strict tests/typing/api.py``): decorating keeps the function's type."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, assert_type

from resilience import CircuitBreakerProxy, PersistentCircuitBreaker, rag_api_breaker

proxy = CircuitBreakerProxy("typing")


@rag_api_breaker
def lookup(key: str, *, top_k: int = 3) -> list[str]:
    """Sync."""
    return [key] * top_k


@proxy
async def fetch(key: str) -> dict[str, int]:
    """Async."""
    return {key: 1}


@proxy(fallback=lambda n: iter(()))
async def tokens(n: int) -> AsyncIterator[str]:
    """Async generator."""
    yield str(n)


@proxy
def sync_tokens(n: int) -> Iterator[str]:
    """Generator."""
    yield str(n)


class Client:
    """Methods keep their types too."""

    @proxy
    def get(self, key: str) -> bytes:
        """Sync method."""
        return key.encode()

    @proxy
    async def aget(self, key: str) -> bytes:
        """Async method."""
        return key.encode()


async def check() -> None:
    """The decorated names keep their return types; async calls stay awaitable."""
    assert_type(lookup("a", top_k=2), list[str])
    as_callable: Callable[[str], Coroutine[Any, Any, dict[str, int]]] = fetch
    del as_callable
    awaitable: Awaitable[dict[str, int]] = fetch("a")
    assert_type(await awaitable, dict[str, int])
    assert_type(tokens(2), AsyncIterator[str])
    assert_type(sync_tokens(2), Iterator[str])
    assert_type(Client().get("k"), bytes)
    assert_type(await Client().aget("k"), bytes)


async def check_breaker(breaker: PersistentCircuitBreaker) -> None:
    """The breaker's shells return the protected function's result type."""
    assert_type(breaker.call_sync(lookup, "a"), list[str])
    assert_type(await breaker.call(fetch, "a"), dict[str, int])


def check_errors() -> None:
    """Misuse is a type error (each line below must fail; mypy reports unused ignores)."""
    lookup(1)  # type: ignore[arg-type]
    x: int = lookup("a")  # type: ignore[assignment]
    del x
