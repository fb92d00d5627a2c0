"""Rules of PersistentCircuitBreaker, run through call_sync, call, and both proxy wrappers (``harness``)."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import traceback
from typing import Any

import pytest

from resilience import (
    BreakerConfig,
    BreakerEvent,
    CallTimeoutError,
    CircuitBreakerProxy,
    CircuitOpenError,
    CircuitState,
    MemoryStore,
    PersistentCircuitBreaker,
    RegistryConfig,
    ResilienceError,
    init_registry_sync,
)
from resilience.testing import FakeClock
from tests.conftest import Harness

# Only the consecutive-failure rule, so tests can count on exactly when the breaker trips.
CONSECUTIVE_ONLY: dict[str, Any] = {"failure_rate_threshold": None}


async def _rejected(harness: Harness, breaker: PersistentCircuitBreaker) -> CircuitOpenError:
    """Make one call that must be rejected without running; return the rejection."""
    ran: list[bool] = []
    with pytest.raises(CircuitOpenError) as info:
        await harness.call(breaker, lambda: ran.append(True))
    assert ran == []
    return info.value


# ---------------------------------------------------------------- consecutive failures


async def test_consecutive_failures_open(harness: Harness) -> None:
    """N consecutive counted failures open the breaker; a success in between restarts the count."""
    breaker = harness.breaker(failure_threshold=3, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    await harness.fail(breaker)
    await harness.ok(breaker)
    await harness.fail(breaker)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.CLOSED
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN
    await _rejected(harness, breaker)


async def test_rejection_carries_name_retry_after_and_state(harness: Harness, clock: FakeClock) -> None:
    """CircuitOpenError names the breaker and says how long until a trial is allowed."""
    breaker = harness.breaker("payments", failure_threshold=1, reset_timeout_s=30, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    error = await _rejected(harness, breaker)
    assert isinstance(error, ResilienceError)
    assert error.name == "payments"
    assert error.retry_after_s == pytest.approx(30.0)
    assert error.state == "open"
    assert "payments" in str(error)
    clock.advance(12.5)
    assert (await _rejected(harness, breaker)).retry_after_s == pytest.approx(17.5)


def test_circuit_open_error_constructor() -> None:
    """CircuitOpenError(name, retry_after_s[, state]) exposes its arguments as attributes."""
    error = CircuitOpenError("rag_api", 2.5)
    assert (error.name, error.retry_after_s, error.state) == ("rag_api", 2.5, "open")
    assert CircuitOpenError("x", 0.0, "half_open").state == "half_open"
    assert str(error) == "circuit 'rag_api' is open; retry after 2.500s"


async def test_callers_exception_is_reraised_unchanged(harness: Harness) -> None:
    """The protected function's own exception object comes back, with its traceback and no chaining."""
    breaker = harness.breaker(failure_threshold=1, **CONSECUTIVE_ONLY)
    error = ConnectionError("refused")

    def protected_boom() -> None:
        raise error

    with pytest.raises(ConnectionError) as info:
        await harness.call(breaker, protected_boom)
    assert info.value is error
    assert error.__cause__ is None
    assert error.__context__ is None
    assert "protected_boom" in [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert breaker.state is CircuitState.OPEN  # it was also the failure that tripped


# ---------------------------------------------------------------- failure rate


async def test_failure_rate_count_window_waits_for_minimum_calls(harness: Harness) -> None:
    """A failure rate only opens the breaker once minimum_calls outcomes are in the window."""
    breaker = harness.breaker(failure_threshold=None, failure_rate_threshold=0.5, window_size=10, minimum_calls=4)
    for _ in range(3):
        await harness.fail(breaker)
    assert breaker.state is CircuitState.CLOSED  # 3/3 failed, but only 3 calls seen
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN


async def test_failure_rate_below_threshold_stays_closed(harness: Harness) -> None:
    """A failure rate under the threshold never opens the breaker."""
    breaker = harness.breaker(failure_threshold=None, failure_rate_threshold=0.5, window_size=10, minimum_calls=4)
    for _ in range(6):
        await harness.ok(breaker)
        await harness.ok(breaker)
        await harness.fail(breaker)  # 1 in 3
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["window"] == {"calls": 10, "failures": 4, "slow": 0}  # F S S F S S F S S F


async def test_count_window_slides_over_the_last_calls(harness: Harness) -> None:
    """Only the last window_size calls count: early successes slide out and the rate reaches the threshold."""
    breaker = harness.breaker(failure_threshold=None, failure_rate_threshold=0.5, window_size=4, minimum_calls=4)
    for _ in range(6):
        await harness.ok(breaker)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.CLOSED  # window S S S F
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN  # window S S F F: 2/4 (overall only 2/8)


async def test_time_window_counts_recent_seconds(harness: Harness, clock: FakeClock) -> None:
    """A time window adds up every bucket younger than window_size seconds."""
    breaker = harness.breaker(
        failure_threshold=None, failure_rate_threshold=0.5, window_type="time", window_size=10, minimum_calls=4
    )
    await harness.fail(breaker)
    await harness.fail(breaker)
    clock.advance(5)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.CLOSED
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN


async def test_time_window_buckets_expire(harness: Harness, clock: FakeClock) -> None:
    """Outcomes older than the time window no longer count toward minimum_calls or the rate."""
    breaker = harness.breaker(
        failure_threshold=None, failure_rate_threshold=0.5, window_type="time", window_size=10, minimum_calls=4
    )
    for _ in range(3):
        await harness.fail(breaker)
    clock.advance(11)
    assert breaker.metrics()["window"] == {"calls": 0, "failures": 0, "slow": 0}
    await harness.ok(breaker)
    await harness.fail(breaker)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.CLOSED  # 3 calls since the old ones expired
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN  # 3/4 failed


# ---------------------------------------------------------------- slow calls


async def test_slow_call_rate_opens(harness: Harness) -> None:
    """Calls at least slow_call_duration_s long count as slow; a slow rate over the threshold opens."""
    breaker = harness.breaker(
        failure_threshold=None,
        failure_rate_threshold=None,
        slow_call_duration_s=1.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
    )
    await harness.ok(breaker, slow_s=0.5)
    await harness.ok(breaker)
    await harness.ok(breaker, slow_s=1.0)  # exactly the threshold is slow
    assert breaker.state is CircuitState.CLOSED
    await harness.ok(breaker, slow_s=3.0)
    assert breaker.state is CircuitState.OPEN
    metrics = breaker.metrics()
    assert metrics["slow_calls"] == 2
    assert metrics["failures"] == 0


async def test_slow_calls_under_threshold_keep_it_closed(harness: Harness) -> None:
    """Fast calls never count as slow, and a slow rate below the threshold does not open."""
    breaker = harness.breaker(
        failure_threshold=None, slow_call_duration_s=1.0, slow_call_rate_threshold=0.75, window_size=4, minimum_calls=4
    )
    for _ in range(3):
        await harness.ok(breaker, slow_s=2.0)
        await harness.ok(breaker)
    assert breaker.state is CircuitState.CLOSED


# ---------------------------------------------------------------- half-open


async def test_half_open_success_threshold_closes(harness: Harness, clock: FakeClock) -> None:
    """After reset_timeout_s, success_threshold successful trials close the breaker."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=10, success_threshold=2, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(9.9)
    assert (await _rejected(harness, breaker)).retry_after_s == pytest.approx(0.1)
    clock.advance(0.1)
    await harness.ok(breaker)
    assert breaker.state is CircuitState.HALF_OPEN
    await harness.ok(breaker)
    assert breaker.state is CircuitState.CLOSED


async def test_failed_trial_reopens(harness: Harness, clock: FakeClock) -> None:
    """A failed trial call reopens the breaker for a new open period."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=10, success_threshold=2, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(10)
    await harness.ok(breaker)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert (await _rejected(harness, breaker)).retry_after_s == pytest.approx(10.0)


async def test_half_open_rejects_beyond_max_calls_in_sequence(harness: Harness, clock: FakeClock) -> None:
    """With a trial in flight and half_open_max_calls=1, another call is rejected in state half_open."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=1, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(1)
    nested: list[CircuitOpenError] = []

    def trial() -> str:
        try:
            breaker.call_sync(lambda: "never")
        except CircuitOpenError as exc:
            nested.append(exc)
        return "ok"

    assert await harness.call(breaker, trial) == "ok"
    assert len(nested) == 1
    assert nested[0].state == "half_open"
    assert nested[0].retry_after_s == 0.0
    assert breaker.state is CircuitState.CLOSED


async def test_growing_open_duration_is_capped(harness: Harness, clock: FakeClock) -> None:
    """Each consecutive trip multiplies the open duration by reset_backoff, up to max_reset_timeout_s."""
    breaker = harness.breaker(
        failure_threshold=1, reset_timeout_s=10, reset_backoff=2, max_reset_timeout_s=25, **CONSECUTIVE_ONLY
    )
    await harness.fail(breaker)
    expected = [10.0, 20.0, 25.0, 25.0]
    for i, duration in enumerate(expected):
        assert (await _rejected(harness, breaker)).retry_after_s == pytest.approx(duration)
        assert breaker.snapshot.trips == i + 1
        clock.advance(duration - 0.001)
        await _rejected(harness, breaker)
        clock.advance(0.001)
        if i < len(expected) - 1:
            await harness.fail(breaker)  # the trial fails: a longer opening
    await harness.ok(breaker)
    assert breaker.state is CircuitState.CLOSED
    await harness.fail(breaker)
    assert (await _rejected(harness, breaker)).retry_after_s == pytest.approx(10.0)  # closing reset the growth


def test_expired_trial_lease_frees_the_slot(clock: FakeClock) -> None:
    """A trial permit whose holder died is freed after trial_lease_s, so half-open never wedges."""
    store = MemoryStore()
    breaker = PersistentCircuitBreaker(
        "svc", BreakerConfig(failure_threshold=1, reset_timeout_s=1, trial_lease_s=5), store=store, clock=clock
    )
    with pytest.raises(ConnectionError):
        breaker.call_sync(_raise, ConnectionError())
    clock.advance(1)
    with pytest.raises(KeyboardInterrupt):  # moves OPEN -> HALF_OPEN, frees its own permit
        breaker.call_sync(_raise, KeyboardInterrupt())
    assert breaker.state is CircuitState.HALF_OPEN
    # A holder that never reports back (its process died) takes the only permit.
    assert store.acquire_trial_sync("svc", breaker.snapshot.version, 1, 5000.0, clock.now_ms()) is not None
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call_sync(lambda: "x")
    assert info.value.state == "half_open"
    clock.advance(0.1)
    assert breaker.call_sync(lambda: "x") == "x"
    assert breaker.state is CircuitState.CLOSED


def _raise(exc: BaseException) -> None:
    raise exc


# ---------------------------------------------------------------- manual control


async def test_force_open_rejects_until_reset(harness: Harness, clock: FakeClock) -> None:
    """force_open rejects every call (state forced_open, retry after inf) until reset, however long."""
    breaker = harness.breaker()
    await harness.manual(breaker, "force_open")
    assert breaker.state is CircuitState.FORCED_OPEN
    clock.advance(10_000)
    error = await _rejected(harness, breaker)
    assert error.state == "forced_open"
    assert math.isinf(error.retry_after_s)
    await harness.manual(breaker, "reset")
    assert breaker.state is CircuitState.CLOSED
    await harness.ok(breaker)


async def test_force_close_closes_an_open_breaker(harness: Harness) -> None:
    """force_close (alias of reset) closes an open breaker at once and clears its counts."""
    breaker = harness.breaker(failure_threshold=2, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN
    await harness.manual(breaker, "force_close")
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot.trips == 0
    await harness.ok(breaker)


async def test_reset_clears_consecutive_failures(harness: Harness) -> None:
    """reset on a closed breaker forgets the failures counted so far."""
    breaker = harness.breaker(failure_threshold=3, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    await harness.fail(breaker)
    await harness.manual(breaker, "reset")
    assert breaker.metrics()["consecutive_failures"] == 0
    await harness.fail(breaker)
    await harness.fail(breaker)
    assert breaker.state is CircuitState.CLOSED


async def test_disable_passes_everything_through_uncounted(harness: Harness) -> None:
    """A disabled breaker runs every call and never opens, until reset."""
    breaker = harness.breaker(failure_threshold=1, **CONSECUTIVE_ONLY)
    await harness.manual(breaker, "disable")
    for _ in range(5):
        await harness.fail(breaker)
    await harness.ok(breaker)
    assert breaker.state is CircuitState.DISABLED
    assert breaker.metrics()["failures"] == 0
    await harness.manual(breaker, "reset")
    await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN


async def test_disable_from_open(harness: Harness) -> None:
    """disable also lifts an open breaker: calls run again."""
    breaker = harness.breaker(failure_threshold=1, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    await harness.manual(breaker, "disable")
    await harness.ok(breaker)


# ---------------------------------------------------------------- which exceptions count


async def test_exclude_never_counts(harness: Harness) -> None:
    """Excluded exception types pass through unchanged and never count (they are 'ignored')."""
    breaker = harness.breaker(failure_threshold=1, exclude=(KeyError,), **CONSECUTIVE_ONLY)
    await harness.fail(breaker, KeyError("missing"))
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["ignored"] == 1
    await harness.fail(breaker, ConnectionError())
    assert breaker.state is CircuitState.OPEN


async def test_include_limits_what_counts(harness: Harness) -> None:
    """Only included exception types (and subclasses) count as failures."""
    breaker = harness.breaker(failure_threshold=1, include=(OSError,), **CONSECUTIVE_ONLY)
    await harness.fail(breaker, ValueError())
    assert breaker.state is CircuitState.CLOSED
    await harness.fail(breaker, ConnectionRefusedError())
    assert breaker.state is CircuitState.OPEN


async def test_exclude_wins_over_include(harness: Harness) -> None:
    """An exception both included and excluded does not count."""
    breaker = harness.breaker(failure_threshold=1, include=(OSError,), exclude=(FileNotFoundError,), **CONSECUTIVE_ONLY)
    await harness.fail(breaker, FileNotFoundError())
    assert breaker.state is CircuitState.CLOSED


async def test_is_failure_predicate_decides(harness: Harness) -> None:
    """is_failure has the final word on included exceptions."""
    seen: list[BaseException] = []

    def is_failure(exc: BaseException) -> bool:
        seen.append(exc)
        return "5xx" in str(exc)

    breaker = harness.breaker(failure_threshold=1, is_failure=is_failure, **CONSECUTIVE_ONLY)
    await harness.fail(breaker, RuntimeError("4xx"))
    assert breaker.state is CircuitState.CLOSED
    await harness.fail(breaker, RuntimeError("5xx"))
    assert breaker.state is CircuitState.OPEN
    assert [str(e) for e in seen] == ["4xx", "5xx"]


async def test_excluded_trial_frees_permit_without_closing(harness: Harness, clock: FakeClock) -> None:
    """An excluded exception in a half-open trial neither closes nor reopens, and frees the permit."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=1, exclude=(KeyError,), **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(1)
    await harness.fail(breaker, KeyError())
    assert breaker.state is CircuitState.HALF_OPEN
    await harness.ok(breaker)
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, asyncio.CancelledError, SystemExit])
async def test_base_exceptions_never_count(harness: Harness, exc_type: type[BaseException]) -> None:
    """Cancellation, KeyboardInterrupt and SystemExit propagate unchanged and count nothing."""
    breaker = harness.breaker(failure_threshold=1, **CONSECUTIVE_ONLY)
    await harness.fail(breaker, exc_type())
    assert breaker.state is CircuitState.CLOSED
    metrics = breaker.metrics()
    assert (metrics["failures"], metrics["ignored"], metrics["successes"]) == (0, 0, 0)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, asyncio.CancelledError])
async def test_base_exception_frees_half_open_permit(
    harness: Harness, clock: FakeClock, exc_type: type[BaseException]
) -> None:
    """A trial ended by cancellation or KeyboardInterrupt frees its permit and leaves the breaker half-open."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=1, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(1)
    await harness.fail(breaker, exc_type())
    assert breaker.state is CircuitState.HALF_OPEN
    await harness.ok(breaker)  # the only permit is free again
    assert breaker.state is CircuitState.CLOSED


async def test_late_failure_does_not_extend_open_period(clock: FakeClock) -> None:
    """A failure of a call admitted before the trip leaves the open period unchanged."""
    breaker = PersistentCircuitBreaker(
        "svc", BreakerConfig(failure_threshold=1, reset_timeout_s=10, **CONSECUTIVE_ONLY), clock=clock
    )
    release = asyncio.Event()

    async def slow_fail() -> None:
        await release.wait()
        raise ConnectionError("late")

    late = asyncio.create_task(breaker.call(slow_fail))
    await asyncio.sleep(0)
    with pytest.raises(ConnectionError):
        await breaker.call(_araise, ConnectionError())
    snap = breaker.snapshot
    clock.advance(5)
    release.set()
    with pytest.raises(ConnectionError):
        await late
    assert breaker.snapshot == snap
    clock.advance(5)
    assert await breaker.call(_aok) == "ok"


async def _araise(exc: BaseException) -> None:
    raise exc


async def _aok() -> str:
    return "ok"


# ---------------------------------------------------------------- per-call deadline


@pytest.mark.parametrize("via_proxy", [False, True])
async def test_call_timeout_raises_and_counts(clock: FakeClock, via_proxy: bool) -> None:
    """An async call past call_timeout_s raises CallTimeoutError (a TimeoutError) and counts as a failure."""
    cfg = BreakerConfig(failure_threshold=1, call_timeout_s=0.01, **CONSECUTIVE_ONLY)
    registry = init_registry_sync(RegistryConfig(breakers={"svc": cfg}), clock=clock)
    breaker = registry.get("svc")

    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(CallTimeoutError) as info:
        if via_proxy:
            await CircuitBreakerProxy("svc")(hang)()
        else:
            await breaker.call(hang)
    assert isinstance(info.value, TimeoutError)
    assert (info.value.name, info.value.timeout_s) == ("svc", 0.01)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics()["failures"] == 1


async def test_call_within_deadline_returns(clock: FakeClock) -> None:
    """A call that finishes within call_timeout_s returns its result and counts as a success."""
    breaker = PersistentCircuitBreaker("svc", BreakerConfig(call_timeout_s=5), clock=clock)
    assert await breaker.call(_aok) == "ok"
    assert breaker.metrics()["successes"] == 1


async def test_own_timeout_error_follows_include_rules(clock: FakeClock) -> None:
    """A TimeoutError raised by the function itself is the caller's, re-raised as is (not a CallTimeoutError)."""
    breaker = PersistentCircuitBreaker(
        "svc", BreakerConfig(call_timeout_s=5, failure_threshold=1, exclude=(TimeoutError,)), clock=clock
    )
    error = TimeoutError("upstream said so")
    with pytest.raises(TimeoutError) as info:
        await breaker.call(_araise, error)
    assert info.value is error
    assert breaker.state is CircuitState.CLOSED


# ---------------------------------------------------------------- listeners, logs, metrics


async def test_listener_events(harness: Harness, clock: FakeClock) -> None:
    """Listeners see success, failure (with the exception), state_change (with previous) and rejected events."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=10, **CONSECUTIVE_ONLY)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append)
    await harness.ok(breaker)
    error = ConnectionError("down")
    await harness.fail(breaker, error)
    await _rejected(harness, breaker)
    clock.advance(10)
    await harness.ok(breaker)
    kinds = [(e.kind, e.state, e.previous) for e in events]
    assert kinds == [
        ("success", CircuitState.CLOSED, None),
        ("failure", CircuitState.CLOSED, None),
        ("state_change", CircuitState.OPEN, CircuitState.CLOSED),
        ("rejected", CircuitState.OPEN, None),
        ("state_change", CircuitState.HALF_OPEN, CircuitState.OPEN),
        ("success", CircuitState.HALF_OPEN, None),
        ("state_change", CircuitState.CLOSED, CircuitState.HALF_OPEN),
    ]
    assert events[1].exception is error
    assert events[3].retry_after_s == pytest.approx(10.0)
    assert all(e.name == "svc" for e in events)
    assert "consecutive" in events[2].reason


async def test_listener_kinds_filter_and_removal(harness: Harness) -> None:
    """A listener only receives the kinds it asked for, and nothing after remove_listener."""
    breaker = harness.breaker(failure_threshold=1, **CONSECUTIVE_ONLY)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append, kinds={"state_change"})
    await harness.ok(breaker)
    await harness.fail(breaker)
    assert [e.kind for e in events] == ["state_change"]
    breaker.remove_listener(events.append)
    await harness.manual(breaker, "reset")
    assert len(events) == 1
    with pytest.raises(ValueError, match="unknown event kind"):
        breaker.add_listener(events.append, kinds={"nope"})


async def test_rejected_event_in_half_open(harness: Harness, clock: FakeClock) -> None:
    """A call rejected for want of a trial slot emits a 'rejected' event like any other rejection."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=1, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(1)
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append, kinds={"rejected"})

    def trial() -> None:
        with pytest.raises(CircuitOpenError):
            breaker.call_sync(lambda: None)

    await harness.call(breaker, trial)
    assert [(e.kind, e.state) for e in events] == [("rejected", CircuitState.HALF_OPEN)]
    assert breaker.metrics()["rejections"] == 1


async def test_listener_exception_is_logged_not_raised(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A failing listener is logged with the breaker's name; calls and other listeners are unaffected."""
    breaker = harness.breaker("flaky_listener", failure_threshold=1, **CONSECUTIVE_ONLY)
    seen: list[str] = []

    def bad(event: BreakerEvent) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(bad)
    breaker.add_listener(lambda e: seen.append(e.kind))
    with caplog.at_level(logging.ERROR, logger="resilience"):
        await harness.ok(breaker)
        await harness.fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert seen == ["success", "failure", "state_change"]
    failed = [r for r in caplog.records if "listener_failed" in r.getMessage()]
    assert len(failed) == 3
    assert all("flaky_listener" in r.getMessage() and r.exc_info for r in failed)


async def test_log_lines_carry_breaker_name(
    harness: Harness, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each state change logs one line naming the breaker (message and ``extra``)."""
    breaker = harness.breaker("rag_api_logs", failure_threshold=1, reset_timeout_s=1, **CONSECUTIVE_ONLY)
    with caplog.at_level(logging.INFO, logger="resilience"):
        await harness.fail(breaker)
        clock.advance(1)
        await harness.ok(breaker)
    changes = [r for r in caplog.records if r.getMessage().startswith("resilience.circuit_")]
    assert [r.getMessage().split()[0] for r in changes] == [
        "resilience.circuit_opened",
        "resilience.circuit_half_open",
        "resilience.circuit_closed",
    ]
    assert changes[0].levelno == logging.WARNING
    for record in changes:
        assert "breaker=rag_api_logs" in record.getMessage()
        assert record.breaker == "rag_api_logs"  # type: ignore[attr-defined]


async def test_metrics_counters(harness: Harness, clock: FakeClock) -> None:
    """metrics() counts successes, failures, ignored, slow calls, rejections, transitions and the window."""
    breaker = harness.breaker(
        failure_threshold=3,
        failure_rate_threshold=None,
        slow_call_duration_s=1.0,
        slow_call_rate_threshold=1.0,
        minimum_calls=100,
        exclude=(KeyError,),
        reset_timeout_s=10,
    )
    await harness.ok(breaker)
    await harness.ok(breaker, slow_s=2)
    await harness.fail(breaker, KeyError())
    for _ in range(3):
        await harness.fail(breaker)
    await _rejected(harness, breaker)
    await _rejected(harness, breaker)
    metrics = breaker.metrics()
    assert metrics == {
        "name": "svc",
        "state": "open",
        "successes": 2,
        "failures": 3,
        "ignored": 1,
        "slow_calls": 1,
        "rejections": 2,
        "transitions": 1,
        "consecutive_failures": 3,
        "window": {"calls": 5, "failures": 3, "slow": 1},
        "trips": 1,
        "opened_until_ms": pytest.approx(clock.now_ms() + 10_000),
    }


# ---------------------------------------------------------------- no lock held around the call


async def test_breaker_usable_from_inside_the_protected_function(harness: Harness) -> None:
    """The protected function can call, trip, inspect and control its own breaker: no lock is held."""
    breaker = harness.breaker(failure_threshold=1, **CONSECUTIVE_ONLY)

    def outer() -> str:
        assert breaker.call_sync(lambda: "inner") == "inner"
        with pytest.raises(ConnectionError):
            breaker.call_sync(_raise, ConnectionError())  # the failure path takes the lock
        assert breaker.state is CircuitState.OPEN
        breaker.metrics()
        breaker.add_listener(lambda e: None)
        breaker.reset_sync()
        return "outer"

    assert await harness.call(breaker, outer) == "outer"


async def test_other_threads_not_blocked_while_a_call_runs(harness: Harness, clock: FakeClock) -> None:
    """While a trial call is in flight, another thread can fail, reject, inspect and reset without waiting."""
    breaker = harness.breaker(failure_threshold=1, reset_timeout_s=1, **CONSECUTIVE_ONLY)
    await harness.fail(breaker)
    clock.advance(1)
    results: list[str] = []

    def other_thread() -> None:
        try:
            breaker.call_sync(lambda: None)
        except CircuitOpenError as exc:
            results.append(exc.state)
        breaker.metrics()
        breaker.force_open_sync()
        results.append(breaker.state.value)
        breaker.reset_sync()
        with pytest.raises(ConnectionError):
            breaker.call_sync(_raise, ConnectionError())
        results.append(breaker.state.value)

    def trial() -> str:
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=5)
        assert not thread.is_alive(), "another thread was blocked while a protected call ran"
        return "done"

    assert await harness.call(breaker, trial) == "done"
    assert results == ["half_open", "forced_open", "open"]
    # The old trial's outcome belongs to a past half-open period: it must not close the new opening.
    assert breaker.state is CircuitState.OPEN
