"""Exactness under concurrent threads and asyncio tasks: the half-open limit, racing trips, cancellation."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from resilience import (
    BreakerConfig,
    BreakerEvent,
    CircuitBreakerProxy,
    CircuitOpenError,
    CircuitState,
    MemoryStore,
    PersistentCircuitBreaker,
    RegistryConfig,
    Snapshot,
    init_registry_sync,
)
from resilience.testing import FakeClock

THREADS = 24
MAX_TRIALS = 3
WAIT_S = 10.0  # generous bound on thread coordination; never reached when the code is right


def _half_open_breaker(route: str, clock: FakeClock, **settings: Any) -> PersistentCircuitBreaker:
    cfg = BreakerConfig(
        failure_threshold=1,
        failure_rate_threshold=None,
        reset_timeout_s=1,
        half_open_max_calls=MAX_TRIALS,
        success_threshold=MAX_TRIALS,
        **settings,
    )
    if route == "proxy":
        breaker = init_registry_sync(RegistryConfig(breakers={"svc": cfg}), clock=clock).get("svc")
    else:
        breaker = PersistentCircuitBreaker("svc", cfg, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call_sync(_raise, ConnectionError())
    clock.advance(1)
    return breaker


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize("route", ["direct", "proxy"])
def test_half_open_limit_exact_under_threads(route: str, clock: FakeClock) -> None:
    """Threads released at once into a half-open breaker: exactly half_open_max_calls run, the rest are rejected."""
    breaker = _half_open_breaker(route, clock)
    barrier = threading.Barrier(THREADS)
    release = threading.Event()
    cond = threading.Condition()
    admitted: list[int] = []
    rejected: list[CircuitOpenError] = []
    results: list[str] = []

    def protected(i: int) -> str:
        with cond:
            admitted.append(i)
            cond.notify_all()
        assert release.wait(WAIT_S)
        return "ok"

    call = CircuitBreakerProxy("svc")(protected) if route == "proxy" else None

    def worker(i: int) -> None:
        barrier.wait(WAIT_S)
        try:
            result = call(i) if call is not None else breaker.call_sync(protected, i)
        except CircuitOpenError as exc:
            with cond:
                rejected.append(exc)
                cond.notify_all()
        else:
            results.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    with cond:
        assert cond.wait_for(lambda: len(admitted) + len(rejected) == THREADS, WAIT_S)
    assert len(admitted) == MAX_TRIALS
    assert all(exc.state == "half_open" for exc in rejected)
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert results == ["ok"] * MAX_TRIALS
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["rejections"] == THREADS - MAX_TRIALS


@pytest.mark.parametrize("route", ["direct", "proxy"])
async def test_half_open_limit_exact_under_tasks(route: str, clock: FakeClock) -> None:
    """Many asyncio tasks into a half-open breaker: exactly half_open_max_calls run, the rest are rejected."""
    breaker = _half_open_breaker(route, clock)
    release = asyncio.Event()
    admitted: list[int] = []

    async def protected(i: int) -> str:
        admitted.append(i)
        await release.wait()
        return "ok"

    call = CircuitBreakerProxy("svc")(protected) if route == "proxy" else None

    async def one(i: int) -> str:
        return await (call(i) if call is not None else breaker.call(protected, i))

    tasks = [asyncio.create_task(one(i)) for i in range(THREADS)]
    done, pending = await asyncio.wait(tasks, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    while len(done) < THREADS - MAX_TRIALS:
        more, pending = await asyncio.wait(pending, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        assert more, "tasks stopped making progress"
        done |= more
    assert len(done) == THREADS - MAX_TRIALS
    assert all(isinstance(t.exception(), CircuitOpenError) for t in done)
    assert len(admitted) == MAX_TRIALS
    release.set()
    assert await asyncio.gather(*pending) == ["ok"] * MAX_TRIALS
    assert breaker.state is CircuitState.CLOSED


async def test_cancelled_trial_task_frees_its_permit(clock: FakeClock) -> None:
    """Cancelling a task blocked inside a half-open trial frees its permit for the next caller."""
    breaker = _half_open_breaker("direct", clock)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    holders = [asyncio.create_task(breaker.call(hang)) for _ in range(MAX_TRIALS)]
    await started.wait()
    await asyncio.sleep(0)  # let every holder reach its await
    with pytest.raises(CircuitOpenError):
        await breaker.call(hang)
    holders[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await holders[0]
    assert breaker.metrics()["failures"] == 1  # the cancellation counted nothing
    assert await breaker.call(_ok) == "ok"
    for task in holders[1:]:
        task.cancel()
    await asyncio.gather(*holders[1:], return_exceptions=True)
    assert breaker.state is CircuitState.HALF_OPEN


async def _ok() -> str:
    return "ok"


class _RendezvousStore(MemoryStore):
    """A MemoryStore whose first two transitions wait for each other, forcing two proposals at one version."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2)
        self.proposals: list[int] = []

    def transition_sync(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        if len(self.proposals) < 2:
            self.proposals.append(expected_version)
            self.barrier.wait(WAIT_S)
        return super().transition_sync(name, expected_version, new)


def test_racing_trips_emit_one_state_change(clock: FakeClock) -> None:
    """Two threads whose failures both trip at the same version: one OPEN is applied, one event is emitted."""
    store = _RendezvousStore()
    breaker = PersistentCircuitBreaker(
        "svc", BreakerConfig(failure_threshold=1, failure_rate_threshold=None), store=store, clock=clock
    )
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append, kinds={"state_change"})
    both_in = threading.Barrier(2)

    def fail() -> None:
        both_in.wait(WAIT_S)  # both calls are admitted while CLOSED before either fails
        raise ConnectionError("down")

    def worker() -> None:
        with pytest.raises(ConnectionError):
            breaker.call_sync(fail)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert store.proposals == [0, 0]
    assert [(e.previous, e.state) for e in events] == [(CircuitState.CLOSED, CircuitState.OPEN)]
    assert breaker.snapshot.version == 1
    assert breaker.snapshot.trips == 1
    assert breaker.metrics()["transitions"] == 1


def test_many_threads_failing_trip_exactly_once(clock: FakeClock) -> None:
    """Many threads failing together open the breaker once, and every failure is counted exactly."""
    breaker = PersistentCircuitBreaker(
        "svc", BreakerConfig(failure_threshold=5, failure_rate_threshold=None), clock=clock
    )
    events: list[BreakerEvent] = []
    breaker.add_listener(events.append, kinds={"state_change"})
    barrier = threading.Barrier(THREADS)

    def fail() -> None:
        barrier.wait(WAIT_S)
        raise ConnectionError("down")

    def worker() -> None:
        with pytest.raises(ConnectionError):
            breaker.call_sync(fail)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert len(events) == 1
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics()["failures"] == THREADS


async def test_cancelled_caller_gives_back_a_permit_granted_while_it_waited(clock: FakeClock) -> None:
    """A caller cancelled while the store grants its trial permit hands the permit back at once."""
    gate = asyncio.Event()

    class SlowStore(MemoryStore):
        """Grants the permit, then takes a while to answer (like a Redis reply still in flight)."""

        async def acquire_trial(self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float) -> Any:
            token = self.acquire_trial_sync(name, version, max_calls, lease_ms, now_ms)
            await gate.wait()
            return token

    breaker = PersistentCircuitBreaker(
        "slow", BreakerConfig(failure_threshold=1, reset_timeout_s=1), SlowStore(), clock
    )

    async def fail() -> None:
        raise ConnectionError("down")

    async def ok() -> str:
        return "ok"

    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    clock.advance(1)
    waiting = asyncio.create_task(breaker.call(ok))
    for _ in range(5):
        await asyncio.sleep(0)
    waiting.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    for _ in range(5):
        await asyncio.sleep(0)
    assert await breaker.call(ok) == "ok"  # the permit came back: this call is the trial, and it closes
    assert breaker.state is CircuitState.CLOSED
