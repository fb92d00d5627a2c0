"""CircuitBreakerProxy: import-time safety, late binding, kind and signature preservation, methods, fallbacks."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import resilience
from resilience import (
    BreakerConfig,
    CircuitBreakerProxy,
    CircuitOpenError,
    CircuitState,
    RegistryConfig,
    get_registry,
    init_registry,
    init_registry_sync,
    shutdown_registry,
    shutdown_registry_sync,
)
from resilience.testing import FakeClock

TRIP_FAST = BreakerConfig(failure_threshold=1, failure_rate_threshold=None, reset_timeout_s=10)


def _init(clock: FakeClock, *names: str) -> resilience.CircuitBreakerRegistry:
    return init_registry_sync(RegistryConfig(breakers=dict.fromkeys(names, TRIP_FAST)), clock=clock)


# ---------------------------------------------------------------- the import-before-registry story


async def test_import_before_registry(clock: FakeClock) -> None:
    """Decorated at import with no registry: pass through, then protect once bound, then pass through again."""
    sys.modules.pop("tests.unit.decorated_module", None)
    assert get_registry() is None
    mod = importlib.import_module("tests.unit.decorated_module")
    mod.OUTAGE.down = False
    try:
        # 1. No registry: every kind passes straight through.
        assert mod.lookup("a") == "value:a"
        assert await mod.fetch("a") == "fetched:a"
        assert [t async for t in mod.stream_tokens(2)] == ["tok0", "tok1"]
        assert list(mod.sync_tokens(2)) == ["tok0", "tok1"]
        assert await mod.fetch_with_fallback("a") == "fresh:a"
        mod.OUTAGE.down = True
        for _ in range(3):  # failures while unbound count nowhere
            with pytest.raises(ConnectionError):
                mod.lookup("a")

        # 2. The registry starts: the same functions are now protected.
        registry = await init_registry(
            RegistryConfig(breakers={"decorated_dep": TRIP_FAST, "decorated_fb": TRIP_FAST}), clock=clock
        )
        with pytest.raises(ConnectionError):
            await mod.fetch("a")
        assert registry.get("decorated_dep").state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError) as info:
            mod.lookup("a")
        assert info.value.name == "decorated_dep"
        with pytest.raises(CircuitOpenError):
            await mod.fetch("a")
        with pytest.raises(CircuitOpenError):
            await anext(mod.stream_tokens(2))
        with pytest.raises(CircuitOpenError):
            next(mod.sync_tokens(2))
        assert [t async for t in mod.stream_with_fallback(2)] == ["cached-tok"]
        assert list(mod.sync_stream_with_fallback(2)) == ["cached-tok"]
        with pytest.raises(ConnectionError):
            await mod.fetch_with_fallback("a")  # its own failure is not hidden by the fallback
        assert await mod.fetch_with_fallback("a") == "cached"
        assert mod.lookup_with_fallback("a") == "cached"

        # 3. Shutdown: pass-through again, even while the dependency is still down.
        await shutdown_registry()
        with pytest.raises(ConnectionError):
            mod.lookup("a")
        mod.OUTAGE.down = False
        assert mod.lookup("a") == "value:a"
        assert await mod.fetch("a") == "fetched:a"
        assert [t async for t in mod.stream_tokens(1)] == ["tok0"]
        assert list(mod.sync_tokens(1)) == ["tok0"]
    finally:
        mod.OUTAGE.down = False


def test_stable_globals() -> None:
    """The app's proxies exist at import, with their documented names, unbound until init."""
    proxies = {
        resilience.rag_api_breaker: "rag_api",
        resilience.llm_breaker: "llm",
        resilience.stt_breaker: "stt",
        resilience.tts_breaker: "tts",
        resilience.session_breaker: "session",
    }
    for proxy, name in proxies.items():
        assert isinstance(proxy, CircuitBreakerProxy)
        assert proxy.name == name
        assert proxy.breaker is None
        assert repr(proxy) == f"<CircuitBreakerProxy {name!r} unbound>"


def test_breaker_property_binds_late(clock: FakeClock) -> None:
    """proxy.breaker is None while unbound and the registry's breaker once bound."""
    proxy = CircuitBreakerProxy("late")
    registry = _init(clock)
    assert proxy.breaker is registry.get("late")
    assert repr(proxy) == "<CircuitBreakerProxy 'late' closed>"
    shutdown_registry_sync()
    assert proxy.breaker is None


def test_rebinds_when_registry_is_replaced(clock: FakeClock) -> None:
    """A decorated function follows a registry swap: a fresh registry's breaker is closed again."""
    proxy = CircuitBreakerProxy("swap")

    @proxy
    def flaky(fail: bool) -> str:
        if fail:
            raise ConnectionError
        return "ok"

    _init(clock, "swap")
    with pytest.raises(ConnectionError):
        flaky(True)
    with pytest.raises(CircuitOpenError):
        flaky(False)
    _init(clock, "swap")
    assert flaky(False) == "ok"


def test_invalid_proxy_arguments() -> None:
    """An empty name and a non-callable target are refused."""
    with pytest.raises(ValueError, match="non-empty"):
        CircuitBreakerProxy("")
    with pytest.raises(TypeError, match="callable"):
        CircuitBreakerProxy("x")(42)  # type: ignore[call-overload]


# ---------------------------------------------------------------- kind and signature


async def _async_fn(query: str, *, top_k: int = 5) -> list[str]:
    """Retrieve passages."""
    return [query] * top_k


def _sync_fn(query: str, *, top_k: int = 5) -> list[str]:
    """Retrieve passages synchronously."""
    return [query] * top_k


async def _agen_fn(prompt: str, limit: int = 2) -> AsyncIterator[str]:
    """Stream tokens."""
    for i in range(limit):
        yield f"{prompt}{i}"


def _gen_fn(prompt: str, limit: int = 2) -> Iterator[str]:
    """Stream tokens synchronously."""
    for i in range(limit):
        yield f"{prompt}{i}"


KINDS = [
    (_async_fn, inspect.iscoroutinefunction),
    (_sync_fn, lambda f: not (inspect.iscoroutinefunction(f) or inspect.isgeneratorfunction(f))),
    (_agen_fn, inspect.isasyncgenfunction),
    (_gen_fn, inspect.isgeneratorfunction),
]


@pytest.mark.parametrize(("fn", "is_kind"), KINDS, ids=["async", "sync", "async_gen", "gen"])
def test_wrapper_keeps_kind(fn: Any, is_kind: Any) -> None:
    """The wrapper is an async function, sync function, async generator or generator like the original."""
    wrapped = CircuitBreakerProxy("k")(fn)
    assert is_kind(wrapped)
    assert wrapped is not fn


@pytest.mark.parametrize("fn", [k[0] for k in KINDS], ids=["async", "sync", "async_gen", "gen"])
def test_wrapper_keeps_metadata(fn: Any) -> None:
    """functools.wraps: name, qualname, docstring, module, annotations, signature and __wrapped__."""
    wrapped = CircuitBreakerProxy("k")(fn)
    for attr in ("__name__", "__qualname__", "__doc__", "__module__", "__annotations__"):
        assert getattr(wrapped, attr) == getattr(fn, attr)
    assert wrapped.__wrapped__ is fn
    assert inspect.signature(wrapped) == inspect.signature(fn)


async def test_arguments_and_results_pass_through(clock: FakeClock) -> None:
    """Positional and keyword arguments reach the function and its result comes back, bound or not."""
    proxy = CircuitBreakerProxy("args")
    afn, sfn, agen, gen = (proxy(k[0]) for k in KINDS)
    for _ in range(2):
        assert await afn("q", top_k=2) == ["q", "q"]
        assert sfn("q", top_k=1) == ["q"]
        assert [t async for t in agen("p", limit=3)] == ["p0", "p1", "p2"]
        assert list(gen("p", 1)) == ["p0"]
        _init(clock)


async def test_callable_object_with_async_call_gets_async_wrapper(clock: FakeClock) -> None:
    """An object whose __call__ is async is wrapped by an async function, so callers await it."""

    class Client:
        async def __call__(self, x: int) -> int:
            return x * 2

    wrapped = CircuitBreakerProxy("obj")(Client())
    assert inspect.iscoroutinefunction(wrapped)
    assert await wrapped(4) == 8
    _init(clock)
    assert await wrapped(5) == 10


async def test_proxy_call_helpers(clock: FakeClock) -> None:
    """proxy.call / proxy.call_sync run a function through the breaker, or directly while unbound."""
    proxy = CircuitBreakerProxy("helpers")
    assert proxy.call_sync(_sync_fn, "a", top_k=1) == ["a"]
    assert await proxy.call(_async_fn, "a", top_k=1) == ["a"]
    _init(clock, "helpers")
    with pytest.raises(ConnectionError):
        proxy.call_sync(_raise_conn)
    with pytest.raises(CircuitOpenError):
        await proxy.call(_async_fn, "a")
    with pytest.raises(CircuitOpenError):
        proxy.call_sync(_sync_fn, "a")


def _raise_conn() -> None:
    raise ConnectionError


# ---------------------------------------------------------------- methods


class Service:
    """A client class with protected methods of every flavour."""

    proxy = CircuitBreakerProxy("svc_methods")

    def __init__(self) -> None:
        self.down = False

    @proxy
    def get(self, key: str) -> str:
        """Sync method."""
        if self.down:
            raise ConnectionError
        return f"{key}@{id(self)}"

    @proxy
    async def aget(self, key: str) -> str:
        """Async method."""
        if self.down:
            raise ConnectionError
        return f"{key}@{id(self)}"

    @classmethod
    @proxy
    def make(cls, key: str) -> str:
        """Class method."""
        return f"{cls.__name__}:{key}"

    @classmethod
    @proxy
    async def amake(cls, key: str) -> str:
        """Async class method."""
        return f"{cls.__name__}:{key}"

    @staticmethod
    @proxy
    def plain(key: str) -> str:
        """Static method."""
        return key


async def test_methods_bind_self_and_cls(clock: FakeClock) -> None:
    """Instance, class and static methods receive self/cls correctly, unbound and bound."""
    svc = Service()
    for _ in range(2):
        assert svc.get("k") == f"k@{id(svc)}"
        assert await svc.aget("k") == f"k@{id(svc)}"
        assert Service.make("k") == "Service:k"
        assert await Service.amake("k") == "Service:k"
        assert Service.plain("k") == "k"
        _init(clock, "svc_methods")
    assert inspect.iscoroutinefunction(svc.aget)
    assert inspect.signature(svc.get) == inspect.signature(Service.get.__wrapped__).replace(
        parameters=list(inspect.signature(Service.get.__wrapped__).parameters.values())[1:]
    )


async def test_methods_are_protected(clock: FakeClock) -> None:
    """A method's failures trip the proxy's breaker, which then rejects every method of that proxy."""
    _init(clock, "svc_methods")
    svc = Service()
    svc.down = True
    with pytest.raises(ConnectionError):
        await svc.aget("k")
    svc.down = False
    with pytest.raises(CircuitOpenError):
        svc.get("k")
    with pytest.raises(CircuitOpenError):
        Service.make("k")


# ---------------------------------------------------------------- fallbacks


async def test_sync_fallback_gets_same_arguments(clock: FakeClock) -> None:
    """When the breaker rejects, the fallback is called with the caller's arguments."""
    seen: list[tuple[Any, ...]] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "stale"

    @CircuitBreakerProxy("fb_sync", fallback=fallback)
    def fetch(key: str, *, fresh: bool = True) -> str:
        raise ConnectionError

    registry = _init(clock, "fb_sync")
    with pytest.raises(ConnectionError):  # the function's own failure is re-raised, not replaced
        fetch("a", fresh=False)
    assert fetch("b", fresh=False) == "stale"
    assert seen == [(("b",), {"fresh": False})]
    assert registry.get("fb_sync").metrics()["rejections"] == 1


@pytest.mark.parametrize("async_fallback", [False, True])
async def test_async_fallback_sync_or_async(clock: FakeClock, async_fallback: bool) -> None:
    """An async function's fallback may be sync or async; its result is what the caller awaits."""

    async def afb(key: str) -> str:
        return f"async-stale:{key}"

    def sfb(key: str) -> str:
        return f"sync-stale:{key}"

    proxy = CircuitBreakerProxy("fb_async", fallback=afb if async_fallback else sfb)

    @proxy
    async def fetch(key: str) -> str:
        raise ConnectionError

    _init(clock, "fb_async")
    with pytest.raises(ConnectionError):
        await fetch("a")
    expected = "async-stale:b" if async_fallback else "sync-stale:b"
    assert await fetch("b") == expected


async def test_fallback_decorator_form_overrides_proxy_fallback(clock: FakeClock) -> None:
    """``@proxy(fallback=...)`` sets a per-function fallback; ``fallback=None`` turns the proxy's off."""
    proxy = CircuitBreakerProxy("fb_form", fallback=lambda: "proxy-level")

    @proxy(fallback=lambda: "function-level")
    def a() -> str:
        return "live"

    @proxy(fallback=None)
    def b() -> str:
        return "live"

    @proxy
    def c() -> str:
        return "live"

    assert (a(), b(), c()) == ("live", "live", "live")
    _init(clock, "fb_form").get("fb_form").force_open_sync()
    assert a() == "function-level"
    assert c() == "proxy-level"
    with pytest.raises(CircuitOpenError):
        b()


async def test_fallback_in_half_open_rejection(clock: FakeClock) -> None:
    """A call rejected for want of a trial slot also gets the fallback."""
    proxy = CircuitBreakerProxy("fb_half", fallback=lambda: "fallback")
    inner: list[str] = []

    @proxy
    def trial() -> str:
        inner.append(nested())
        return "trial"

    @proxy
    def nested() -> str:
        return "nested-ran"

    registry = _init(clock, "fb_half")
    with pytest.raises(ConnectionError):
        proxy.call_sync(_raise_conn)
    clock.advance(10)
    assert trial() == "trial"
    assert inner == ["fallback"]
    assert registry.get("fb_half").state is CircuitState.CLOSED


async def test_async_generator_fallback_sync_or_async_iterable(clock: FakeClock) -> None:
    """An async stream's fallback may return a plain or an async iterable."""

    async def cached_async(n: int) -> AsyncIterator[str]:
        yield "cached-async"

    proxy = CircuitBreakerProxy("fb_agen")

    @proxy(fallback=lambda n: ["cached-list"] * n)
    async def a(n: int) -> AsyncIterator[str]:
        yield "live"

    @proxy(fallback=cached_async)
    async def b(n: int) -> AsyncIterator[str]:
        yield "live"

    _init(clock, "fb_agen").get("fb_agen").force_open_sync()
    assert [t async for t in a(2)] == ["cached-list", "cached-list"]
    assert [t async for t in b(2)] == ["cached-async"]


async def test_generator_fallback(clock: FakeClock) -> None:
    """A generator's fallback returns an iterable that is streamed instead."""

    @CircuitBreakerProxy("fb_gen", fallback=lambda n: (f"c{i}" for i in range(n)))
    def tokens(n: int) -> Iterator[str]:
        yield "live"

    _init(clock, "fb_gen").get("fb_gen").force_open_sync()
    assert list(tokens(3)) == ["c0", "c1", "c2"]


async def test_no_fallback_raises_circuit_open(clock: FakeClock) -> None:
    """Without a fallback, a rejected call raises CircuitOpenError for every kind."""
    proxy = CircuitBreakerProxy("nofb")
    afn, sfn, agen, gen = (proxy(k[0]) for k in KINDS)
    _init(clock).get("nofb").force_open_sync()
    with pytest.raises(CircuitOpenError):
        await afn("q")
    with pytest.raises(CircuitOpenError):
        sfn("q")
    with pytest.raises(CircuitOpenError):
        await anext(agen("p"))
    with pytest.raises(CircuitOpenError):
        next(gen("p"))


def test_fallback_ignores_another_breakers_rejection(clock: FakeClock) -> None:
    """A CircuitOpenError from an inner breaker is not replaced by the outer proxy's fallback."""
    init_registry_sync(environ={}, clock=clock)

    @CircuitBreakerProxy("outer", fallback=lambda: "fallback")
    def outer() -> str:
        raise CircuitOpenError("inner", 1.0, "open")

    with pytest.raises(CircuitOpenError) as info:
        outer()
    assert info.value.name == "inner"


async def test_proxy_on_top_of_staticmethod_and_classmethod_keeps_async(clock: FakeClock) -> None:
    """Decorating above @staticmethod/@classmethod still protects the async function (failures count)."""
    init_registry_sync(RegistryConfig(breakers={"deco": BreakerConfig(failure_threshold=1)}), clock=clock)

    class Service:
        @CircuitBreakerProxy("deco")
        @staticmethod
        async def static_fetch() -> str:
            raise ConnectionError("down")

        @CircuitBreakerProxy("deco")
        @classmethod
        async def class_fetch(cls) -> str:
            return cls.__name__

    assert inspect.iscoroutinefunction(Service.static_fetch)
    with pytest.raises(ConnectionError):
        await Service.static_fetch()
    with pytest.raises(CircuitOpenError):
        await Service.class_fetch()
