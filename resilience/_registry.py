"""The breaker registry and the process-wide handle the proxies read.

``_current`` is None until :func:`init_registry` (or its sync twin) runs on app start, and None again
after :func:`shutdown_registry`. Proxies read it on every call, so they pass calls straight through
while it is None and bind to the registry's breakers once it is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._breaker import EVENT_KINDS, Listener, PersistentCircuitBreaker
from ._store import BreakerStore, MemoryStore
from .clock import Clock, SystemClock
from .config import RegistryConfig, load_config

__all__ = [
    "CircuitBreakerRegistry",
    "get_registry",
    "init_registry",
    "init_registry_sync",
    "shutdown_registry",
    "shutdown_registry_sync",
]

logger = logging.getLogger("resilience")

CONFIG_ENV = "RESILIENCE_CONFIG"
REDIS_URL_ENV = "REDIS_URL"
KEY_PREFIX_ENV = "RESILIENCE_KEY_PREFIX"


class CircuitBreakerRegistry:
    """Named breakers sharing one store and one clock, built on first use.

    Args:
        config: defaults and per-name configurations (default: built-in defaults).
        store: shared state (default: a :class:`MemoryStore`).
        clock: time source for every breaker (default: :class:`SystemClock`).
    """

    def __init__(
        self,
        config: RegistryConfig | None = None,
        *,
        store: BreakerStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config if config is not None else RegistryConfig()
        self.store: BreakerStore = store if store is not None else MemoryStore()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._breakers: dict[str, PersistentCircuitBreaker] = {}
        self._listeners: list[tuple[Listener, frozenset[str]]] = []

    def get(self, name: str) -> PersistentCircuitBreaker:
        """The breaker called ``name``, created on first use (unknown names get the defaults, logged once)."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                if name not in self.config.breakers and name.lower() not in self.config.breakers:
                    logger.info(
                        "resilience.default_breaker breaker=%s: no configuration for this name, using defaults",
                        name,
                        extra={"breaker": name},
                    )
                breaker = PersistentCircuitBreaker(name, self.config.for_name(name), self.store, self.clock)
                for listener, kinds in self._listeners:
                    breaker.add_listener(listener, kinds)
                self._breakers[name] = breaker
        return breaker

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def names(self) -> list[str]:
        """Names of the breakers built so far, sorted."""
        return sorted(self._breakers)

    def add_listener(self, listener: Listener, kinds: Iterable[str] = EVENT_KINDS) -> None:
        """Attach ``listener`` to every breaker, present and future."""
        kinds = frozenset(kinds)
        with self._lock:
            self._listeners.append((listener, kinds))
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.add_listener(listener, kinds)

    def status(self) -> dict[str, Any]:
        """Store health and every breaker's metrics, JSON-safe."""
        health = self.store.health()
        return {
            "store": {"kind": health.kind, "healthy": health.healthy, "detail": health.detail, **health.extra},
            "breakers": {name: self._breakers[name].metrics() for name in self.names()},
        }

    def _detach_all(self) -> None:
        with self._lock:
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.detach()

    async def aclose(self) -> None:
        """Detach the breakers and close the store."""
        self._detach_all()
        await self.store.aclose()

    def close(self) -> None:
        """Sync twin of :meth:`aclose`."""
        self._detach_all()
        self.store.close()


_current: CircuitBreakerRegistry | None = None
_handle_lock = threading.Lock()
# Names of the proxies declared so far (filled at import time by CircuitBreakerProxy). init_registry
# builds their breakers up front, so a store's first read (Redis: one HMGET per breaker) happens at
# start-up, off the event loop, and never inside the first user call.
_declared: set[str] = set()


def _warm(registry: CircuitBreakerRegistry) -> None:
    declared = set(_declared)
    # Configured names are lower-cased: [breakers.RagAPI] configures the proxy "RagAPI", not a second breaker.
    folded = {name.lower() for name in declared}
    for name in sorted(declared | {name for name in registry.config.breakers if name not in folded}):
        registry.get(name)


def get_registry() -> CircuitBreakerRegistry | None:
    """The registry the proxies use, or None before init / after shutdown."""
    return _current


def _build(
    config: RegistryConfig | None,
    config_path: str | Path | None,
    environ: Mapping[str, str] | None,
    store: BreakerStore | None,
    clock: Clock | None,
    redis_url: str | None,
) -> CircuitBreakerRegistry:
    env = os.environ if environ is None else environ
    if config is None:
        path = config_path if config_path is not None else (env.get(CONFIG_ENV) or None)
        config = load_config(path, environ=env)
    clock = clock if clock is not None else SystemClock()
    if store is None:
        url = redis_url if redis_url is not None else (env.get(REDIS_URL_ENV) or None)
        store = _store_for(url, env, clock)
    return CircuitBreakerRegistry(config, store=store, clock=clock)


def _store_for(url: str | None, env: Mapping[str, str], clock: Clock) -> BreakerStore:
    if not url:
        return MemoryStore()
    try:
        from ._redis_store import RedisStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        logger.warning(
            "resilience.redis_unavailable: REDIS_URL is set but the Redis store is not available "
            "in this build; breaker state stays in this process"
        )
        return MemoryStore()
    store: BreakerStore = RedisStore(url, prefix=env.get(KEY_PREFIX_ENV) or "resilience", clock=clock)
    return store


def _install(registry: CircuitBreakerRegistry) -> CircuitBreakerRegistry | None:
    global _current
    with _handle_lock:
        previous, _current = _current, registry
    logger.info(
        "resilience.registry_ready store=%s breakers_configured=%s",
        registry.store.health().kind,
        sorted(registry.config.breakers),
    )
    return previous


async def init_registry(
    config: RegistryConfig | None = None,
    *,
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    store: BreakerStore | None = None,
    clock: Clock | None = None,
    redis_url: str | None = None,
) -> CircuitBreakerRegistry:
    """Build the registry from settings and make the proxies use it.

    Reads ``RESILIENCE_CONFIG`` (TOML path), ``RESILIENCE__*`` overrides and ``REDIS_URL`` from
    ``environ`` (default ``os.environ``) unless given explicitly. Raises ConfigError on bad config;
    a replaced registry is closed. The breakers of every declared proxy and configured name are built
    here (in a worker thread), so their store's first read never runs inside a user's call.
    """
    registry = _build(config, config_path, environ, store, clock, redis_url)
    try:
        await asyncio.to_thread(_warm, registry)
    except BaseException:  # cancelled at start-up: nobody else holds the store's threads and sockets
        registry.close()
        raise
    previous = _install(registry)
    if previous is not None and previous is not registry:
        await previous.aclose()
    return registry


def init_registry_sync(
    config: RegistryConfig | None = None,
    *,
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    store: BreakerStore | None = None,
    clock: Clock | None = None,
    redis_url: str | None = None,
) -> CircuitBreakerRegistry:
    """Sync twin of :func:`init_registry`."""
    registry = _build(config, config_path, environ, store, clock, redis_url)
    _warm(registry)
    previous = _install(registry)
    if previous is not None and previous is not registry:
        previous.close()
    return registry


def _uninstall() -> CircuitBreakerRegistry | None:
    global _current
    with _handle_lock:
        previous, _current = _current, None
    return previous


async def shutdown_registry() -> None:
    """Unset the registry (proxies pass through again) and close it."""
    previous = _uninstall()
    if previous is not None:
        await previous.aclose()


def shutdown_registry_sync() -> None:
    """Sync twin of :func:`shutdown_registry`."""
    previous = _uninstall()
    if previous is not None:
        previous.close()
