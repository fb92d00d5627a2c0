"""Breaker state as plain data, and the pure transitions between states.

A :class:`Snapshot` is what a store persists and what every process shares. Transitions are pure
functions of (snapshot, time, config): no I/O, no clock reads. Every legal move is listed once in
``_LEGAL``; anything else raises, so a bug cannot invent a state change.

Invariants:
- ``version`` grows with every applied transition (by one; a Redis reconcile may jump it); stores
  compare-and-set on it.
- ``opened_until_ms`` is an epoch-millisecond deadline (shared between processes), meaningful in OPEN.
- ``trips`` counts openings since the breaker last closed; it drives the growing open duration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import BreakerConfig

__all__ = ["CircuitState", "Snapshot"]


class CircuitState(enum.Enum):
    """The five states of a breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED

# Automatic moves come from call outcomes and time; manual moves (reset, force_open, disable) are
# legal from every state.
_AUTOMATIC: frozenset[tuple[CircuitState, CircuitState]] = frozenset(
    {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}
)
_MANUAL_TARGETS = frozenset({CLOSED, FORCED_OPEN, DISABLED})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The shared state of one breaker."""

    state: CircuitState = CLOSED
    version: int = 0
    opened_until_ms: float = 0.0
    trips: int = 0
    changed_at_ms: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (JSON-safe) for storage and status pages."""
        return {
            "state": self.state.value,
            "version": self.version,
            "opened_until_ms": self.opened_until_ms,
            "trips": self.trips,
            "changed_at_ms": self.changed_at_ms,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Snapshot:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on malformed data."""
        try:
            return cls(
                state=CircuitState(data["state"]),
                version=int(data["version"]),  # type: ignore[call-overload]
                opened_until_ms=float(data["opened_until_ms"]),  # type: ignore[arg-type]
                trips=int(data["trips"]),  # type: ignore[call-overload]
                changed_at_ms=float(data.get("changed_at_ms", 0.0)),  # type: ignore[arg-type]
                reason=str(data.get("reason", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed breaker snapshot {data!r}: {exc}") from exc


class IllegalTransition(RuntimeError):
    """A transition that the state machine does not allow (a bug, never a user error)."""


def _move(snap: Snapshot, target: CircuitState, now_ms: float, **changes: object) -> Snapshot:
    manual = changes.pop("manual", False)
    if not (manual and target in _MANUAL_TARGETS) and (snap.state, target) not in _AUTOMATIC:
        raise IllegalTransition(f"{snap.state.value} -> {target.value} is not a legal transition")
    return replace(snap, state=target, version=snap.version + 1, changed_at_ms=now_ms, **changes)  # type: ignore[arg-type]


def open_duration_s(trips: int, cfg: BreakerConfig) -> float:
    """How long the ``trips``-th consecutive opening lasts: grows by ``reset_backoff``, capped."""
    try:
        duration = cfg.reset_timeout_s * cfg.reset_backoff ** max(trips - 1, 0)
    except OverflowError:  # float ** int raises past ~1e308 (about 1024 trips in a row at a backoff of 2)
        return cfg.max_reset_timeout_s
    return min(duration, cfg.max_reset_timeout_s)


def trip(snap: Snapshot, now_ms: float, cfg: BreakerConfig, reason: str) -> Snapshot:
    """CLOSED or HALF_OPEN -> OPEN, for a duration that grows with consecutive trips."""
    trips = snap.trips + 1
    until = now_ms + open_duration_s(trips, cfg) * 1000.0
    return _move(snap, OPEN, now_ms, opened_until_ms=until, trips=trips, reason=reason)


def half_open(snap: Snapshot, now_ms: float) -> Snapshot:
    """OPEN -> HALF_OPEN once the open period is over."""
    return _move(snap, HALF_OPEN, now_ms, reason="open period elapsed")


def close(snap: Snapshot, now_ms: float, reason: str = "trial calls succeeded") -> Snapshot:
    """HALF_OPEN -> CLOSED: trials succeeded."""
    return _move(snap, CLOSED, now_ms, opened_until_ms=0.0, trips=0, reason=reason)


def manual(snap: Snapshot, target: CircuitState, now_ms: float) -> Snapshot:
    """A manual override: reset (CLOSED), FORCED_OPEN or DISABLED, from any state."""
    return _move(snap, target, now_ms, manual=True, opened_until_ms=0.0, trips=0, reason=f"manual {target.value}")
