"""CircuitBreakerRegistry and the module-level handle: configuration sources, default breakers, lifecycle."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import resilience
from resilience import (
    BreakerConfig,
    BreakerEvent,
    CircuitBreakerRegistry,
    CircuitState,
    ConfigError,
    MemoryStore,
    RegistryConfig,
    get_registry,
    init_registry,
    init_registry_sync,
    shutdown_registry,
    shutdown_registry_sync,
)
from resilience.testing import FakeClock


class ClosingStore(MemoryStore):
    """A MemoryStore that records being closed and its listeners being detached."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[str] = []
        self.detached: list[str] = []

    def detach(self, name: str, listener: object) -> None:
        self.detached.append(name)
        super().detach(name, listener)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        self.closed.append("aclose")

    def close(self) -> None:
        self.closed.append("close")


def test_get_builds_once_and_caches(clock: FakeClock) -> None:
    """get(name) builds a breaker on first use and returns the same one afterwards."""
    registry = CircuitBreakerRegistry(clock=clock)
    breaker = registry.get("rag_api")
    assert registry["rag_api"] is breaker
    assert "rag_api" in registry
    assert "llm" not in registry
    assert registry.names() == ["rag_api"]


def test_configured_and_default_breakers(clock: FakeClock) -> None:
    """A configured name gets its configuration; an unknown name gets the defaults."""
    defaults = BreakerConfig(failure_threshold=9)
    registry = CircuitBreakerRegistry(
        RegistryConfig(defaults=defaults, breakers={"rag_api": BreakerConfig(failure_threshold=2)}), clock=clock
    )
    assert registry.get("rag_api").config.failure_threshold == 2
    assert registry.get("surprise").config == defaults


def test_unknown_name_logged_once(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The first use of an unconfigured name is logged once, with the name; configured names are not."""
    registry = CircuitBreakerRegistry(RegistryConfig(breakers={"rag_api": BreakerConfig()}), clock=clock)
    with caplog.at_level(logging.INFO, logger="resilience"):
        for _ in range(3):
            registry.get("surprise")
            registry.get("rag_api")
    lines = [r for r in caplog.records if "default_breaker" in r.getMessage()]
    assert len(lines) == 1
    assert "surprise" in lines[0].getMessage()
    assert lines[0].breaker == "surprise"  # type: ignore[attr-defined]


def test_breakers_share_store_and_clock(clock: FakeClock) -> None:
    """Every breaker of a registry uses the registry's store and clock."""
    store = MemoryStore()
    registry = CircuitBreakerRegistry(store=store, clock=clock)
    breaker = registry.get("a")
    assert registry.store is store
    breaker.force_open_sync()
    with pytest.raises(resilience.CircuitOpenError):
        breaker.call_sync(lambda: None)


def test_registry_listener_reaches_present_and_future_breakers(clock: FakeClock) -> None:
    """add_listener on the registry attaches to breakers built before and after it."""
    registry = CircuitBreakerRegistry(clock=clock)
    before = registry.get("before")
    events: list[BreakerEvent] = []
    registry.add_listener(events.append, kinds={"state_change"})
    after = registry.get("after")
    before.force_open_sync()
    after.disable_sync()
    assert [(e.name, e.state) for e in events] == [
        ("before", CircuitState.FORCED_OPEN),
        ("after", CircuitState.DISABLED),
    ]


def test_status_is_json_safe(clock: FakeClock) -> None:
    """status() reports the store's health and each breaker's metrics."""
    import json

    registry = CircuitBreakerRegistry(clock=clock)
    registry.get("b").call_sync(lambda: None)
    registry.get("a")
    status = registry.status()
    json.dumps(status)
    assert status["store"]["kind"] == "memory"
    assert list(status["breakers"]) == ["a", "b"]
    assert status["breakers"]["b"]["successes"] == 1


# ---------------------------------------------------------------- the module-level handle


async def test_async_lifecycle(clock: FakeClock) -> None:
    """get_registry is None before init_registry, the registry after it, and None after shutdown_registry."""
    assert get_registry() is None
    registry = await init_registry(environ={}, clock=clock)
    assert get_registry() is registry
    assert registry.clock is clock
    await shutdown_registry()
    assert get_registry() is None
    await shutdown_registry()  # idempotent


def test_sync_lifecycle(clock: FakeClock) -> None:
    """init_registry_sync / shutdown_registry_sync do the same without an event loop."""
    registry = init_registry_sync(environ={}, clock=clock)
    assert get_registry() is registry
    shutdown_registry_sync()
    assert get_registry() is None
    shutdown_registry_sync()


async def test_reinit_replaces_and_closes_previous(clock: FakeClock) -> None:
    """A second init installs a new registry and closes the old one (store closed, breakers detached)."""
    first_store = ClosingStore()
    first = await init_registry(environ={}, store=first_store, clock=clock)
    first.get("rag_api")
    second = await init_registry(environ={}, clock=clock)
    assert get_registry() is second
    assert first_store.closed == ["aclose"]
    assert "rag_api" in first_store.detached
    assert sorted(first_store.detached) == first.names()  # every breaker it built, declared proxies included


async def test_init_builds_declared_proxies_breakers_up_front(clock: FakeClock) -> None:
    """init_registry builds the breakers of declared proxies and configured names before any call."""
    resilience.CircuitBreakerProxy("declared_elsewhere")
    config = RegistryConfig(breakers={"configured_only": BreakerConfig()})
    registry = await init_registry(config, clock=clock)
    assert {"rag_api", "llm", "declared_elsewhere", "configured_only"} <= set(registry.names())


def test_reinit_sync_replaces_and_closes_previous(clock: FakeClock) -> None:
    """init_registry_sync closes the replaced registry with the sync close."""
    store = ClosingStore()
    init_registry_sync(environ={}, store=store, clock=clock)
    init_registry_sync(environ={}, clock=clock)
    assert store.closed == ["close"]


async def test_shutdown_closes_store(clock: FakeClock) -> None:
    """shutdown_registry closes the registry's store."""
    store = ClosingStore()
    await init_registry(environ={}, store=store, clock=clock)
    await shutdown_registry()
    assert store.closed == ["aclose"]


def test_init_reads_config_file_and_env(tmp_path: Path, clock: FakeClock) -> None:
    """init reads RESILIENCE_CONFIG (a TOML path) and RESILIENCE__* overrides from the given environ."""
    path = tmp_path / "b.toml"
    path.write_text("[defaults]\nreset_timeout_s = 7\n[breakers.rag_api]\nfailure_threshold = 2\n")
    registry = init_registry_sync(
        environ={"RESILIENCE_CONFIG": str(path), "RESILIENCE__LLM__FAILURE_THRESHOLD": "4"}, clock=clock
    )
    assert registry.get("rag_api").config.failure_threshold == 2
    assert registry.get("rag_api").config.reset_timeout_s == 7.0
    assert registry.get("llm").config.failure_threshold == 4
    assert registry.get("other").config.reset_timeout_s == 7.0


def test_explicit_config_path_wins(tmp_path: Path, clock: FakeClock) -> None:
    """config_path overrides RESILIENCE_CONFIG."""
    path = tmp_path / "b.toml"
    path.write_text("[defaults]\nfailure_threshold = 3\n")
    registry = init_registry_sync(
        config_path=path, environ={"RESILIENCE_CONFIG": str(tmp_path / "missing.toml")}, clock=clock
    )
    assert registry.config.defaults.failure_threshold == 3


def test_bad_config_fails_init_and_keeps_handle(tmp_path: Path, clock: FakeClock) -> None:
    """Invalid configuration raises ConfigError from init and leaves the current handle alone."""
    current = init_registry_sync(environ={}, clock=clock)
    with pytest.raises(ConfigError, match="RESILIENCE__DEFAULTS__FAILURE_THRESHOLD"):
        init_registry_sync(environ={"RESILIENCE__DEFAULTS__FAILURE_THRESHOLD": "many"}, clock=clock)
    with pytest.raises(ConfigError, match="not found"):
        init_registry_sync(environ={"RESILIENCE_CONFIG": str(tmp_path / "missing.toml")}, clock=clock)
    assert get_registry() is current


def test_init_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Without ``environ``, init reads os.environ."""
    monkeypatch.setenv("RESILIENCE__DEFAULTS__FAILURE_THRESHOLD", "11")
    monkeypatch.delenv("RESILIENCE_CONFIG", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    registry = init_registry_sync(clock=clock)
    assert registry.config.defaults.failure_threshold == 11


def test_explicit_registry_config_skips_env(clock: FakeClock) -> None:
    """A RegistryConfig passed to init is used as is; env overrides are not applied on top."""
    cfg = RegistryConfig(defaults=BreakerConfig(failure_threshold=8))
    registry = init_registry_sync(cfg, environ={"RESILIENCE__DEFAULTS__FAILURE_THRESHOLD": "2"}, clock=clock)
    assert registry.config is cfg
