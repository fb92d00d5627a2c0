"""The BreakerStore contract (see ``resilience/_store.py``), run over the memory and the Redis store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from resilience import BreakerConfig, BreakerStore, CircuitOpenError, CircuitState, MemoryStore, Snapshot
from resilience._breaker import PersistentCircuitBreaker
from resilience._state import half_open, trip
from resilience.testing import FakeClock

from .conftest import RedisServer, StoreFactory

pytestmark = pytest.mark.integration

CFG = BreakerConfig(failure_threshold=3, failure_rate_threshold=None, reset_timeout_s=30.0)
NOW = 1_700_000_000_000.0


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[BreakerStore]:
    """A fresh store of each kind; the Redis one uses the session server and a unique prefix."""
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    make_store: StoreFactory = request.getfixturevalue("make_store")
    yield make_store(server.url, clock)


def test_attach_unknown_returns_none(store: BreakerStore) -> None:
    """A name nobody has written yet has no known snapshot."""
    assert store.attach("fresh", lambda snap: None) is None


def test_transition_applies_at_expected_version(store: BreakerStore) -> None:
    """A compare-and-set at the stored version applies and returns the proposed snapshot."""
    opened = trip(Snapshot(), NOW, CFG, "test")
    assert store.transition_sync("b", 0, opened) == opened
    assert store.attach("b", lambda snap: None) == opened


def test_transition_at_stale_version_returns_winner(store: BreakerStore) -> None:
    """A proposal based on an old version loses and gets the stored (newer) snapshot back."""
    opened = trip(Snapshot(), NOW, CFG, "first")
    store.transition_sync("b", 0, opened)
    rival = trip(Snapshot(), NOW + 5, CFG, "second")
    winner = store.transition_sync("b", 0, rival)
    assert winner.version == opened.version
    assert winner.reason == "first"
    assert winner.state is CircuitState.OPEN


def test_concurrent_proposals_have_one_winner(store: BreakerStore) -> None:
    """Eight threads proposing from the same version: exactly one proposal is applied."""
    results: list[Snapshot] = []
    barrier = threading.Barrier(8)

    def propose(i: int) -> None:
        barrier.wait()
        results.append(store.transition_sync("b", 0, trip(Snapshot(), NOW, CFG, f"t{i}")))

    threads = [threading.Thread(target=propose, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({snap.reason for snap in results}) == 1


async def test_async_twins_agree(store: BreakerStore) -> None:
    """The async methods follow the same rules as the sync ones."""
    opened = trip(Snapshot(), NOW, CFG, "async")
    assert await store.transition("a", 0, opened) == opened
    assert (await store.transition("a", 0, trip(Snapshot(), NOW, CFG, "late"))).reason == "async"
    probing = half_open(opened, NOW + 30_000)
    assert await store.transition("a", opened.version, probing) == probing
    token = await store.acquire_trial("a", probing.version, 1, 60_000, NOW)
    assert token is not None
    assert await store.acquire_trial("a", probing.version, 1, 60_000, NOW) is None
    assert await store.finish_trial("a", probing.version, token, True) == 1
    await store.aclose()


def test_trial_permits_are_bounded_and_freed(store: BreakerStore) -> None:
    """At most max_calls permits per half-open period; finishing one frees its slot."""
    first = store.acquire_trial_sync("b", 2, 2, 60_000, NOW)
    second = store.acquire_trial_sync("b", 2, 2, 60_000, NOW)
    assert first is not None and second is not None and first != second
    assert store.acquire_trial_sync("b", 2, 2, 60_000, NOW) is None
    assert store.finish_trial_sync("b", 2, first, None) == 0
    assert store.acquire_trial_sync("b", 2, 2, 60_000, NOW) is not None


def test_trial_successes_counted_once_per_permit(store: BreakerStore) -> None:
    """Successes count per held permit; finishing a permit twice or with None adds nothing."""
    a = store.acquire_trial_sync("b", 4, 3, 60_000, NOW)
    b = store.acquire_trial_sync("b", 4, 3, 60_000, NOW)
    c = store.acquire_trial_sync("b", 4, 3, 60_000, NOW)
    assert a is not None and b is not None and c is not None
    assert store.finish_trial_sync("b", 4, a, True) == 1
    assert store.finish_trial_sync("b", 4, a, True) == 1
    assert store.finish_trial_sync("b", 4, b, None) == 1
    assert store.finish_trial_sync("b", 4, c, False) == 1
    assert store.finish_trial_sync("b", 3, c, True) == 0  # another period: nothing of it is known


def test_new_period_starts_with_fresh_permits(store: BreakerStore) -> None:
    """A newer half-open period (version) does not inherit the permits or successes of the old one."""
    token = store.acquire_trial_sync("b", 2, 1, 60_000, NOW)
    assert token is not None
    store.finish_trial_sync("b", 2, token, True)
    assert store.acquire_trial_sync("b", 2, 1, 60_000, NOW) is not None
    assert store.acquire_trial_sync("b", 4, 1, 60_000, NOW) is not None


def test_expired_lease_frees_the_permit(store: BreakerStore) -> None:
    """A permit whose holder never returns it is free again after lease_ms (and its late success is void)."""
    lease_ms = 40.0
    dead = store.acquire_trial_sync("b", 2, 1, lease_ms, NOW)
    assert dead is not None
    assert store.acquire_trial_sync("b", 2, 1, lease_ms, NOW) is None
    time.sleep(lease_ms * 1.5 / 1000)  # Redis leases run on Redis's clock; memory ones on now_ms
    later = NOW + lease_ms * 1.5
    alive = store.acquire_trial_sync("b", 2, 1, lease_ms, later)
    assert alive is not None
    assert store.finish_trial_sync("b", 2, dead, True) == 0
    assert store.finish_trial_sync("b", 2, alive, True) == 1


def test_detach_stops_listener(store: BreakerStore) -> None:
    """detach accepts a listener that was attached, and one that was not."""

    def listener(snap: Snapshot) -> None:
        return None

    store.attach("b", listener)
    store.detach("b", listener)
    store.detach("b", listener)


def test_health_reports_kind(store: BreakerStore) -> None:
    """health() names the backend and says it is healthy."""
    health = store.health()
    assert health.kind in {"memory", "redis"}
    assert health.healthy


def test_breaker_full_cycle_over_store(store: BreakerStore, clock: FakeClock) -> None:
    """A breaker trips, rejects, probes after the open period and closes, over either store."""
    breaker = PersistentCircuitBreaker("cycle", CFG, store, clock)

    def boom() -> None:
        raise ValueError("down")

    for _ in range(3):
        with pytest.raises(ValueError):
            breaker.call_sync(boom)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: 1)
    clock.advance(30.0)
    assert breaker.call_sync(lambda: 7) == 7
    assert breaker.state is CircuitState.CLOSED
    breaker.detach()
