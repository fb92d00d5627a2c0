"""RedisStore against a real redis-server: sharing, outages, reconcile, leases, clock skew, key layout."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest
import redis

import resilience
from resilience import BreakerConfig, BreakerEvent, CircuitOpenError, CircuitState, Snapshot
from resilience._breaker import PersistentCircuitBreaker
from resilience._redis_store import RedisStore, redact_url
from resilience._state import trip
from resilience.testing import FakeClock

from .conftest import RedisServer, StoreFactory, free_port, wait_until

pytestmark = pytest.mark.integration

CFG = BreakerConfig(failure_threshold=3, failure_rate_threshold=None, reset_timeout_s=30.0)


class Boom(Exception):
    """The protected function's own error."""


def boom() -> None:
    raise Boom("dependency down")


def trip_sync(breaker: PersistentCircuitBreaker) -> None:
    for _ in range(breaker.config.failure_threshold or 1):
        with pytest.raises(Boom):
            breaker.call_sync(boom)
    assert breaker.state is CircuitState.OPEN


def raw(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def test_trip_reaches_other_instance_via_pubsub(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """A trip in one instance makes another instance reject, with a remote state-change event."""
    clock = FakeClock()
    a = PersistentCircuitBreaker("rag", CFG, make_store(redis_server.url, clock), clock)
    b = PersistentCircuitBreaker("rag", CFG, make_store(redis_server.url, clock), clock)
    events: list[BreakerEvent] = []
    a_events: list[BreakerEvent] = []
    b.add_listener(events.append, ["state_change"])
    a.add_listener(a_events.append, ["state_change"])
    trip_sync(a)
    wait_until(lambda: b.state is CircuitState.OPEN, what="b to adopt the trip")
    with pytest.raises(CircuitOpenError):
        b.call_sync(lambda: 1)
    assert [(e.state, e.origin) for e in events] == [(CircuitState.OPEN, "remote")]
    assert [(e.state, e.origin) for e in a_events] == [(CircuitState.OPEN, "local")]


def test_new_instance_starts_from_stored_state(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """A breaker built after the trip (a new app instance) starts open from what Redis holds."""
    clock = FakeClock()
    trip_sync(PersistentCircuitBreaker("late", CFG, make_store(redis_server.url, clock), clock))
    late = PersistentCircuitBreaker("late", CFG, make_store(redis_server.url, clock), clock)
    assert late.state is CircuitState.OPEN


async def test_async_path_shares_state(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """The async shell (redis.asyncio) trips, and the half-open trial closes the breaker fleet-wide."""
    clock = FakeClock()
    store_a = make_store(redis_server.url, clock)
    a = PersistentCircuitBreaker("async", CFG, store_a, clock)
    store_b = make_store(redis_server.url, clock)
    b = PersistentCircuitBreaker("async", CFG, store_b, clock)

    async def fail() -> None:
        raise Boom("down")

    async def ok() -> int:
        return 1

    for _ in range(3):
        with pytest.raises(Boom):
            await a.call(fail)
    wait_until(lambda: b.state is CircuitState.OPEN, what="remote open")
    clock.advance(30.0)
    assert await b.call(ok) == 1
    wait_until(lambda: a.state is CircuitState.CLOSED, what="remote close")
    await store_a.aclose()
    await store_b.aclose()


def test_half_open_permit_is_fleet_wide(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """With one trial permit, a second instance is rejected while the first one's trial runs."""
    clock = FakeClock()
    a = PersistentCircuitBreaker("trial", CFG, make_store(redis_server.url, clock), clock)
    b = PersistentCircuitBreaker("trial", CFG, make_store(redis_server.url, clock), clock)
    trip_sync(a)
    wait_until(lambda: b.state is CircuitState.OPEN, what="remote open")
    clock.advance(30.0)
    inside = threading.Event()
    release = threading.Event()

    def slow_trial() -> int:
        inside.set()
        release.wait(5)
        return 1

    worker = threading.Thread(target=a.call_sync, args=(slow_trial,))
    worker.start()
    inside.wait(5)
    wait_until(lambda: b.state is CircuitState.HALF_OPEN, what="remote half-open")
    with pytest.raises(CircuitOpenError):
        b.call_sync(lambda: 2)
    release.set()
    worker.join()
    wait_until(lambda: b.state is CircuitState.CLOSED, what="remote close")


def test_dead_trial_lease_expires(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """A trial permit whose instance vanished without returning it frees itself after the lease."""
    clock = FakeClock()
    cfg = BreakerConfig(failure_threshold=1, failure_rate_threshold=None, reset_timeout_s=5.0, trial_lease_s=0.15)
    dying_store = make_store(redis_server.url, clock)
    dying = PersistentCircuitBreaker("lease", cfg, dying_store, clock)
    survivor = PersistentCircuitBreaker("lease", cfg, make_store(redis_server.url, clock), clock)
    trip_sync(dying)
    wait_until(lambda: survivor.state is CircuitState.OPEN, what="remote open")
    clock.advance(5.0)
    # The dying instance took the trial permit of the coming half-open period, then vanished.
    half_open_version = dying.snapshot.version + 1
    assert dying_store.acquire_trial_sync("lease", half_open_version, 1, 150.0, clock.now_ms()) is not None
    dying.detach()
    dying_store.close()
    with pytest.raises(CircuitOpenError):
        survivor.call_sync(lambda: 1)  # moves to HALF_OPEN, finds the only permit taken
    assert survivor.state is CircuitState.HALF_OPEN
    time.sleep(0.2)  # the lease runs on Redis's clock, which the fake clock cannot move
    assert survivor.call_sync(lambda: 3) == 3
    assert survivor.state is CircuitState.CLOSED


def test_skewed_clock_agrees_on_open_period(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """An instance whose wall clock is 5 s ahead still waits the full open period of a remote trip."""
    clock_a = FakeClock()
    clock_b = FakeClock()
    clock_b.skew_wall(5.0)
    a = PersistentCircuitBreaker("skew", CFG, make_store(redis_server.url, clock_a), clock_a)
    b = PersistentCircuitBreaker("skew", CFG, make_store(redis_server.url, clock_b), clock_b)
    trip_sync(a)
    wait_until(lambda: b.state is CircuitState.OPEN, what="remote open")
    remaining_ms = b.snapshot.opened_until_ms - clock_b.now_ms()
    assert abs(remaining_ms - 30_000) < 250, remaining_ms  # 25_000 if the skew leaked through
    for clock in (clock_a, clock_b):
        clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        b.call_sync(lambda: 1)
    assert b.state is CircuitState.OPEN
    for clock in (clock_a, clock_b):
        clock.advance(1.5)
    assert b.call_sync(lambda: 1) == 1
    assert b.state is CircuitState.CLOSED


def test_skewed_clock_cannot_steal_a_lease(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """A client whose clock is a minute ahead cannot take a permit whose lease is still live in Redis."""
    honest = make_store(redis_server.url, FakeClock())
    ahead_clock = FakeClock()
    ahead_clock.skew_wall(60.0)
    ahead = make_store(redis_server.url, ahead_clock)
    assert honest.acquire_trial_sync("s", 2, 1, 10_000.0, 0.0) is not None
    assert ahead.acquire_trial_sync("s", 2, 1, 10_000.0, ahead_clock.now_ms()) is None


def test_keys_are_namespaced_hash_tagged_and_expire(
    redis_server: RedisServer, make_store: StoreFactory, prefix: str
) -> None:
    """State lives in {prefix}:cb:{name} (one cluster slot per breaker) with a TTL."""
    clock = FakeClock()
    store = make_store(redis_server.url, clock, ttl_s=120.0)
    trip_sync(PersistentCircuitBreaker("keys", CFG, store, clock))
    client = raw(redis_server)
    key = f"{prefix}:cb:{{keys}}"
    assert client.hget(key, "v") == "1"
    assert 0 < client.pttl(key) <= 120_000
    store.acquire_trial_sync("keys", 2, 1, 1000.0, 0.0)
    keys = client.keys(f"{prefix}:cb:*")
    assert set(keys) == {key, key + ":trials"}
    assert {k[k.index("{") + 1 : k.index("}")] for k in keys} == {"keys"}  # the cluster hash tag
    client.close()


def test_redis_down_at_start_then_syncs(
    tmp_path: Path, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """No Redis at start: local state, no exceptions, one log line; when Redis starts, state is published."""
    server = RedisServer(tmp_path)  # port chosen, server not started yet
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="resilience"):
        store = make_store(server.url, clock, connect=False)
        breaker = PersistentCircuitBreaker("early", CFG, store, clock)
        wait_until(lambda: store.health().extra["outages"] == 1, what="outage noticed")
        t0 = time.perf_counter()
        for _ in range(1000):
            breaker.call_sync(lambda: 1)
        assert time.perf_counter() - t0 < 0.5  # no connection attempt per call
        trip_sync(breaker)
        with pytest.raises(CircuitOpenError):
            breaker.call_sync(lambda: 1)
        assert not store.health().healthy
        server.start()
        try:
            assert store.wait_connected(3.0)
            other = make_store(server.url, clock)
            assert PersistentCircuitBreaker("early", CFG, other, clock).state is CircuitState.OPEN
            lines = [r.getMessage() for r in caplog.records if "resilience.redis_" in r.getMessage()]
            assert [line.split()[0] for line in lines] == ["resilience.redis_unavailable", "resilience.redis_recovered"]
        finally:
            store.close()
            other.close()
            server.stop()


def test_outage_mid_run_under_load(own_redis: RedisServer, make_store: StoreFactory) -> None:
    """Redis killed and restarted under load: callers see only their own errors, and shared state returns in 2 s."""
    clock = FakeClock()
    held = BreakerConfig(
        failure_threshold=5, failure_rate_threshold=None, reset_timeout_s=3000.0, max_reset_timeout_s=3000.0
    )
    churning = BreakerConfig(failure_threshold=2, failure_rate_threshold=None, reset_timeout_s=1.0)
    store_a = make_store(own_redis.url, clock)
    store_b = make_store(own_redis.url, clock)
    flaky = PersistentCircuitBreaker("flaky", held, store_a, clock)
    flaky_b = PersistentCircuitBreaker("flaky", held, store_b, clock)
    steady = PersistentCircuitBreaker("steady", held, store_a, clock)
    churn = PersistentCircuitBreaker("churn", churning, store_a, clock)
    churn_b = PersistentCircuitBreaker("churn", churning, store_b, clock)
    unexpected: list[BaseException] = []
    stop = threading.Event()
    calls = [0]

    def fn(i: int) -> int:
        if i % 4 < 2:  # mode 4: always fails; mode 2: never; mode 0: two in four
            raise Boom("down")
        return i

    def hammer(breaker: PersistentCircuitBreaker, mode: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                breaker.call_sync(fn, i if mode == 0 else mode)
            except (Boom, CircuitOpenError):
                pass
            except BaseException as exc:
                unexpected.append(exc)
            calls[0] += 1

    async def async_hammer() -> None:
        async def afn(i: int) -> int:
            return fn(i)

        i = 0
        while not stop.is_set():
            i += 1
            for breaker in (steady, churn_b):
                try:
                    await breaker.call(afn, i if breaker is churn_b else 2)
                except (Boom, CircuitOpenError):
                    pass
                except BaseException as exc:
                    unexpected.append(exc)
            await asyncio.sleep(0)
        await store_a.aclose()  # this loop's redis.asyncio clients are closed on this loop
        await store_b.aclose()

    def ticker() -> None:  # moves time so that the churning breakers keep tripping and probing
        while not stop.is_set():
            clock.advance(1.0)
            time.sleep(0.005)

    threads = [
        threading.Thread(target=hammer, args=(steady, 2)),
        threading.Thread(target=hammer, args=(churn, 0)),
        threading.Thread(target=hammer, args=(churn_b, 0)),
        threading.Thread(target=lambda: asyncio.run(async_hammer())),
        threading.Thread(target=ticker),
    ]
    for thread in threads:
        thread.start()
    hammer_flaky = threading.Thread(target=hammer, args=(flaky, 4))
    try:
        time.sleep(0.2)
        own_redis.stop()
        wait_until(lambda: not store_a.connected, what="outage noticed")
        hammer_flaky.start()
        wait_until(lambda: flaky.state is CircuitState.OPEN, what="local trip during the outage")
        time.sleep(0.2)
        assert flaky_b.state is CircuitState.CLOSED  # nobody could tell it
        own_redis.start()
        t0 = time.monotonic()
        wait_until(lambda: flaky_b.state is CircuitState.OPEN, timeout_s=2.0, what="shared state restored")
        restored_s = time.monotonic() - t0
        time.sleep(0.2)
        health = store_a.health()
        client = raw(own_redis)
        assert client.hget(f"{store_a.prefix}:cb:{{flaky}}", "s") is not None
        client.close()
    finally:
        stop.set()
        for thread in [*threads, hammer_flaky]:
            if thread.is_alive():
                thread.join(10)
    assert unexpected == []
    assert calls[0] > 1000
    assert restored_s < 2.0
    assert health.healthy and health.extra["outages"] == 1


def test_reconcile_more_restrictive_state_wins(own_redis: RedisServer, make_store: StoreFactory) -> None:
    """After an outage a locally opened breaker beats a stored CLOSED of a higher version, fleet-wide."""
    clock = FakeClock()
    store_a = make_store(own_redis.url, clock)
    store_b = make_store(own_redis.url, clock)
    a = PersistentCircuitBreaker("rec", CFG, store_a, clock)
    b = PersistentCircuitBreaker("rec", CFG, store_b, clock)
    b.force_open_sync()
    b.reset_sync()  # version 2, CLOSED, known to both
    wait_until(lambda: a.snapshot.version == 2, what="sync")
    own_redis.stop()
    wait_until(lambda: not store_a.connected and not store_b.connected, what="outage noticed")
    trip_sync(a)  # version 3, OPEN, local to a
    b.force_open_sync()
    b.reset_sync()  # version 4, CLOSED, local to b
    own_redis.start()
    wait_until(lambda: store_a.connected and store_b.connected, what="reconnect")
    wait_until(lambda: b.state is CircuitState.OPEN and a.snapshot.version == b.snapshot.version, what="agree")
    assert b.snapshot.version > 4


def test_health_redacts_password_and_counts_outages(own_redis: RedisServer, make_store: StoreFactory) -> None:
    """health() shows kind, URL without the password, and the number of outages."""
    assert redact_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:s3cret@h/2") == "rediss://user:***@h/2"
    store = make_store(own_redis.url)
    health = store.health()
    assert (health.kind, health.healthy, health.extra["outages"]) == ("redis", True, 0)
    own_redis.stop()
    store.transition_sync("h", 0, trip(Snapshot(), 0.0, CFG, "x"))
    assert not store.health().healthy
    own_redis.start()
    assert store.wait_connected(3.0)
    assert store.health().extra["outages"] == 1


def test_password_db_and_unix_socket_urls(tmp_path: Path, make_store: StoreFactory) -> None:
    """redis:// with a password and db, and unix:// sockets, both work."""
    server = RedisServer(tmp_path)
    sock = tmp_path / "redis.sock"
    server.extra_args = ["--requirepass", "s3cret", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    server.start()
    try:
        clock = FakeClock()
        tcp = make_store(f"redis://:s3cret@127.0.0.1:{server.port}/3", clock)
        unix = make_store(f"unix://:s3cret@{sock}?db=3", clock)
        a = PersistentCircuitBreaker("url", CFG, tcp, clock)
        b = PersistentCircuitBreaker("url", CFG, unix, clock)
        trip_sync(a)
        wait_until(lambda: b.state is CircuitState.OPEN, what="unix instance sees the tcp trip")
        assert "s3cret" not in str(tcp.health())
    finally:
        server.stop()


def test_success_path_amortised_commands(redis_server: RedisServer, make_store: StoreFactory) -> None:
    """Successful calls cost <= 0.05 Redis commands each (batched flush), and the fleet totals add up."""
    store = make_store(redis_server.url, flush_interval_s=0.05)
    breaker = PersistentCircuitBreaker("hot", CFG, store)
    client = raw(redis_server)
    before = sum(v["calls"] for k, v in client.info("commandstats").items())
    n = 50_000
    for _ in range(n):
        breaker.call_sync(int)
    wait_until(lambda: store.fleet_counts("hot").get("successes") == n, what="flush")
    after = sum(v["calls"] for k, v in client.info("commandstats").items())
    client.close()
    assert (after - before) / n <= 0.05


def test_registry_uses_redis_store_and_reports_health(redis_server: RedisServer, prefix: str) -> None:
    """init_registry_sync with REDIS_URL builds a RedisStore and status() shows its health."""
    registry = resilience.init_registry_sync(environ={"REDIS_URL": redis_server.url, "RESILIENCE_KEY_PREFIX": prefix})
    assert isinstance(registry.store, RedisStore)
    assert registry.store.wait_connected(3.0)
    assert registry.get("rag_api").call_sync(lambda: 5) == 5
    status = registry.status()
    assert status["store"]["kind"] == "redis" and status["store"]["healthy"] is True


def test_unreachable_url_never_raises(make_store: StoreFactory) -> None:
    """Every store method answers locally when Redis is unreachable."""
    store = make_store(f"redis://127.0.0.1:{free_port()}/0", connect=False)
    opened = trip(Snapshot(), 0.0, CFG, "x")
    assert store.transition_sync("u", 0, opened) == opened
    token = store.acquire_trial_sync("u", 2, 1, 1000.0, 0.0)
    assert token is not None and token < 0
    assert store.finish_trial_sync("u", 2, token, True) == 1
    assert store.fleet_counts("u") == {}
    assert asyncio.run(store.transition("u", 0, trip(Snapshot(), 0.0, CFG, "y"))) == opened
