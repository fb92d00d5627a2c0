"""Regressions found in review, against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from resilience import BreakerConfig, CircuitState
from resilience._breaker import PersistentCircuitBreaker
from resilience._redis_store import RedisStore

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


def test_hung_redis_at_start_neither_blocks_close_nor_leaks_the_subscriber(tmp_path: Path) -> None:
    """A Redis that accepts TCP but answers nothing (stopped, hung) used to pin the subscriber in the
    handshake with no timeout: close() waited 2 s and left the thread and its socket behind."""
    server = RedisServer(tmp_path)
    server.start()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        store = RedisStore(server.url, prefix="hung", min_backoff_s=0.02, max_backoff_s=0.1)
        wait_until(lambda: store.health().extra["outages"] >= 1, what="the handshake to time out")
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 1.0
        assert not store._thread.is_alive()
        assert not store._ticker.is_alive()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


class _CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_ticker_does_not_spin_while_the_store_is_not_up_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh due before the store ever came up (subscriber still waiting for its confirmation) used
    to make the ticker wait on a deadline in the past forever: a busy loop holding the GIL."""
    monkeypatch.setattr(RedisStore, "_run", lambda self: self._stop.wait())  # a subscriber that never confirms
    store = RedisStore("redis://127.0.0.1:1/0", prefix="spin", refresh_interval_s=0.05, flush_interval_s=0.05)
    try:
        counter = _CountingEvent()
        store._recheck = counter
        time.sleep(0.5)
        assert counter.waits < 100, f"ticker woke {counter.waits} times in 0.5 s"
    finally:
        store.close()


async def test_cancelled_manual_override_is_adopted_by_its_own_breaker(
    redis_server: RedisServer, make_store: StoreFactory
) -> None:
    """force_open() cancelled while its (shielded) transition runs: Redis and every other instance went
    forced-open, but the instance that asked kept a closed view forever (its own message is ignored
    and a refresh sees nothing newer than what the store already remembered)."""
    store_a = make_store(redis_server.url, refresh_interval_s=0.05)
    store_b = make_store(redis_server.url)
    a = PersistentCircuitBreaker("svc", BreakerConfig(), store_a)
    b = PersistentCircuitBreaker("svc", BreakerConfig(), store_b)
    transition = store_a.transition
    started = asyncio.Event()

    async def slow_transition(*args: Any) -> Any:
        started.set()
        await asyncio.sleep(0.05)
        return await transition(*args)

    store_a.transition = slow_transition  # type: ignore[method-assign]
    task = asyncio.create_task(a.force_open())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)  # the shielded operation finishes; several refreshes pass
    assert b.state is CircuitState.FORCED_OPEN
    assert a.state is CircuitState.FORCED_OPEN


async def test_cancelled_init_registry_leaves_no_store_threads(redis_server: RedisServer) -> None:
    """init_registry cancelled during its warm-up used to drop a running RedisStore (two threads, sockets)."""
    import resilience

    def store_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("resilience-redis-")]

    before = store_threads()
    task = asyncio.create_task(resilience.init_registry(environ={}, redis_url=redis_server.url))
    await asyncio.sleep(0)  # inside the warm-up's worker-thread await
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resilience.get_registry() is None
    wait_until(lambda: store_threads() == before, what="the abandoned store's threads to stop")
