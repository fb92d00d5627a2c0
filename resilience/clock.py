"""Clocks: wall time for deadlines shared between processes, monotonic time for durations.

Deadlines that are stored (an open period's end) use epoch milliseconds from ``now_ms()`` because
monotonic time means nothing in another process. Durations measured inside one process (slow calls,
time-window buckets) use ``monotonic()``. Tests inject :class:`resilience.testing.FakeClock`.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Time source used by breakers and stores."""

    def now_ms(self) -> float:
        """Wall-clock time in epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, only meaningful within one process."""
        ...


class SystemClock:
    """The real clocks: ``time.time()`` and ``time.monotonic()``."""

    __slots__ = ()

    def now_ms(self) -> float:
        """Wall-clock time in epoch milliseconds."""
        return time.time() * 1000.0

    monotonic = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "SystemClock()"
