"""Where breaker state lives: the :class:`BreakerStore` protocol and the in-process :class:`MemoryStore`.

A breaker keeps a local view of its :class:`Snapshot` and decides on its own whether a call may run,
so the closed-state success path never touches the store. The store is consulted only for what can
change shared state:

- ``transition``: compare-and-set of a new snapshot against the version the breaker saw. The answer
  is the authoritative snapshot: the proposed one when applied, the stored one when another caller
  (thread or process) changed it first. A store that cannot reach its backend decides locally.
- ``acquire_trial`` / ``finish_trial``: half-open trial permits, leased so that a permit whose holder
  died frees itself after ``lease_ms``. ``finish_trial`` reports how many trials of that half-open
  period succeeded, which decides when to close.
- ``attach``: a breaker registers a callback; the store calls it with snapshots changed elsewhere
  (another process, via pub/sub for Redis), and returns the snapshot it already knows.

Every method has an async form and a ``_sync`` twin with the same meaning. Store methods never raise
for backend trouble: they degrade to local state and report it through ``health()``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ._state import Snapshot

__all__ = ["BreakerStore", "MemoryStore", "StoreHealth"]

RemoteListener = Callable[[Snapshot], None]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What a store reports about its backend."""

    kind: str
    healthy: bool
    detail: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class BreakerStore(Protocol):
    """Storage of shared breaker state; see the module docstring for the contract."""

    def attach(self, name: str, listener: RemoteListener) -> Snapshot | None:
        """Register ``listener`` for remote changes of ``name``; return the known snapshot, if any."""
        ...

    def detach(self, name: str, listener: RemoteListener) -> None:
        """Stop sending changes of ``name`` to ``listener``."""
        ...

    async def transition(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """Compare-and-set ``new`` if the stored version is ``expected_version``; return the winner."""
        ...

    def transition_sync(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """Sync twin of :meth:`transition`."""
        ...

    async def acquire_trial(
        self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float
    ) -> int | None:
        """Take one of ``max_calls`` trial permits of half-open period ``version``; None when all are taken."""
        ...

    def acquire_trial_sync(self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float) -> int | None:
        """Sync twin of :meth:`acquire_trial`."""
        ...

    async def finish_trial(self, name: str, version: int, token: int, success: bool | None) -> int:
        """Free a trial permit; ``success`` True/False records its outcome, None records nothing.

        Returns the number of successful trials recorded for ``version`` so far.
        """
        ...

    def finish_trial_sync(self, name: str, version: int, token: int, success: bool | None) -> int:
        """Sync twin of :meth:`finish_trial`."""
        ...

    def health(self) -> StoreHealth:
        """Backend health for status pages."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...

    def close(self) -> None:
        """Sync twin of :meth:`aclose`."""
        ...


@dataclass(slots=True)
class _Trials:
    version: int
    leases: dict[int, float] = field(default_factory=dict)  # token -> lease expiry (epoch ms)
    successes: int = 0


class MemoryStore:
    """Breaker state in this process only; exact under threads and asyncio tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._trials: dict[str, _Trials] = {}
        self._tokens = itertools.count(1)
        self._listeners: dict[str, list[RemoteListener]] = {}

    def attach(self, name: str, listener: RemoteListener) -> Snapshot | None:
        """Register ``listener``; in one process no remote change ever arrives except from peers here."""
        with self._lock:
            self._listeners.setdefault(name, []).append(listener)
            return self._snapshots.get(name)

    def detach(self, name: str, listener: RemoteListener) -> None:
        """Forget ``listener``."""
        with self._lock:
            listeners = self._listeners.get(name, [])
            if listener in listeners:
                listeners.remove(listener)

    def transition_sync(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """Compare-and-set on ``version`` (one process has one breaker per name, so nobody else to tell)."""
        with self._lock:
            current = self._snapshots.get(name)
            if (current.version if current is not None else 0) != expected_version:
                return current if current is not None else new
            self._snapshots[name] = new
        return new

    async def transition(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """Async form of :meth:`transition_sync` (no I/O, so it never yields)."""
        return self.transition_sync(name, expected_version, new)

    def acquire_trial_sync(self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float) -> int | None:
        """Take a permit for half-open period ``version`` if fewer than ``max_calls`` are live."""
        with self._lock:
            trials = self._trials.get(name)
            if trials is None or trials.version != version:
                trials = self._trials[name] = _Trials(version)
            live = {t: exp for t, exp in trials.leases.items() if exp > now_ms}
            trials.leases = live
            if len(live) >= max_calls:
                return None
            token = next(self._tokens)
            live[token] = now_ms + lease_ms
            return token

    async def acquire_trial(
        self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float
    ) -> int | None:
        """Async form of :meth:`acquire_trial_sync`."""
        return self.acquire_trial_sync(name, version, max_calls, lease_ms, now_ms)

    def finish_trial_sync(self, name: str, version: int, token: int, success: bool | None) -> int:
        """Free ``token``; count a success only if the permit was still held for that period."""
        with self._lock:
            trials = self._trials.get(name)
            if trials is None or trials.version != version:
                return 0
            held = trials.leases.pop(token, None) is not None
            if held and success:
                trials.successes += 1
            return trials.successes

    async def finish_trial(self, name: str, version: int, token: int, success: bool | None) -> int:
        """Async form of :meth:`finish_trial_sync`."""
        return self.finish_trial_sync(name, version, token, success)

    def health(self) -> StoreHealth:
        """Always healthy: there is no backend."""
        return StoreHealth(kind="memory", healthy=True, detail="in-process state")

    async def aclose(self) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to release."""
