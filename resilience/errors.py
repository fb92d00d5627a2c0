"""Exceptions raised by the resilience package.

Hierarchy::

    ResilienceError                 base of everything raised by this package itself
    ├── CircuitOpenError            a call was rejected without running (open / forced-open / no trial slot)
    ├── CallTimeoutError            an async call passed its per-call deadline (also a TimeoutError)
    └── ConfigError                 invalid breaker configuration (also a ValueError)

Exceptions raised by a protected function are never wrapped: the caller gets its own exception back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["CallTimeoutError", "CircuitOpenError", "ConfigError", "ResilienceError"]


class ResilienceError(Exception):
    """Base class of the errors this package raises itself."""


class CircuitOpenError(ResilienceError):
    """A call was rejected because the breaker does not allow it now.

    Args:
        name: the breaker's name.
        retry_after_s: seconds until the breaker may let a trial call through (0: now, in half-open;
            ``inf`` while forced open, which has no end).
        state: the state that rejected the call (``"open"``, ``"forced_open"`` or ``"half_open"``).
    """

    # No Python __init__: rejection is the hot path of an open breaker, and BaseException's C
    # constructor storing ``args`` is several times cheaper. The attributes read ``args``.
    if TYPE_CHECKING:

        def __init__(self, name: str, retry_after_s: float, state: str = "open") -> None: ...

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def retry_after_s(self) -> float:
        """Seconds until a trial call may be let through (``inf`` while forced open)."""
        return self.args[1]  # type: ignore[no-any-return]

    @property
    def state(self) -> str:
        """The state that rejected the call."""
        state: str = self.args[2] if len(self.args) > 2 else "open"
        return state

    def __str__(self) -> str:
        return f"circuit {self.name!r} is {self.state}; retry after {self.retry_after_s:.3f}s"


class CallTimeoutError(ResilienceError, TimeoutError):
    """An async call (or one step of a stream) ran past the breaker's ``call_timeout_s``."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(name, timeout_s)
        self.name = name
        self.timeout_s = timeout_s

    def __str__(self) -> str:
        return f"call through circuit {self.name!r} exceeded its {self.timeout_s:g}s deadline"


class ConfigError(ResilienceError, ValueError):
    """A configuration value is invalid; the message names the key and quotes the value."""
