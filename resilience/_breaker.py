"""PersistentCircuitBreaker: one state machine, an async shell (``call``/``stream``) and a sync shell
(``call_sync``/``stream_sync``).

How a call flows:
1. Permission. In CLOSED the answer comes from a local field read: no lock, no store. OPEN rejects
   from local fields until the open period ends; then the breaker proposes HALF_OPEN to the store and
   asks it for a trial permit. FORCED_OPEN rejects; DISABLED passes calls through uncounted.
2. The protected function runs with no lock held.
3. Outcome. A closed-state success is two lock-free writes (reset the consecutive-failure count, one
   slot of the outcome window). A failure takes the breaker's lock to update counts and decide whether
   to trip; the trip itself is a compare-and-set in the store. Trial outcomes go to the store.

Everything that may touch the store is written once, as a generator of store requests (``_*_steps``);
``_drive_sync`` runs them with the store's ``*_sync`` methods, ``_drive`` awaits the async ones. That
is the only place the two shells differ.

Races, named:
- Two threads see the failure that trips: both propose OPEN at the same version; the store applies
  one, the other adopts the winner. Exactly one state-change event is emitted.
- A late outcome of a call admitted before a trip never changes an open breaker, and never extends
  its open period.
- Success-path writes are unlocked: with free-threaded Python a success may be lost from the window,
  which can only make a rate look worse by a call; failure counts are always exact.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from . import _state
from ._state import CircuitState, Snapshot
from ._store import BreakerStore, MemoryStore
from .clock import Clock, SystemClock
from .config import BreakerConfig
from .errors import CallTimeoutError, CircuitOpenError

__all__ = ["BreakerEvent", "PersistentCircuitBreaker"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

CLOSED: Final = CircuitState.CLOSED
OPEN: Final = CircuitState.OPEN
HALF_OPEN: Final = CircuitState.HALF_OPEN
FORCED_OPEN: Final = CircuitState.FORCED_OPEN
DISABLED: Final = CircuitState.DISABLED

_FAIL = 1
_SLOW = 2
EVENT_KINDS: Final = frozenset({"state_change", "rejected", "success", "failure"})

# A store request: (method name without the _sync suffix, positional arguments).
_Request = tuple[str, tuple[Any, ...]]
_Steps = Generator[_Request, Any, T]


def _peek(counter: itertools.count[int]) -> int:
    """Current value of an ``itertools.count`` without advancing it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


@dataclass(frozen=True, slots=True)
class _Trial:
    """A half-open trial permit."""

    version: int
    token: int


class _Pass:
    """Permission marker of a DISABLED breaker: run the call, count nothing."""


_PASS: Final = _Pass()


class _AskStore:
    """Permission marker: the local view cannot decide (open period over, or half-open)."""


_ASK_STORE: Final = _AskStore()


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """Something a listener may want to know about.

    ``kind`` is one of ``state_change``, ``rejected``, ``success``, ``failure``.
    """

    kind: str
    name: str
    state: CircuitState
    previous: CircuitState | None = None
    reason: str = ""
    exception: BaseException | None = None
    retry_after_s: float | None = None
    origin: str = "local"


Listener = Callable[[BreakerEvent], None]


class _CountWindow:
    """The last ``size`` outcomes in a ring of flags; a success is one unlocked slot write."""

    __slots__ = ("ring", "seq", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring = bytearray(size)
        self.seq = itertools.count()

    def ok(self) -> None:
        self.ring[next(self.seq) % self.size] = 0

    def record(self, flags: int) -> None:
        self.ring[next(self.seq) % self.size] = flags

    def stats(self) -> tuple[int, int, int]:
        ring = self.ring
        both = ring.count(_FAIL | _SLOW)
        return min(_peek(self.seq), self.size), ring.count(_FAIL) + both, ring.count(_SLOW) + both

    def clear(self) -> None:
        self.ring = bytearray(self.size)
        self.seq = itertools.count()


class _TimeWindow:
    """Outcomes of the last ``size`` seconds in one-second buckets; a success counts without the lock."""

    __slots__ = ("calls", "fails", "lock", "mono", "secs", "size", "slow")

    def __init__(self, size: int, mono: Callable[[], float]) -> None:
        self.size = size
        self.mono = mono
        self.lock = threading.Lock()
        self.clear()

    def _bucket(self) -> int:
        sec = int(self.mono())
        i = sec % self.size
        if self.secs[i] != sec:
            with self.lock:
                if self.secs[i] != sec:
                    self.calls[i] = itertools.count()
                    self.fails[i] = 0
                    self.slow[i] = 0
                    self.secs[i] = sec
        return i

    def ok(self) -> None:
        next(self.calls[self._bucket()])

    def record(self, flags: int) -> None:
        i = self._bucket()
        next(self.calls[i])
        self.fails[i] += flags & _FAIL
        self.slow[i] += (flags & _SLOW) >> 1

    def stats(self) -> tuple[int, int, int]:
        oldest = int(self.mono()) - self.size
        calls = fails = slow = 0
        for i, sec in enumerate(self.secs):
            if sec > oldest:
                calls += _peek(self.calls[i])
                fails += self.fails[i]
                slow += self.slow[i]
        return calls, fails, slow

    def clear(self) -> None:
        self.secs = [-1] * self.size
        self.calls = [itertools.count() for _ in range(self.size)]
        self.fails = [0] * self.size
        self.slow = [0] * self.size


class PersistentCircuitBreaker:
    """A circuit breaker whose state is kept in a :class:`BreakerStore` (memory or Redis).

    Args:
        name: identifies the breaker in logs, errors, metrics and the store.
        config: thresholds and timings (defaults: :class:`BreakerConfig`).
        store: shared state (default: a private :class:`MemoryStore`).
        clock: time source (default: :class:`SystemClock`); tests inject a fake.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        store: BreakerStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.config = cfg = config if config is not None else BreakerConfig()
        self._store: BreakerStore = store if store is not None else MemoryStore()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._now_ms = self._clock.now_ms
        self._mono = self._clock.monotonic
        self._lock = threading.Lock()
        self._listeners: dict[str, tuple[Listener, ...]] = dict.fromkeys(EVENT_KINDS, ())
        self._reject_listeners = False
        self._background: set[asyncio.Future[Any]] = set()
        self._slow_s = cfg.slow_call_duration_s
        self._timeout_s = cfg.call_timeout_s
        # A count window never holds more than window_size calls: a larger minimum would switch the rate rules off.
        count_based = cfg.window_type == "count"
        self._minimum_calls = min(cfg.minimum_calls, cfg.window_size) if count_based else cfg.minimum_calls
        self._lease_ms = cfg.trial_lease_s * 1000.0
        self._window: _CountWindow | _TimeWindow = (
            _TimeWindow(cfg.window_size, self._mono) if cfg.window_type == "time" else _CountWindow(cfg.window_size)
        )
        # The hot path writes the count window's ring directly; other windows go through ok().
        self._count_window = isinstance(self._window, _CountWindow) and cfg.rate_rules
        self._consecutive = 0
        self._successes = itertools.count()
        self._rejections = itertools.count()
        self._failures = 0
        self._ignored = 0
        self._slow_calls = 0
        self._transitions = 0
        self._snap = Snapshot()
        self._state = CLOSED
        self._state_name = CLOSED.value
        self._open_until = 0.0  # monotonic deadline of the open period, derived from the snapshot on adoption
        self._hot_sync = self._hot_async = False
        self._refresh_hot()
        known = self._store.attach(name, self._on_remote)
        if known is not None:
            self._adopt(known, origin="store")

    # ------------------------------------------------------------------ introspection

    @property
    def state(self) -> CircuitState:
        """The current state as this process sees it."""
        return self._state

    @property
    def snapshot(self) -> Snapshot:
        """The current shared-state snapshot as this process sees it."""
        return self._snap

    def metrics(self) -> dict[str, Any]:
        """Counters since creation, plus the current window, for metrics exporters and status pages."""
        calls, fails, slow = self._window.stats()
        return {
            "name": self.name,
            "state": self._state.value,
            "successes": _peek(self._successes),
            "failures": self._failures,
            "ignored": self._ignored,
            "slow_calls": self._slow_calls,
            "rejections": _peek(self._rejections),
            "transitions": self._transitions,
            "consecutive_failures": self._consecutive,
            "window": {"calls": calls, "failures": fails, "slow": slow},
            "trips": self._snap.trips,
            "opened_until_ms": self._snap.opened_until_ms if self._state is OPEN else None,
        }

    def add_listener(self, listener: Listener, kinds: Iterable[str] = EVENT_KINDS) -> None:
        """Call ``listener(event)`` for each event of ``kinds``; a listener's exception is logged, not raised."""
        kinds = frozenset(kinds)
        if not kinds <= EVENT_KINDS:
            raise ValueError(f"unknown event kind(s) {sorted(kinds - EVENT_KINDS)}; known: {sorted(EVENT_KINDS)}")
        with self._lock:
            for kind in kinds:
                self._listeners[kind] = (*self._listeners[kind], listener)
            self._refresh_hot()
            self._reject_listeners = bool(self._listeners["rejected"])

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            for kind, listeners in self._listeners.items():
                # ``!=``, not ``is not``: a bound method (``obj.on_event``) is a new object on each access.
                self._listeners[kind] = tuple(item for item in listeners if item != listener)
            self._refresh_hot()
            self._reject_listeners = bool(self._listeners["rejected"])

    def detach(self) -> None:
        """Stop receiving remote state changes (the registry calls this on shutdown)."""
        self._store.detach(self.name, self._on_remote)

    def __repr__(self) -> str:
        return f"<PersistentCircuitBreaker {self.name!r} {self._state.value}>"

    # ------------------------------------------------------------------ sync shell

    def call_sync(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` under the breaker; raises CircuitOpenError when rejected."""
        if self._hot_sync:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._error_sync(None, exc)
                raise
            self._ok()
            return result
        if self._state is OPEN:  # the open-state rejection, one frame shallower
            now = self._mono()
            if now < self._open_until:
                raise self._reject(now)
        permit = self._acquire_sync()
        if isinstance(permit, _Pass):
            return fn(*args, **kwargs)
        t0 = self._mono() if self._slow_s is not None else 0.0
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._error_sync(permit, exc)
            raise
        steps = self._on_success(permit, t0)
        if steps is not None:
            self._drive_sync(steps)
        return result

    def stream_sync(
        self, fn: Callable[..., Generator[Any, Any, T]], /, *args: Any, **kwargs: Any
    ) -> Generator[Any, Any, T]:
        """Iterate the generator ``fn(*args, **kwargs)`` under the breaker.

        A failure while iterating counts; closing the stream early frees any permit and counts nothing.
        The slow-call rule does not apply to streams (their duration includes the consumer's time).
        """
        permit = self._acquire_sync()
        if isinstance(permit, _Pass):
            return (yield from fn(*args, **kwargs))
        try:
            result = yield from fn(*args, **kwargs)
        except BaseException as exc:
            self._error_sync(permit, exc)
            raise
        steps = self._on_success(permit, None)
        if steps is not None:
            self._drive_sync(steps)
        return result

    def _acquire_sync(self) -> _Trial | _Pass | None:
        permit = self._local_permit()
        return self._drive_sync(self._acquire_steps()) if isinstance(permit, _AskStore) else permit

    def _drive_sync(self, steps: _Steps[T]) -> T:
        store = self._store
        try:
            request = next(steps)
            while True:
                method, args = request
                request = steps.send(getattr(store, method + "_sync")(*args))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ async shell

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` under the breaker; raises CircuitOpenError when rejected."""
        if self._hot_async:
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await self._error(None, exc)
                raise
            self._ok()
            return result
        if self._state is OPEN:
            now = self._mono()
            if now < self._open_until:
                raise self._reject(now)
        permit = await self._acquire()
        if isinstance(permit, _Pass):
            return await fn(*args, **kwargs)
        t0 = self._mono() if self._slow_s is not None else 0.0
        try:
            if self._timeout_s is None:
                result = await fn(*args, **kwargs)
            else:
                result = await self._with_deadline(fn(*args, **kwargs))
        except BaseException as exc:
            await self._error(permit, exc)
            raise
        steps = self._on_success(permit, t0)
        if steps is not None:
            await self._drive(steps)
        return result

    async def stream(
        self, fn: Callable[..., AsyncIterator[T]], /, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[T, None]:
        """Iterate the async generator ``fn(*args, **kwargs)`` under the breaker.

        A failure mid-stream counts; closing early or cancelling frees any permit and counts nothing.
        ``call_timeout_s`` applies to each wait for the next item.
        """
        permit = await self._acquire()
        try:
            source = fn(*args, **kwargs)
        except BaseException as exc:  # e.g. a TypeError from the arguments: free a trial permit now, not at expiry
            if not isinstance(permit, _Pass):
                await self._error(permit, exc)
            raise
        if isinstance(permit, _Pass):
            async for item in source:
                yield item
            return
        try:
            if self._timeout_s is None:
                async for item in source:
                    yield item
            else:
                while True:
                    try:
                        item = await self._with_deadline(anext(source))
                    except StopAsyncIteration:
                        break
                    yield item
        except BaseException as exc:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # the source's own cleanup error must not hide the real one
                    logger.debug("resilience.stream_close_failed breaker=%s", self.name, exc_info=True)
            steps = self._on_error(permit, exc)
            if steps is not None:
                await self._drive(steps)
            raise
        steps = self._on_success(permit, None)
        if steps is not None:
            await self._drive(steps)

    async def _with_deadline(self, awaitable: Awaitable[T]) -> T:
        timeout_s = self._timeout_s
        assert timeout_s is not None
        scope = asyncio.timeout(timeout_s)
        try:
            async with scope:
                return await awaitable
        except TimeoutError as exc:
            if scope.expired():
                raise CallTimeoutError(self.name, timeout_s) from exc
            raise

    async def _acquire(self) -> _Trial | _Pass | None:
        permit = self._local_permit()
        return await self._drive(self._acquire_steps()) if isinstance(permit, _AskStore) else permit

    async def _drive(self, steps: _Steps[T]) -> T:
        store = self._store
        try:
            request = next(steps)
            while True:
                method, args = request
                request = steps.send(await self._store_op(getattr(store, method)(*args), method, args))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _store_op(self, operation: Awaitable[Any], method: str, args: tuple[Any, ...]) -> Any:
        """Await one store operation so that a cancelled caller cannot strand shared state.

        The operation runs shielded: once started it completes (a trial outcome is recorded, a
        transition is applied and adopted here too, or this breaker would keep a view the store
        already superseded). A trial permit granted to a caller that was cancelled meanwhile (the
        chat's stop button) is handed straight back instead of blocking half-open until its lease ends.
        """
        task = asyncio.ensure_future(operation)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:

            def settle(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:  # retrieved: no "never retrieved" warning
                    return
                result = done.result()
                if method == "transition":
                    self._adopt(result)
                elif method == "acquire_trial" and result is not None:
                    release = asyncio.ensure_future(self._store.finish_trial(args[0], args[1], result, None))
                    self._background.add(release)  # a reference, or the task may be collected mid-way
                    release.add_done_callback(self._background.discard)

            task.add_done_callback(settle)
            raise

    # ------------------------------------------------------------------ manual control

    async def force_open(self) -> None:
        """Reject every call until :meth:`reset` (fleet-wide with a shared store)."""
        await self._drive(self._manual_steps(FORCED_OPEN))

    def force_open_sync(self) -> None:
        """Sync twin of :meth:`force_open`."""
        self._drive_sync(self._manual_steps(FORCED_OPEN))

    async def reset(self) -> None:
        """Close the breaker and clear its counts."""
        await self._drive(self._manual_steps(CLOSED))

    def reset_sync(self) -> None:
        """Sync twin of :meth:`reset`."""
        self._drive_sync(self._manual_steps(CLOSED))

    force_close = reset
    force_close_sync = reset_sync

    async def disable(self) -> None:
        """Let every call through without counting anything, until :meth:`reset`."""
        await self._drive(self._manual_steps(DISABLED))

    def disable_sync(self) -> None:
        """Sync twin of :meth:`disable`."""
        self._drive_sync(self._manual_steps(DISABLED))

    # ------------------------------------------------------------------ hot-path pieces (also used by proxies)

    def _ok(self) -> None:
        """A closed-state success: lock-free writes only."""
        next(self._successes)
        self._consecutive = 0
        if self._count_window:
            window = self._window
            window.ring[next(window.seq) % window.size] = 0  # type: ignore[union-attr]

    def _error_sync(self, permit: _Trial | None, exc: BaseException) -> None:
        steps = self._on_error(permit, exc)
        if steps is not None:
            self._drive_sync(steps)

    async def _error(self, permit: _Trial | None, exc: BaseException) -> None:
        steps = self._on_error(permit, exc)
        if steps is not None:
            await self._drive(steps)

    # ------------------------------------------------------------------ the one state machine

    def _reject(self, now_mono: float | None) -> CircuitOpenError:
        """Count a rejection and build its error; ``now_mono`` None means no known end (forced open)."""
        next(self._rejections)
        if now_mono is None:
            retry_after = float("inf")
        else:
            retry_after = self._open_until - now_mono
            if retry_after < 0.0:
                retry_after = 0.0
        error = CircuitOpenError(self.name, retry_after, self._state_name)
        if self._reject_listeners:
            self._emit(BreakerEvent("rejected", self.name, self._state, retry_after_s=retry_after))
        return error

    def _local_permit(self) -> _Pass | _AskStore | None:
        """Permission from the local view alone: None (closed), pass-through, a rejection, or ask the store."""
        state = self._state
        if state is CLOSED:
            return None
        if state is DISABLED:
            return _PASS
        if state is OPEN:
            now = self._mono()
            if now < self._open_until:
                raise self._reject(now)
        elif state is FORCED_OPEN:
            raise self._reject(None)
        return _ASK_STORE

    def _acquire_steps(self) -> _Steps[_Trial | _Pass | None]:
        """Permission outside CLOSED: move OPEN -> HALF_OPEN when due, then take a trial permit."""
        for _ in range(8):  # each pass follows one state change; more means a livelock bug
            with self._lock:  # the snapshot and its monotonic deadline, as one consistent pair
                snap, open_until = self._snap, self._open_until
            state = snap.state
            if state is CLOSED:
                return None
            if state is DISABLED:
                return _PASS
            now = self._now_ms()
            if state is FORCED_OPEN:
                raise self._reject(None)
            if state is OPEN:
                # Monotonic, as on the fast path: a wall-clock step back must not extend the open period.
                mono = self._mono()
                if mono < open_until:
                    raise self._reject(mono)
                winner = yield ("transition", (self.name, snap.version, _state.half_open(snap, now)))
                self._adopt(winner)
                continue
            token = yield (
                "acquire_trial",
                (self.name, snap.version, self.config.half_open_max_calls, self._lease_ms, now),
            )
            if token is None:
                next(self._rejections)
                if self._reject_listeners:
                    self._emit(BreakerEvent("rejected", self.name, HALF_OPEN, retry_after_s=0.0))
                raise CircuitOpenError(self.name, 0.0, HALF_OPEN.value)
            return _Trial(snap.version, token)
        raise RuntimeError(f"breaker {self.name!r}: state kept changing while acquiring permission")

    def _on_error(self, permit: _Trial | None, exc: BaseException) -> _Steps[None] | None:
        """Classify an exception from the protected call; return store steps when state may change."""
        if not isinstance(exc, Exception):
            # Cancellation, KeyboardInterrupt, GeneratorExit (stream closed early): count nothing.
            return None if permit is None else self._finish_trial_steps(permit, None)
        deadline = isinstance(exc, CallTimeoutError) and exc.name == self.name
        if not deadline and not self.config.counts(exc):
            with self._lock:
                self._ignored += 1
            return None if permit is None else self._finish_trial_steps(permit, None)
        if self._listeners["failure"]:
            self._emit(BreakerEvent("failure", self.name, self._state, exception=exc))
        return self._failure(permit, _FAIL, type(exc).__name__)

    def _on_success(self, permit: _Trial | None, t0: float | None) -> _Steps[None] | None:
        slow = t0 is not None and self._slow_s is not None and self._mono() - t0 >= self._slow_s
        next(self._successes)
        if self._listeners["success"]:
            self._emit(BreakerEvent("success", self.name, self._state))
        if permit is None:
            if not slow:
                self._consecutive = 0
                self._window.ok()
                return None
            return self._failure(None, _SLOW, "slow call")
        if slow:
            return self._failure(permit, _SLOW, "slow trial call")
        return self._finish_trial_steps(permit, True)

    def _failure(self, permit: _Trial | None, flags: int, what: str) -> _Steps[None] | None:
        """Record a failure or slow call; in CLOSED decide under the lock whether to trip."""
        with self._lock:
            if flags & _FAIL:
                self._failures += 1
                self._consecutive += 1
            else:
                self._slow_calls += 1
                self._consecutive = 0
            if permit is not None:
                return self._trial_failed_steps(permit, what)
            self._window.record(flags)
            reason = self._trip_reason_locked()
            snap = self._snap
        if reason is None or snap.state is not CLOSED:
            return None
        return self._trip_steps(snap, f"{reason} (last: {what})")

    def _trip_reason_locked(self) -> str | None:
        cfg = self.config
        if cfg.failure_threshold is not None and self._consecutive >= cfg.failure_threshold:
            return f"{self._consecutive} consecutive failures"
        if not cfg.rate_rules:
            return None
        calls, fails, slow = self._window.stats()
        if calls < self._minimum_calls:
            return None
        if cfg.failure_rate_threshold is not None and fails / calls >= cfg.failure_rate_threshold:
            return f"failure rate {fails}/{calls}"
        if self._slow_s is not None and slow / calls >= cfg.slow_call_rate_threshold:
            return f"slow-call rate {slow}/{calls}"
        return None

    def _trip_steps(self, snap: Snapshot, reason: str) -> _Steps[None]:
        winner = yield ("transition", (self.name, snap.version, _state.trip(snap, self._now_ms(), self.config, reason)))
        self._adopt(winner)

    def _trial_failed_steps(self, permit: _Trial, what: str) -> _Steps[None]:
        yield ("finish_trial", (self.name, permit.version, permit.token, False))
        snap = self._snap
        if snap.state is HALF_OPEN and snap.version == permit.version:
            new = _state.trip(snap, self._now_ms(), self.config, f"trial failed ({what})")
            winner = yield ("transition", (self.name, snap.version, new))
            self._adopt(winner)

    def _finish_trial_steps(self, permit: _Trial, success: bool | None) -> _Steps[None]:
        successes = yield ("finish_trial", (self.name, permit.version, permit.token, success))
        snap = self._snap
        if (
            success
            and successes >= self.config.success_threshold
            and snap.state is HALF_OPEN
            and snap.version == permit.version
        ):
            winner = yield ("transition", (self.name, snap.version, _state.close(snap, self._now_ms())))
            self._adopt(winner)

    def _manual_steps(self, target: CircuitState) -> _Steps[None]:
        for _ in range(8):
            snap = self._snap
            new = _state.manual(snap, target, self._now_ms())
            winner = yield ("transition", (self.name, snap.version, new))
            self._adopt(winner)
            if winner.version == new.version and winner.state is target:
                if target is CLOSED:
                    with self._lock:
                        self._window.clear()
                        self._consecutive = 0
                return
        raise RuntimeError(f"breaker {self.name!r}: could not apply {target.value} (state kept changing)")

    # ------------------------------------------------------------------ adopting state

    def _on_remote(self, snap: Snapshot) -> None:
        """Store callback: a snapshot changed elsewhere (another process)."""
        self._adopt(snap, origin="remote")

    def _adopt(self, snap: Snapshot, origin: str = "local") -> None:
        """Make ``snap`` the local view if it is newer; emit one state-change event if the state moved."""
        with self._lock:
            old = self._snap
            if snap.version <= old.version:
                return
            self._snap = snap
            # Local checks use a monotonic deadline: cheaper to read, and immune to wall-clock steps.
            self._open_until = self._mono() + max(snap.opened_until_ms - self._now_ms(), 0.0) / 1000.0
            self._state = snap.state
            self._state_name = snap.state.value
            if snap.state is not old.state:
                self._transitions += 1
                if snap.state is CLOSED or snap.state is HALF_OPEN:
                    # A new period starts with clean counts; outcomes of the old one must not trip it.
                    self._window.clear()
                    self._consecutive = 0
            self._refresh_hot()
        if snap.state is not old.state:
            self._log_change(old, snap, origin)
            if self._listeners["state_change"]:
                self._emit(BreakerEvent("state_change", self.name, snap.state, old.state, snap.reason, origin=origin))

    def _refresh_hot(self) -> None:
        # Called with the lock held or from __init__: the hot paths are only for CLOSED without
        # per-call extras (slow-call timing, success listeners, deadlines).
        plain = self._state is CLOSED and self._slow_s is None and not self._listeners["success"]
        plain = plain and (self._count_window or not self.config.rate_rules)
        self._hot_sync = plain
        self._hot_async = plain and self._timeout_s is None

    def _log_change(self, old: Snapshot, new: Snapshot, origin: str) -> None:
        extra = {"breaker": self.name, "state": new.state.value, "previous": old.state.value, "origin": origin}
        if new.state is OPEN:
            retry = max(new.opened_until_ms - self._now_ms(), 0.0) / 1000.0
            logger.warning(
                "resilience.circuit_opened breaker=%s reason=%s retry_after_s=%.1f origin=%s",
                self.name,
                new.reason,
                retry,
                origin,
                extra=extra,
            )
        else:
            logger.info(
                "resilience.circuit_%s breaker=%s previous=%s reason=%s origin=%s",
                new.state.value,
                self.name,
                old.state.value,
                new.reason,
                origin,
                extra=extra,
            )

    def _emit(self, event: BreakerEvent) -> None:
        for listener in self._listeners[event.kind]:
            try:
                listener(event)
            except Exception:
                logger.exception("resilience.listener_failed breaker=%s kind=%s", self.name, event.kind)
