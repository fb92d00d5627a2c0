"""Test helpers: a clock that only moves when told to."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A manual clock; ``advance(s)`` moves wall and monotonic time together.

    Args:
        start_ms: initial wall time in epoch milliseconds.
        start_monotonic: initial monotonic reading in seconds.
    """

    def __init__(self, start_ms: float = 1_700_000_000_000.0, start_monotonic: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._wall_ms = float(start_ms)
        self._mono = float(start_monotonic)

    def now_ms(self) -> float:
        """Wall time in epoch milliseconds."""
        return self._wall_ms

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"cannot go back in time: advance({seconds!r})")
        with self._lock:
            self._wall_ms += seconds * 1000.0
            self._mono += seconds

    def skew_wall(self, seconds: float) -> None:
        """Shift only the wall clock (positive or negative), as a badly synchronised host would."""
        with self._lock:
            self._wall_ms += seconds * 1000.0

    def __repr__(self) -> str:
        return f"FakeClock(now_ms={self._wall_ms!r}, monotonic={self._mono!r})"
