"""Pure state transitions (``_state``) and the in-memory store's compare-and-set and trial permits."""

from __future__ import annotations

import pytest

from resilience import BreakerConfig, CircuitState, MemoryStore, Snapshot
from resilience._state import IllegalTransition, close, half_open, manual, open_duration_s, trip

CFG = BreakerConfig(reset_timeout_s=10, reset_backoff=3, max_reset_timeout_s=50)
NOW = 1_000_000.0
STATES = list(CircuitState)


def test_snapshot_defaults_and_round_trip() -> None:
    """A fresh snapshot is CLOSED at version 0, and to_dict/from_dict round-trip it."""
    snap = Snapshot()
    assert (snap.state, snap.version, snap.trips) == (CircuitState.CLOSED, 0, 0)
    opened = trip(snap, NOW, CFG, "boom")
    assert Snapshot.from_dict(opened.to_dict()) == opened
    assert opened.to_dict()["state"] == "open"


@pytest.mark.parametrize(
    "data", [{}, {"state": "open"}, {"state": "ajar", "version": 1, "opened_until_ms": 0, "trips": 0}]
)
def test_malformed_snapshot_raises_value_error(data: dict[str, object]) -> None:
    """from_dict rejects missing fields and unknown states with ValueError."""
    with pytest.raises(ValueError):
        Snapshot.from_dict(data)


def test_trip_sets_deadline_and_bumps_version() -> None:
    """trip moves CLOSED to OPEN, sets the epoch-ms deadline, counts the trip and bumps the version by one."""
    opened = trip(Snapshot(), NOW, CFG, "5 consecutive failures")
    assert opened.state is CircuitState.OPEN
    assert opened.opened_until_ms == NOW + 10_000
    assert (opened.trips, opened.version, opened.changed_at_ms, opened.reason) == (1, 1, NOW, "5 consecutive failures")


def test_full_cycle_and_growing_duration() -> None:
    """OPEN -> HALF_OPEN -> OPEN grows the duration; HALF_OPEN -> CLOSED resets trips."""
    snap = trip(Snapshot(), NOW, CFG, "x")
    snap = half_open(snap, NOW + 10_000)
    assert snap.state is CircuitState.HALF_OPEN
    snap = trip(snap, NOW + 10_000, CFG, "trial failed")
    assert snap.opened_until_ms == NOW + 10_000 + 30_000
    assert snap.trips == 2
    snap = close(half_open(snap, NOW + 40_000), NOW + 40_000)
    assert (snap.state, snap.trips, snap.opened_until_ms, snap.version) == (CircuitState.CLOSED, 0, 0.0, 5)


def test_open_duration_grows_and_caps() -> None:
    """open_duration_s is reset_timeout_s * reset_backoff**(trips-1), capped at max_reset_timeout_s."""
    assert [open_duration_s(n, CFG) for n in range(1, 5)] == [10.0, 30.0, 50.0, 50.0]
    assert open_duration_s(7, BreakerConfig(reset_timeout_s=4)) == 4.0  # no backoff by default


@pytest.mark.parametrize(
    ("source", "move"),
    [
        (CircuitState.CLOSED, "half_open"),
        (CircuitState.CLOSED, "close"),
        (CircuitState.OPEN, "trip"),
        (CircuitState.OPEN, "close"),
        (CircuitState.HALF_OPEN, "half_open"),
        (CircuitState.FORCED_OPEN, "trip"),
        (CircuitState.FORCED_OPEN, "half_open"),
        (CircuitState.DISABLED, "trip"),
        (CircuitState.DISABLED, "close"),
    ],
)
def test_illegal_automatic_transitions_raise(source: CircuitState, move: str) -> None:
    """Automatic moves outside closed->open->half_open->{open,closed} raise IllegalTransition."""
    snap = Snapshot(state=source)
    step = {
        "trip": lambda: trip(snap, NOW, CFG, "x"),
        "half_open": lambda: half_open(snap, NOW),
        "close": lambda: close(snap, NOW),
    }[move]
    with pytest.raises(IllegalTransition):
        step()


@pytest.mark.parametrize("source", STATES)
@pytest.mark.parametrize("target", [CircuitState.CLOSED, CircuitState.FORCED_OPEN, CircuitState.DISABLED])
def test_manual_moves_legal_from_every_state(source: CircuitState, target: CircuitState) -> None:
    """reset, force_open and disable are legal from every state and clear the open deadline and trips."""
    snap = Snapshot(state=source, version=4, opened_until_ms=5.0, trips=3)
    moved = manual(snap, target, NOW)
    assert (moved.state, moved.version, moved.opened_until_ms, moved.trips) == (target, 5, 0.0, 0)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (CircuitState.CLOSED, CircuitState.HALF_OPEN),
        (CircuitState.FORCED_OPEN, CircuitState.OPEN),
        (CircuitState.DISABLED, CircuitState.HALF_OPEN),
    ],
)
def test_manual_cannot_invent_automatic_moves(source: CircuitState, target: CircuitState) -> None:
    """A manual move to OPEN or HALF_OPEN is only what the automatic table allows; others raise."""
    with pytest.raises(IllegalTransition):
        manual(Snapshot(state=source), target, NOW)


# ---------------------------------------------------------------- MemoryStore


def test_store_compare_and_set() -> None:
    """transition applies only at the expected version and otherwise returns the stored winner."""
    store = MemoryStore()
    first = trip(Snapshot(), NOW, CFG, "a")
    rival = manual(Snapshot(), CircuitState.FORCED_OPEN, NOW)
    assert store.transition_sync("x", 0, first) == first
    assert store.transition_sync("x", 0, rival) == first
    assert store.attach("x", lambda s: None) == first
    assert store.attach("y", lambda s: None) is None


async def test_store_async_forms_match_sync() -> None:
    """The async store methods behave as their sync twins."""
    store = MemoryStore()
    first = trip(Snapshot(), NOW, CFG, "a")
    assert await store.transition("x", 0, first) == first
    token = await store.acquire_trial("x", 1, 1, 1000.0, NOW)
    assert token is not None
    assert await store.acquire_trial("x", 1, 1, 1000.0, NOW) is None
    assert await store.finish_trial("x", 1, token, True) == 1
    await store.aclose()


def test_store_trial_permits_are_bounded_and_leased() -> None:
    """At most max_calls live permits per half-open period; an expired lease frees its slot."""
    store = MemoryStore()
    a = store.acquire_trial_sync("x", 3, 2, 1000.0, NOW)
    b = store.acquire_trial_sync("x", 3, 2, 1000.0, NOW)
    assert a is not None and b is not None and a != b
    assert store.acquire_trial_sync("x", 3, 2, 1000.0, NOW + 999) is None
    assert store.acquire_trial_sync("x", 3, 2, 1000.0, NOW + 1000) is not None
    assert store.acquire_trial_sync("y", 3, 2, 1000.0, NOW) is not None  # per breaker name


def test_store_finish_trial_counts_successes_per_period() -> None:
    """finish_trial counts successes of held permits only, and a new period starts from zero."""
    store = MemoryStore()
    t1 = store.acquire_trial_sync("x", 3, 3, 1000.0, NOW)
    t2 = store.acquire_trial_sync("x", 3, 3, 1000.0, NOW)
    t3 = store.acquire_trial_sync("x", 3, 3, 1000.0, NOW)
    assert t1 and t2 and t3
    assert store.finish_trial_sync("x", 3, t1, True) == 1
    assert store.finish_trial_sync("x", 3, t1, True) == 1  # already returned: not counted twice
    assert store.finish_trial_sync("x", 3, t2, None) == 1  # freed, no outcome
    assert store.finish_trial_sync("x", 3, t3, False) == 1
    assert store.finish_trial_sync("x", 4, t3, True) == 0  # another period
    t4 = store.acquire_trial_sync("x", 5, 1, 1000.0, NOW)
    assert t4 is not None
    assert store.finish_trial_sync("x", 5, t4, True) == 1


def test_store_health_and_detach() -> None:
    """MemoryStore reports healthy memory state; detach of an unknown listener is harmless."""
    store = MemoryStore()
    health = store.health()
    assert (health.kind, health.healthy) == ("memory", True)
    store.detach("x", lambda s: None)
    store.close()
