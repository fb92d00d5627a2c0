"""Breaker configuration: a validated, frozen :class:`BreakerConfig`, and loading it from TOML and env.

File format (TOML)::

    [defaults]                  # applies to every breaker, including names first seen at run time
    failure_threshold = 5
    reset_timeout_s = 30

    [breakers.rag_api]          # per-breaker values on top of [defaults]
    failure_rate_threshold = 0.5
    window_size = 50
    call_timeout_s = 8
    exclude = ["rag.client.BadRequest"]     # exception types by dotted name

Environment overrides win over the file: ``RESILIENCE__DEFAULTS__RESET_TIMEOUT_S=10`` or
``RESILIENCE__RAG_API__FAILURE_THRESHOLD=3`` (breaker and key names are case-insensitive).
``none``/``off`` switches an optional rule off. Every invalid value raises :class:`ConfigError`
whose message names the key and quotes the value.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_RESET_TIMEOUT_S",
    "BreakerConfig",
    "RegistryConfig",
    "load_config",
]

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_FAILURE_RATE_THRESHOLD = 0.5
DEFAULT_WINDOW_SIZE = 100
DEFAULT_MINIMUM_CALLS = 20
DEFAULT_RESET_TIMEOUT_S = 30.0
DEFAULT_MAX_RESET_TIMEOUT_S = 300.0
DEFAULT_TRIAL_LEASE_S = 60.0
ENV_PREFIX = "RESILIENCE__"

ExceptionTypes = tuple[type[BaseException], ...]


def _seconds(value: float | timedelta | None) -> float | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerConfig:
    """When a breaker opens, how long it stays open, and how it probes recovery.

    Args:
        failure_threshold: consecutive counted failures that open the breaker (None: rule off).
        failure_rate_threshold: failure fraction (0-1] over the window that opens it (None: off).
        slow_call_duration_s: a call at least this long is slow (None: slow-call rule off).
        slow_call_rate_threshold: slow fraction (0-1] over the window that opens it.
        window_type: ``"count"`` (last ``window_size`` calls) or ``"time"`` (last ``window_size`` s).
        window_size: calls or seconds, by ``window_type``.
        minimum_calls: calls the window must hold before a rate can open the breaker.
        reset_timeout_s: how long the first opening lasts before trials are allowed.
        reset_backoff: factor (>= 1) applied to the open duration for each further trip in a row.
        max_reset_timeout_s: cap of the growing open duration (left at its default, it follows a
            larger ``reset_timeout_s``).
        half_open_max_calls: concurrent trial calls allowed in half-open (fleet-wide with Redis).
        success_threshold: successful trials needed to close.
        trial_lease_s: a trial permit not returned within this time is freed (its process died).
        call_timeout_s: per-call deadline for async calls (per item for streams); counts as failure.
        include: exception types that count as failures (default: every ``Exception``).
        exclude: exception types that never count (business errors); checked before ``include``.
        is_failure: optional predicate, asked last about exceptions that passed include/exclude.
    """

    failure_threshold: int | None = DEFAULT_FAILURE_THRESHOLD
    failure_rate_threshold: float | None = DEFAULT_FAILURE_RATE_THRESHOLD
    slow_call_duration_s: float | None = None
    slow_call_rate_threshold: float = 1.0
    window_type: Literal["count", "time"] = "count"
    window_size: int = DEFAULT_WINDOW_SIZE
    minimum_calls: int = DEFAULT_MINIMUM_CALLS
    reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S
    reset_backoff: float = 1.0
    max_reset_timeout_s: float = DEFAULT_MAX_RESET_TIMEOUT_S
    half_open_max_calls: int = 1
    success_threshold: int = 1
    trial_lease_s: float = DEFAULT_TRIAL_LEASE_S
    call_timeout_s: float | None = None
    include: ExceptionTypes = (Exception,)
    exclude: ExceptionTypes = ()
    is_failure: Callable[[BaseException], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "slow_call_duration_s",
            "reset_timeout_s",
            "max_reset_timeout_s",
            "trial_lease_s",
            "call_timeout_s",
        ):
            raw = getattr(self, name)
            if isinstance(raw, timedelta):
                object.__setattr__(self, name, _seconds(raw))
        _check_int("failure_threshold", self.failure_threshold, optional=True)
        _check_fraction("failure_rate_threshold", self.failure_rate_threshold, optional=True)
        _check_positive("slow_call_duration_s", self.slow_call_duration_s, optional=True)
        _check_fraction("slow_call_rate_threshold", self.slow_call_rate_threshold, optional=False)
        if self.window_type not in ("count", "time"):
            raise ConfigError(f"window_type: expected 'count' or 'time', got {self.window_type!r}")
        _check_int("window_size", self.window_size)
        if self.window_type == "time" and self.window_size > 86_400:
            raise ConfigError(f"window_size: a time window is at most 86400 s, got {self.window_size!r}")
        _check_int("minimum_calls", self.minimum_calls)
        _check_positive("reset_timeout_s", self.reset_timeout_s)
        if (
            not isinstance(self.reset_backoff, int | float)
            or isinstance(self.reset_backoff, bool)
            or not (1.0 <= self.reset_backoff < math.inf)
        ):
            raise ConfigError(f"reset_backoff: expected a number >= 1, got {self.reset_backoff!r}")
        _check_positive("max_reset_timeout_s", self.max_reset_timeout_s)
        if self.max_reset_timeout_s == DEFAULT_MAX_RESET_TIMEOUT_S and self.reset_timeout_s > self.max_reset_timeout_s:
            # Only reset_timeout_s was raised: the cap follows it rather than failing start-up.
            object.__setattr__(self, "max_reset_timeout_s", float(self.reset_timeout_s))
        if self.max_reset_timeout_s < self.reset_timeout_s:
            raise ConfigError(
                f"max_reset_timeout_s: expected >= reset_timeout_s ({self.reset_timeout_s!r}), "
                f"got {self.max_reset_timeout_s!r}"
            )
        _check_int("half_open_max_calls", self.half_open_max_calls)
        _check_int("success_threshold", self.success_threshold)
        _check_positive("trial_lease_s", self.trial_lease_s)
        _check_positive("call_timeout_s", self.call_timeout_s, optional=True)
        for key in ("include", "exclude"):
            types = getattr(self, key)
            if isinstance(types, type):
                types = (types,)
                object.__setattr__(self, key, types)
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise ConfigError(f"{key}: expected a tuple of exception types, got {types!r}")
        if self.is_failure is not None and not callable(self.is_failure):
            raise ConfigError(f"is_failure: expected a callable, got {self.is_failure!r}")

    @property
    def rate_rules(self) -> bool:
        """True when a sliding-window rule (failure or slow-call rate) is on."""
        return self.failure_rate_threshold is not None or self.slow_call_duration_s is not None

    def replace(self, **changes: Any) -> BreakerConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def counts(self, exc: BaseException) -> bool:
        """Whether ``exc`` counts as a failure under include/exclude/is_failure."""
        if self.exclude and isinstance(exc, self.exclude):
            return False
        if not isinstance(exc, self.include):
            return False
        if self.is_failure is not None:
            return bool(self.is_failure(exc))
        return True


def _bad(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def _check_int(key: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _bad(key, "a positive integer" + (" or none" if optional else ""), value)


def _check_positive(key: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not (0 < value < math.inf):
        raise _bad(key, "a positive number of seconds" + (" or none" if optional else ""), value)


def _check_fraction(key: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not (0 < value <= 1):
        raise _bad(key, "a fraction in (0, 1]" + (" or none" if optional else ""), value)


_FIELDS = {f.name: f for f in dataclasses.fields(BreakerConfig)}
_SETTABLE = frozenset(_FIELDS) - {"is_failure"}
_FLOAT_KEYS = frozenset(
    {
        "reset_timeout_s",
        "max_reset_timeout_s",
        "trial_lease_s",
        "slow_call_duration_s",
        "call_timeout_s",
        "failure_rate_threshold",
        "slow_call_rate_threshold",
        "reset_backoff",
    }
)
_OPTIONAL = frozenset({"failure_threshold", "failure_rate_threshold", "slow_call_duration_s", "call_timeout_s"})


def _resolve_type(where: str, dotted: object) -> type[BaseException]:
    if not isinstance(dotted, str) or not dotted.strip():
        raise _bad(where, "an exception type as 'Name' (builtin) or 'module.Name'", dotted)
    module_name, _, attr = dotted.strip().rpartition(".")
    module_name = module_name or "builtins"
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {dotted!r} ({exc})") from exc
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise _bad(where, "an exception type", dotted)
    return obj


def _coerce(where: str, key: str, value: object, *, from_env: bool) -> object:
    """Turn a TOML or env value into the field's Python value (validation happens in the config)."""
    if from_env and isinstance(value, str):
        text = value.strip()
        if key in ("include", "exclude"):
            value = [part.strip() for part in text.split(",") if part.strip()]
        elif text.lower() in ("none", "off", "null", "") and key in _OPTIONAL:
            return None
        elif key == "window_type":
            return text
        else:
            try:
                number = float(text)
            except ValueError:
                raise _bad(where, "a number", value) from None
            value = int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if key in ("include", "exclude"):
        if not isinstance(value, list):
            raise _bad(where, "a list of exception type names", value)
        return tuple(_resolve_type(f"{where}[{i}]", item) for i, item in enumerate(value))
    if isinstance(value, str) and value.lower() in ("none", "off") and key in _OPTIONAL:
        return None
    is_float_key = key in _FLOAT_KEYS
    if is_float_key and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_from_mapping(
    data: Mapping[str, object], *, base: BreakerConfig, where: str, from_env: bool = False
) -> BreakerConfig:
    """Apply a mapping of settings on top of ``base``; unknown keys and bad values raise ConfigError."""
    changes: dict[str, object] = {}
    for key, value in data.items():
        full = _display(where, key, from_env)
        if key not in _SETTABLE:
            raise ConfigError(f"{full}: unknown setting (known: {', '.join(sorted(_SETTABLE))})")
        changes[key] = _coerce(full, key, value, from_env=from_env)
    try:
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    except ConfigError as exc:
        # The config names the bad field first ("key: expected ..."); put where it came from in front.
        key, _, rest = str(exc).partition(": ")
        raise ConfigError(f"{_display(where, key, from_env)}: {rest}") from None


def _display(where: str, key: str, from_env: bool) -> str:
    """How to name a setting in an error: the env variable, or the TOML path."""
    if from_env:
        return f"{where}__{key.upper()}"
    return f"{where}.{key}" if where else key


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Defaults for every breaker plus per-name configurations."""

    defaults: BreakerConfig = field(default_factory=BreakerConfig)
    breakers: Mapping[str, BreakerConfig] = field(default_factory=dict)

    def for_name(self, name: str) -> BreakerConfig:
        """The configuration of breaker ``name`` (the defaults when it has none of its own)."""
        return self.breakers.get(name, self.breakers.get(name.lower(), self.defaults))


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    base: BreakerConfig | None = None,
) -> RegistryConfig:
    """Read ``[defaults]`` and ``[breakers.NAME]`` from a TOML file, then apply env overrides.

    Args:
        path: TOML file, or None for no file. A missing or malformed file raises ConfigError.
        environ: variables to read ``RESILIENCE__*`` overrides from (None: no overrides).
        base: built-in defaults the file's ``[defaults]`` apply to.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{source}: breaker config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(raw) - {"defaults", "breakers"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level table(s) {sorted(unknown)} (expected [defaults], [breakers.NAME])"
        )
    env_tables: dict[str, dict[str, str]] = {}
    for var, value in (environ or {}).items():
        if not var.upper().startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{var}: expected RESILIENCE__<BREAKER|DEFAULTS>__<SETTING>, got {value!r}")
        env_tables.setdefault(parts[0].lower(), {})[parts[1].lower()] = value
    file_defaults = raw.get("defaults", {})
    if not isinstance(file_defaults, dict):
        raise _bad(f"{source}: defaults", "a table", file_defaults)
    defaults = config_from_mapping(file_defaults, base=base or BreakerConfig(), where="defaults")
    if "defaults" in env_tables:
        defaults = config_from_mapping(
            env_tables.pop("defaults"), base=defaults, where="RESILIENCE__DEFAULTS", from_env=True
        )
    tables = raw.get("breakers", {})
    if not isinstance(tables, dict):
        raise _bad(f"{source}: breakers", "a table of tables", tables)
    # Breaker names are case-insensitive: [breakers.RAG_API], RESILIENCE__RAG_API__* and the proxy
    # name "rag_api" all mean one breaker.
    lowered: dict[str, Any] = {}
    for name, table in tables.items():
        if name.lower() in lowered:
            raise ConfigError(f"{source}: breakers.{name} is defined twice (names are case-insensitive)")
        lowered[name.lower()] = table
    tables = lowered
    breakers: dict[str, BreakerConfig] = {}
    for name in set(tables) | set(env_tables):
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise _bad(f"breakers.{name}", "a table", table)
        cfg = config_from_mapping(table, base=defaults, where=f"breakers.{name}")
        if name in env_tables:
            cfg = config_from_mapping(env_tables[name], base=cfg, where=f"RESILIENCE__{name.upper()}", from_env=True)
        breakers[name] = cfg
    return RegistryConfig(defaults=defaults, breakers=breakers)
