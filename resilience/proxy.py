"""Import-time-safe breaker decorators.

``rag_api_breaker = CircuitBreakerProxy("rag_api")`` is a stable object from the moment its module
is imported. Decorating a function does not look anything up: each call reads the process-wide
registry handle. While it is None (before ``init_registry``, after ``shutdown_registry``) the call
goes straight to the function; once it is set, the call goes through that registry's breaker of the
proxy's name (looked up once per registry, then cached).

The wrapper keeps the wrapped function's kind (async function, sync function, async generator,
generator) and, through ``functools.wraps``, its name, docstring and signature, which Chainlit reads
to call handlers by keyword and to decide whether to await them. Protected generators pass values
sent in (``send``) through; ``throw``/``athrow`` into a protected generator close it instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from . import _registry
from ._breaker import PersistentCircuitBreaker
from ._state import CircuitState
from .errors import CircuitOpenError

__all__ = [
    "CircuitBreakerProxy",
    "llm_breaker",
    "rag_api_breaker",
    "session_breaker",
    "stt_breaker",
    "tts_breaker",
]

F = TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = object()


def _is_async(fn: Callable[..., Any]) -> bool:
    # A callable object with ``async def __call__`` must get an async wrapper too, or nobody awaits it.
    call = type(fn).__call__ if not inspect.isfunction(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class CircuitBreakerProxy:
    """A named breaker usable as a decorator before any registry exists.

    Args:
        name: the breaker's name in the registry (configuration, logs, metrics, store keys).
        fallback: called with the same arguments when the breaker rejects a call; for async callers it
            may be sync or async, for streams it must return an iterable or async iterable.
    """

    __slots__ = ("fallback", "name")

    def __init__(self, name: str, *, fallback: Callable[..., Any] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"breaker name must be a non-empty string, got {name!r}")
        self.name = name
        self.fallback = fallback
        _registry._declared.add(name)

    def __repr__(self) -> str:
        registry = _registry._current
        bound = "unbound" if registry is None else registry.get(self.name).state.value
        return f"<CircuitBreakerProxy {self.name!r} {bound}>"

    @property
    def breaker(self) -> PersistentCircuitBreaker | None:
        """The breaker calls go through right now, or None while calls pass straight through."""
        registry = _registry._current
        return None if registry is None else registry.get(self.name)

    @overload
    def __call__(self, fn: F, /) -> F: ...

    @overload
    def __call__(self, fn: None = None, /, *, fallback: Callable[..., Any] | None = ...) -> Callable[[F], F]: ...

    def __call__(self, fn: F | None = None, /, *, fallback: Callable[..., Any] | None = _UNSET) -> F | Callable[[F], F]:
        """Decorate ``fn``; or, called with only ``fallback=``, return a decorator using that fallback."""
        chosen = self.fallback if fallback is _UNSET else fallback
        if fn is None:
            return lambda f: self._wrap(f, chosen)
        return self._wrap(fn, chosen)

    async def call(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` through the breaker (directly while unbound)."""
        registry = _registry._current
        if registry is None:
            return await fn(*args, **kwargs)
        return await registry.get(self.name).call(fn, *args, **kwargs)

    def call_sync(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` through the breaker (directly while unbound)."""
        registry = _registry._current
        if registry is None:
            return fn(*args, **kwargs)
        return registry.get(self.name).call_sync(fn, *args, **kwargs)

    def _wrap(self, fn: F, fallback: Callable[..., Any] | None) -> F:
        if isinstance(fn, staticmethod | classmethod):
            # Decorated on top of @staticmethod/@classmethod: wrap the function, keep the descriptor.
            return type(fn)(self._wrap(fn.__func__, fallback))
        if not callable(fn):
            raise TypeError(f"{self.name}: can only decorate a callable, got {fn!r}")
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_gen(self.name, fn, fallback)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):
            return _wrap_gen(self.name, fn, fallback)  # type: ignore[return-value]
        if _is_async(fn):
            return _wrap_async(self.name, fn, fallback)  # type: ignore[return-value]
        return _wrap_sync(self.name, fn, fallback)  # type: ignore[return-value]


# Each wrapper caches (registry, breaker) in one tuple so that a registry swap seen by another thread
# can never pair the new registry with the old breaker.
_NO_BINDING: tuple[Any, Any] = (None, None)
_OPEN = CircuitState.OPEN


def _wrap_sync(name: str, fn: Callable[..., Any], fallback: Callable[..., Any] | None) -> Callable[..., Any]:
    binding = _NO_BINDING

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal binding
        registry = _registry._current
        if registry is None:
            return fn(*args, **kwargs)
        if binding[0] is not registry:
            binding = (registry, registry.get(name))
        breaker = binding[1]
        if breaker._hot_sync:
            # The breaker's closed-state path, inlined: one argument-forwarding layer less.
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                breaker._error_sync(None, exc)
                raise
            breaker._ok()
            return result
        if breaker._state is _OPEN:
            now = breaker._mono()
            if now < breaker._open_until:  # rejection, inlined for the same reason
                if fallback is None:
                    raise breaker._reject(now)
                breaker._reject(now)
                return fallback(*args, **kwargs)
        if fallback is None:
            return breaker.call_sync(fn, *args, **kwargs)
        try:
            return breaker.call_sync(fn, *args, **kwargs)
        except CircuitOpenError as exc:
            if exc.name != name:  # another breaker's rejection from inside fn: not ours to replace
                raise
            return fallback(*args, **kwargs)

    return wrapper


def _wrap_async(
    name: str, fn: Callable[..., Awaitable[Any]], fallback: Callable[..., Any] | None
) -> Callable[..., Any]:
    binding = _NO_BINDING

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal binding
        registry = _registry._current
        if registry is None:
            return await fn(*args, **kwargs)
        if binding[0] is not registry:
            binding = (registry, registry.get(name))
        breaker = binding[1]
        if breaker._hot_async:
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await breaker._error(None, exc)
                raise
            breaker._ok()
            return result
        if breaker._state is _OPEN:
            now = breaker._mono()
            if now < breaker._open_until:
                if fallback is None:
                    raise breaker._reject(now)
                breaker._reject(now)
                result = fallback(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result
        if fallback is None:
            return await breaker.call(fn, *args, **kwargs)
        try:
            return await breaker.call(fn, *args, **kwargs)
        except CircuitOpenError as exc:
            if exc.name != name:
                raise
            result = fallback(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

    return wrapper


def _wrap_gen(name: str, fn: Callable[..., Any], fallback: Callable[..., Iterable[Any]] | None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        registry = _registry._current
        if registry is None:
            return (yield from fn(*args, **kwargs))
        stream = registry.get(name).stream_sync(fn, *args, **kwargs)
        try:
            first = next(stream)
        except StopIteration as stop:
            return stop.value
        except CircuitOpenError as exc:
            if fallback is None or exc.name != name:
                raise
            return (yield from fallback(*args, **kwargs))
        try:
            sent = yield first
            while True:
                item = stream.send(sent) if sent is not None else next(stream)
                sent = yield item
        except StopIteration as stop:
            return stop.value
        finally:
            stream.close()

    return wrapper


def _wrap_async_gen(
    name: str, fn: Callable[..., AsyncIterator[Any]], fallback: Callable[..., Any] | None
) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        registry = _registry._current
        if registry is None:
            async for item in fn(*args, **kwargs):
                yield item
            return
        stream = registry.get(name).stream(fn, *args, **kwargs)
        try:
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
            except CircuitOpenError as exc:
                if fallback is None or exc.name != name:
                    raise
                replacement = fallback(*args, **kwargs)
                if hasattr(replacement, "__aiter__"):
                    async for item in replacement:
                        yield item
                else:
                    for item in replacement:
                        yield item
                return
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    return wrapper


rag_api_breaker = CircuitBreakerProxy("rag_api")
"""Calls to the remote RAG service."""
llm_breaker = CircuitBreakerProxy("llm")
"""Calls to the OpenAI-compatible chat model (streams included)."""
stt_breaker = CircuitBreakerProxy("stt")
"""Speech-to-text calls."""
tts_breaker = CircuitBreakerProxy("tts")
"""Text-to-speech calls."""
session_breaker = CircuitBreakerProxy("session")
"""Session-store calls (conversation history)."""
