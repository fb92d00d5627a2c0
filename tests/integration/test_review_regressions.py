"""Regressions found in review, against a real redis-server."""

from __future__ import annotations

import pytest
import redis

from resilience import BreakerConfig, CircuitState
from resilience._breaker import PersistentCircuitBreaker

from .conftest import RedisServer, StoreFactory, wait_until

pytestmark = pytest.mark.integration


def test_stale_view_after_reconnect_does_not_undo_fleet_reset(
    redis_server: RedisServer, make_store: StoreFactory, prefix: str
) -> None:
    """A stale instance reconnecting adopts a reset it missed; it used to force the whole fleet open again."""
    cfg = BreakerConfig()
    store_a = make_store(redis_server.url)
    # B reconnects slowly and refreshes rarely, so it reconciles before any refresh could fix its view.
    store_b = make_store(redis_server.url, min_backoff_s=0.3, refresh_interval_s=60.0)
    a = PersistentCircuitBreaker("svc", cfg, store_a)
    b = PersistentCircuitBreaker("svc", cfg, store_b)
    a.force_open_sync()
    wait_until(lambda: b.state is CircuitState.FORCED_OPEN, what="B to see forced_open")

    # B's subscriber connection drops; meanwhile an operator resets the breaker through A.
    port = store_b._sub_sock.getsockname()[1]
    raw = redis.Redis.from_url(redis_server.url)
    assert raw.client_kill_filter(_type=None, addr=f"127.0.0.1:{port}") == 1
    a.reset_sync()
    wait_until(lambda: not store_b.connected, what="B to notice the lost connection")
    wait_until(lambda: store_b.connected, what="B to reconnect and reconcile")

    assert b.state is CircuitState.CLOSED
    assert a.state is CircuitState.CLOSED
    assert '"state":"closed"' in raw.hget(f"{prefix}:cb:{{svc}}", "s").decode()


def test_local_change_during_outage_still_wins_on_reconnect(
    redis_server: RedisServer, make_store: StoreFactory, prefix: str
) -> None:
    """The fix keeps the documented rule: a breaker that opened locally while disconnected opens the fleet."""
    cfg = BreakerConfig(failure_threshold=1, failure_rate_threshold=None)
    store_a = make_store(redis_server.url)
    store_b = make_store(redis_server.url, min_backoff_s=0.3, refresh_interval_s=60.0)
    a = PersistentCircuitBreaker("svc", cfg, store_a)
    b = PersistentCircuitBreaker("svc", cfg, store_b)
    port = store_b._sub_sock.getsockname()[1]
    raw = redis.Redis.from_url(redis_server.url)
    raw.client_kill_filter(_type=None, addr=f"127.0.0.1:{port}")
    wait_until(lambda: not store_b.connected, what="B to notice the lost connection")

    def fail() -> None:
        raise ValueError("down")

    with pytest.raises(ValueError):
        b.call_sync(fail)  # trips locally while B is disconnected
    assert b.state is CircuitState.OPEN
    wait_until(lambda: store_b.connected, what="B to reconnect and reconcile")
    wait_until(lambda: a.state is CircuitState.OPEN, what="A to adopt B's trip")


def test_async_path_keeps_no_connection_per_event_loop(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """Trips through the async path from many short-lived event loops leave no socket or loop behind."""
    import asyncio
    import gc
    import os

    from resilience.testing import FakeClock

    clock = FakeClock()
    store = make_store(redis_server.url, clock)
    assert store.wait_connected()

    async def trip_and_reset(i: int) -> None:
        breaker = PersistentCircuitBreaker(f"loop{i}", BreakerConfig(failure_threshold=1), store, clock)

        async def fail() -> None:
            raise ConnectionError("down")

        with pytest.raises(ConnectionError):
            await breaker.call(fail)
        assert breaker.state is CircuitState.OPEN
        await breaker.reset()
        breaker.detach()

    asyncio.run(trip_and_reset(0))  # warm-up: the sync client's pool may open its connections
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for i in range(1, 21):
        asyncio.run(trip_and_reset(i))
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 2
