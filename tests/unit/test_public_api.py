"""The public surface of ``resilience`` is pinned: additions and removals are deliberate."""

from __future__ import annotations

import inspect

import resilience

EXPECTED = [
    "BreakerConfig",
    "BreakerEvent",
    "BreakerStore",
    "CallTimeoutError",
    "CircuitBreakerProxy",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConfigError",
    "MemoryStore",
    "PersistentCircuitBreaker",
    "RegistryConfig",
    "ResilienceError",
    "Snapshot",
    "StoreHealth",
    "SystemClock",
    "get_registry",
    "init_registry",
    "init_registry_sync",
    "llm_breaker",
    "load_config",
    "rag_api_breaker",
    "session_breaker",
    "shutdown_registry",
    "shutdown_registry_sync",
    "stt_breaker",
    "tts_breaker",
]


def test_all_is_pinned_and_sorted() -> None:
    """__all__ lists exactly the expected names, sorted."""
    assert resilience.__all__ == EXPECTED
    assert sorted(resilience.__all__) == resilience.__all__


def test_every_exported_name_exists_and_is_documented() -> None:
    """Each exported name resolves, and every exported class and function has a docstring."""
    for name in resilience.__all__:
        obj = getattr(resilience, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_exported_members_are_public_modules_or_package() -> None:
    """Exported classes and functions claim a ``resilience`` module (httpx's test_exported_members idea)."""
    for name in resilience.__all__:
        obj = getattr(resilience, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("resilience"), name


def test_error_hierarchy() -> None:
    """ResilienceError is the base; CallTimeoutError is a TimeoutError and ConfigError a ValueError."""
    assert issubclass(resilience.CircuitOpenError, resilience.ResilienceError)
    assert issubclass(resilience.CallTimeoutError, resilience.ResilienceError)
    assert issubclass(resilience.CallTimeoutError, TimeoutError)
    assert issubclass(resilience.ConfigError, resilience.ResilienceError)
    assert issubclass(resilience.ConfigError, ValueError)


def test_clocks_satisfy_protocol() -> None:
    """SystemClock and FakeClock both satisfy the Clock protocol; FakeClock moves only when told."""
    from resilience.testing import FakeClock

    clock = FakeClock()
    assert isinstance(resilience.SystemClock(), resilience.Clock)
    assert isinstance(clock, resilience.Clock)
    before = (clock.now_ms(), clock.monotonic())
    clock.advance(1.5)
    assert (clock.now_ms(), clock.monotonic()) == (before[0] + 1500.0, before[1] + 1.5)
    assert isinstance(resilience.MemoryStore(), resilience.BreakerStore)
