"""Side-by-side cost per call of circuit breakers: ours (through the proxy) against peer libraries.

Run through ``make bench`` (or ``bench/run.py``); standalone::

    PYTHONPATH=. .venv-bench/bin/python bench/bench_breakers.py [--rounds 15] [--target-ms 60] [--check]

Measures, in one process, the median ns per call over several rounds of:

- closed state, sync and async: a decorated no-op function that succeeds;
- open state (rejection), sync and async: a decorated function whose breaker was tripped open (with a
  one-hour reset timeout), including raising and catching the library's rejection exception.

Every cell is timed with a large inner loop (``time.perf_counter_ns`` around it, gc disabled); the
rounds visit all cells round-robin (the starting cell rotates) so that machine noise hits every library
alike. Absolute numbers include the benchmark loop itself (the same for every row); ``overhead`` is a
row's closed-state cost minus the undecorated function's.

Prints a table, ratios to ours, verdict lines for the targets of issue 2, and one ``RESULT_JSON {...}``
line for tooling.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import platform
import statistics
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from time import perf_counter_ns
from typing import Any

OURS = "resilience (proxy)"
OURS_DIRECT = "resilience (direct)"
UNDECORATED = "undecorated"
PEERS = ("circuitbreaker", "purgatory", "aiobreaker", "pybreaker")
ROWS = (UNDECORATED, OURS, OURS_DIRECT, *PEERS)
COLUMNS = ("sync_closed", "async_closed", "sync_open", "async_open")
COLUMN_TITLES = {
    "sync_closed": "sync closed",
    "async_closed": "async closed",
    "sync_open": "sync open",
    "async_open": "async open",
}
FAILURE_THRESHOLD = 5
RESET_S = 3600.0  # long enough that no breaker half-opens during the run

Runner = Callable[[int], int]  # run the cell's loop n times, return elapsed ns


# --------------------------------------------------------------------------- protected functions


def work() -> int:
    return 1


async def awork() -> int:
    return 1


class Boom(Exception):
    """The failure used to trip breakers."""


class Failing:
    """Protected functions that always fail and count their calls (a rejected call must not run).

    Plain functions, not bound methods: aiobreaker only decorates ``inspect.isfunction`` objects.
    """

    def __init__(self) -> None:
        self.calls = 0

        def sync() -> int:
            self.calls += 1
            raise Boom

        async def async_() -> int:
            self.calls += 1
            raise Boom

        self.sync = sync
        self.async_ = async_


# --------------------------------------------------------------------------- timing loops
# One loop shape per call style, so that no row pays an extra adapter layer (lambda, partial).


def loop_sync(f: Callable[[], Any]) -> Runner:
    def run(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            f()
        return perf_counter_ns() - t0

    return run


def loop_sync_via(call: Callable[..., Any], fn: Callable[[], Any]) -> Runner:
    def run(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            call(fn)
        return perf_counter_ns() - t0

    return run


def loop_sync_reject(f: Callable[[], Any], exc: type[BaseException]) -> Runner:
    def run(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            try:
                f()
            except exc:
                pass
        return perf_counter_ns() - t0

    return run


def loop_sync_reject_via(call: Callable[..., Any], fn: Callable[[], Any], exc: type[BaseException]) -> Runner:
    def run(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            try:
                call(fn)
            except exc:
                pass
        return perf_counter_ns() - t0

    return run


def loop_async(loop: asyncio.AbstractEventLoop, f: Callable[[], Coroutine[Any, Any, Any]]) -> Runner:
    async def body(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            await f()
        return perf_counter_ns() - t0

    return lambda n: loop.run_until_complete(body(n))


def loop_async_via(
    loop: asyncio.AbstractEventLoop, call: Callable[..., Coroutine[Any, Any, Any]], fn: Callable[[], Any]
) -> Runner:
    async def body(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            await call(fn)
        return perf_counter_ns() - t0

    return lambda n: loop.run_until_complete(body(n))


def loop_async_reject(
    loop: asyncio.AbstractEventLoop, f: Callable[[], Coroutine[Any, Any, Any]], exc: type[BaseException]
) -> Runner:
    async def body(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            try:
                await f()
            except exc:
                pass
        return perf_counter_ns() - t0

    return lambda n: loop.run_until_complete(body(n))


def loop_async_reject_via(
    loop: asyncio.AbstractEventLoop,
    call: Callable[..., Coroutine[Any, Any, Any]],
    fn: Callable[[], Any],
    exc: type[BaseException],
) -> Runner:
    async def body(n: int) -> int:
        r = range(n)
        t0 = perf_counter_ns()
        for _ in r:
            try:
                await call(fn)
            except exc:
                pass
        return perf_counter_ns() - t0

    return lambda n: loop.run_until_complete(body(n))


# --------------------------------------------------------------------------- cells


@dataclass
class Cell:
    row: str
    column: str
    run: Runner
    check: Callable[[], str | None]  # None when the breaker is still where it must be, else a complaint
    between: Callable[[], None] | None = None  # housekeeping between measurements (not timed)
    n: int = 0
    samples: list[float] = field(default_factory=list)


@dataclass
class Setup:
    cells: list[Cell]
    versions: dict[str, str]
    notes: list[str]
    na: dict[tuple[str, str], str]  # (row, column) -> why not measured


def _trip_sync(f: Callable[[], Any]) -> None:
    for _ in range(FAILURE_THRESHOLD):
        try:
            f()
        except Exception:
            pass


async def _trip_async(f: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    for _ in range(FAILURE_THRESHOLD):
        try:
            await f()
        except Exception:
            pass


def _expect_reject_sync(label: str, f: Callable[[], Any], exc: type[BaseException], failing: Failing) -> None:
    before = failing.calls
    try:
        f()
    except exc:
        pass
    else:
        raise RuntimeError(f"{label}: tripped breaker did not reject")
    if failing.calls != before:
        raise RuntimeError(f"{label}: rejected call still ran the function")


def _expect_reject_async(
    loop: asyncio.AbstractEventLoop,
    label: str,
    f: Callable[[], Coroutine[Any, Any, Any]],
    exc: type[BaseException],
    failing: Failing,
) -> None:
    async def once() -> None:
        await f()

    _expect_reject_sync(label, lambda: loop.run_until_complete(once()), exc, failing)


def _still_open(failing: Failing, calls_at_trip: int) -> Callable[[], str | None]:
    def check() -> str | None:
        if failing.calls != calls_at_trip:
            return f"protected function ran {failing.calls - calls_at_trip} times while the breaker was open"
        return None

    return check


def _state_is(get_state: Callable[[], object], expected: str) -> Callable[[], str | None]:
    def check() -> str | None:
        state = str(get_state()).lower()
        return None if expected in state else f"state is {state!r}, expected {expected!r}"

    return check


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def build(loop: asyncio.AbstractEventLoop) -> Setup:
    cells: list[Cell] = []
    notes: list[str] = []
    na: dict[tuple[str, str], str] = {}
    versions = {"python": platform.python_version()}

    def add(row: str, column: str, run: Runner, check: Callable[[], str | None], **kw: Any) -> None:
        cells.append(Cell(row, column, run, check, **kw))

    def always_ok() -> str | None:
        return None

    def add_decorator_peer(
        label: str, make: Callable[[str], Any], state_of: Callable[[Any], object], err: type[BaseException]
    ) -> None:
        """A peer whose breaker object decorates sync and async functions: trip, check, add four cells."""
        closed = make("bench_closed")
        failing = Failing()
        fail_sync, fail_async = make("bench_open_sync")(failing.sync), make("bench_open_async")(failing.async_)
        _trip_sync(fail_sync)
        loop.run_until_complete(_trip_async(fail_async))
        _expect_reject_sync(label, fail_sync, err, failing)
        _expect_reject_async(loop, label, fail_async, err, failing)
        ok = _state_is(lambda: state_of(closed), "closed")
        still = _still_open(failing, failing.calls)
        add(label, "sync_closed", loop_sync(closed(work)), ok)
        add(label, "async_closed", loop_async(loop, closed(awork)), ok)
        add(label, "sync_open", loop_sync_reject(fail_sync, err), still)
        add(label, "async_open", loop_async_reject(loop, fail_async, err), still)

    # -- undecorated
    add(UNDECORATED, "sync_closed", loop_sync(work), always_ok)
    add(UNDECORATED, "async_closed", loop_async(loop, awork), always_ok)
    # Open columns of the undecorated row: the function itself raising, caught by the loop. No breaker can
    # reject for less than this (it must raise too); it is the floor the open columns are read against.
    bare = Failing()
    add(UNDECORATED, "sync_open", loop_sync_reject(bare.sync, Boom), always_ok)
    add(UNDECORATED, "async_open", loop_async_reject(loop, bare.async_, Boom), always_ok)

    # -- ours
    from resilience import (
        BreakerConfig,
        CircuitBreakerProxy,
        CircuitOpenError,
        RegistryConfig,
        get_registry,
        init_registry_sync,
    )

    versions["resilience"] = _version("resilience") or "working tree"
    logging.getLogger("resilience").setLevel(logging.ERROR)  # the trip's warning line is not part of the run
    cfg = BreakerConfig(
        failure_threshold=FAILURE_THRESHOLD,
        failure_rate_threshold=0.5,
        window_size=100,
        minimum_calls=20,
        window_type="count",
        reset_timeout_s=RESET_S,
        max_reset_timeout_s=RESET_S,
    )
    init_registry_sync(RegistryConfig(defaults=cfg, breakers={"bench": cfg, "bench_open": cfg}))
    registry = get_registry()
    assert registry is not None
    proxy = CircuitBreakerProxy("bench")
    proxy_open = CircuitBreakerProxy("bench_open")
    ours_sync = proxy(work)
    ours_async = proxy(awork)
    failing = Failing()
    ours_fail_sync = proxy_open(failing.sync)
    ours_fail_async = proxy_open(failing.async_)
    ours_sync()  # bind the proxies before reading the breakers
    loop.run_until_complete(ours_async())
    closed_breaker = registry.get("bench")
    open_breaker = registry.get("bench_open")
    closed_ok = _state_is(lambda: closed_breaker.state.value, "closed")
    _trip_sync(ours_fail_sync)
    _expect_reject_sync(OURS, ours_fail_sync, CircuitOpenError, failing)
    _expect_reject_async(loop, OURS, ours_fail_async, CircuitOpenError, failing)
    open_ok = _still_open(failing, failing.calls)
    add(OURS, "sync_closed", loop_sync(ours_sync), closed_ok)
    add(OURS, "async_closed", loop_async(loop, ours_async), closed_ok)
    add(OURS, "sync_open", loop_sync_reject(ours_fail_sync, CircuitOpenError), open_ok)
    add(OURS, "async_open", loop_async_reject(loop, ours_fail_async, CircuitOpenError), open_ok)
    add(OURS_DIRECT, "sync_closed", loop_sync_via(closed_breaker.call_sync, work), closed_ok)
    add(OURS_DIRECT, "async_closed", loop_async_via(loop, closed_breaker.call, awork), closed_ok)
    add(OURS_DIRECT, "sync_open", loop_sync_reject_via(open_breaker.call_sync, failing.sync, CircuitOpenError), open_ok)
    add(
        OURS_DIRECT,
        "async_open",
        loop_async_reject_via(loop, open_breaker.call, failing.async_, CircuitOpenError),
        open_ok,
    )

    # -- circuitbreaker: the wrapper checks ``opened`` (a property chain), then ``with self:`` around the call
    version = _version("circuitbreaker")
    if version is None:
        notes.append("circuitbreaker: not installed")
    else:
        versions["circuitbreaker"] = version
        import circuitbreaker as cb_mod

        def make_cb(name: str) -> Any:
            return cb_mod.CircuitBreaker(failure_threshold=FAILURE_THRESHOLD, recovery_timeout=RESET_S, name=name)

        add_decorator_peer("circuitbreaker", make_cb, lambda b: b.state, cb_mod.CircuitBreakerError)

    # -- purgatory: in-memory unit of work; every call looks the breaker up and builds a context object
    version = _version("purgatory")
    if version is None:
        notes.append("purgatory: not installed")
    else:
        versions["purgatory"] = version
        from purgatory import AsyncCircuitBreakerFactory, SyncCircuitBreakerFactory
        from purgatory.domain.model import OpenedState

        sync_factory = SyncCircuitBreakerFactory(default_threshold=FAILURE_THRESHOLD, default_ttl=RESET_S)
        async_factory = AsyncCircuitBreakerFactory(default_threshold=FAILURE_THRESHOLD, default_ttl=RESET_S)
        sync_factory.initialize()
        loop.run_until_complete(async_factory.initialize())
        pg_sync = sync_factory("bench")(work)
        pg_async = async_factory("bench")(awork)
        failing_pg = Failing()
        pg_fail_sync = sync_factory("bench_open")(failing_pg.sync)
        pg_fail_async = async_factory("bench_open")(failing_pg.async_)
        pg_sync()
        loop.run_until_complete(pg_async())
        _trip_sync(pg_fail_sync)
        loop.run_until_complete(_trip_async(pg_fail_async))
        _expect_reject_sync("purgatory", pg_fail_sync, OpenedState, failing_pg)
        _expect_reject_async(loop, "purgatory", pg_fail_async, OpenedState, failing_pg)
        sync_contexts = sync_factory.uow.contexts.breakers  # type: ignore[attr-defined]
        async_contexts = async_factory.uow.contexts.breakers  # type: ignore[attr-defined]

        def pg_closed() -> str | None:
            states = {sync_contexts["bench"].state, async_contexts["bench"].state}
            return None if states == {"closed"} else f"states {states}"

        # purgatory raises the same OpenedState instance on every rejection, so its __traceback__ grows by a
        # few frames per rejected call (a leak a real app pays too). We keep that cost inside the timing and
        # only cut the chain between measurements so memory stays bounded.
        def pg_cut_sync() -> None:
            sync_contexts["bench_open"]._state.__traceback__ = None

        def pg_cut_async() -> None:
            async_contexts["bench_open"]._state.__traceback__ = None

        notes.append(
            "purgatory: raises one OpenedState instance for every rejection; its __traceback__ grows by ~6 frames "
            "per rejected call (memory leak while open). The growth is timed; the chain is cut between measurements."
        )
        still = _still_open(failing_pg, failing_pg.calls)
        add("purgatory", "sync_closed", loop_sync(pg_sync), pg_closed)
        add("purgatory", "async_closed", loop_async(loop, pg_async), pg_closed)
        add("purgatory", "sync_open", loop_sync_reject(pg_fail_sync, OpenedState), still, between=pg_cut_sync)
        add(
            "purgatory",
            "async_open",
            loop_async_reject(loop, pg_fail_async, OpenedState),
            still,
            between=pg_cut_async,
        )

    # -- aiobreaker: one class; sync functions go through call(), coroutine functions through call_async()
    version = _version("aiobreaker")
    if version is None:
        notes.append("aiobreaker: not installed")
    else:
        versions["aiobreaker"] = version
        import aiobreaker

        def make_ai(name: str) -> Any:
            return aiobreaker.CircuitBreaker(
                fail_max=FAILURE_THRESHOLD, timeout_duration=timedelta(seconds=RESET_S), name=name
            )

        add_decorator_peer("aiobreaker", make_ai, lambda b: b.current_state, aiobreaker.CircuitBreakerError)

    # -- pybreaker: sync only (its async path needs Tornado); an RLock around every call
    version = _version("pybreaker")
    if version is None:
        notes.append("pybreaker: not installed")
    else:
        versions["pybreaker"] = version
        import pybreaker

        def make_py(name: str) -> Any:
            return pybreaker.CircuitBreaker(fail_max=FAILURE_THRESHOLD, reset_timeout=RESET_S, name=name)

        py_closed = make_py("bench_closed")
        py_sync = py_closed(work)
        failing_py = Failing()
        py_fail_sync = make_py("bench_open")(failing_py.sync)
        _trip_sync(py_fail_sync)
        err = pybreaker.CircuitBreakerError
        _expect_reject_sync("pybreaker", py_fail_sync, err, failing_py)
        ok = _state_is(lambda: py_closed.current_state, "closed")
        add("pybreaker", "sync_closed", loop_sync(py_sync), ok)
        add("pybreaker", "sync_open", loop_sync_reject(py_fail_sync, err), _still_open(failing_py, failing_py.calls))
        why = "async needs Tornado (call_async is a tornado coroutine); its sync wrapper would not await"
        na[("pybreaker", "async_closed")] = na[("pybreaker", "async_open")] = why

    for peer in PEERS:
        if peer not in versions:
            for column in COLUMNS:
                na.setdefault((peer, column), "not installed")
    return Setup(cells, versions, notes, na)


# --------------------------------------------------------------------------- measuring


def calibrate(cell: Cell, target_ns: int) -> None:
    """Find n so that one measurement lasts about ``target_ns`` (this also warms the cell up)."""
    n = 256
    while True:
        elapsed = max(cell.run(n), 1)
        if elapsed >= 20_000_000 or n >= 1 << 26:
            break
        n *= 4
    cell.n = max(1000, int(n * target_ns / elapsed))
    if cell.between is not None:
        cell.between()


def measure(cells: list[Cell], rounds: int, target_ms: float, progress: bool) -> None:
    target_ns = int(target_ms * 1e6)
    gc.collect()
    gc.disable()
    try:
        for cell in cells:
            calibrate(cell, target_ns)
        gc.collect()
        for r in range(rounds):
            start = r % len(cells)  # rotate the order so no library always runs right after another
            for cell in cells[start:] + cells[:start]:
                elapsed = cell.run(cell.n)
                cell.samples.append(elapsed / cell.n)
                if cell.between is not None:
                    cell.between()
            gc.collect()
            if progress:
                print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        gc.enable()


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None, width: int = 9) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.0f}"


def _fmt_ratio(value: float | None, width: int = 9) -> str:
    return f"{'n/a' if value is None else f'{value:.2f}x':>{width}}"


def report(setup: Setup, rounds: int, target_ms: float) -> tuple[dict[str, Any], bool]:
    by: dict[tuple[str, str], Cell] = {(c.row, c.column): c for c in setup.cells}

    def med(row: str, column: str) -> float | None:
        cell = by.get((row, column))
        return statistics.median(cell.samples) if cell and cell.samples else None

    def overhead(row: str, column: str) -> float | None:
        value, base = med(row, column), med(UNDECORATED, column)
        return None if value is None or base is None else value - base

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b <= 0 else a / b

    def spread(row: str, column: str) -> float | None:
        cell = by.get((row, column))
        if not cell or len(cell.samples) < 4:
            return None
        q = statistics.quantiles(cell.samples, n=4)
        return (q[2] - q[0]) / statistics.median(cell.samples) * 100

    versions = setup.versions
    print()
    print(f"Python {versions['python']} on {platform.machine()}, {rounds} rounds x ~{target_ms:g} ms per cell")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "python"))
    print("median ns per call (lower is better); overhead = closed-state cost minus the undecorated call;")
    print("undecorated open = the bare function raising and the loop catching it (the floor of any rejection)")
    print()
    head = (
        f"{'library':<22}{'sync closed':>12}{'overhead':>10}{'async closed':>14}{'overhead':>10}"
        f"{'sync open':>11}{'async open':>12}"
    )
    print(head)
    print("-" * len(head))
    for row in ROWS:
        if row in PEERS and row not in versions:
            print(f"{row:<22}  (not installed)")
            continue
        base = row == UNDECORATED
        so = " " * 10 if base else _fmt(overhead(row, "sync_closed"), 10)
        ao = " " * 10 if base else _fmt(overhead(row, "async_closed"), 10)
        print(
            f"{row:<22}{_fmt(med(row, 'sync_closed'), 12)}{so}{_fmt(med(row, 'async_closed'), 14)}"
            f"{ao}{_fmt(med(row, 'sync_open'), 11)}{_fmt(med(row, 'async_open'), 12)}"
        )
    print()
    print(f"ratio to {OURS} (row / ours; > 1 means ours is cheaper)")
    head = (
        f"{'library':<22}{'sync closed':>12}{'overhead':>10}{'async closed':>14}{'overhead':>10}"
        f"{'sync open':>11}{'async open':>12}"
    )
    print(head)
    print("-" * len(head))
    for row in ROWS:
        if row == OURS or (row in PEERS and row not in versions):
            continue
        base = row == UNDECORATED
        cols = [
            _fmt_ratio(ratio(med(row, "sync_closed"), med(OURS, "sync_closed")), 12),
            " " * 10 if base else _fmt_ratio(ratio(overhead(row, "sync_closed"), overhead(OURS, "sync_closed")), 10),
            _fmt_ratio(ratio(med(row, "async_closed"), med(OURS, "async_closed")), 14),
            " " * 10 if base else _fmt_ratio(ratio(overhead(row, "async_closed"), overhead(OURS, "async_closed")), 10),
            _fmt_ratio(ratio(med(row, "sync_open"), med(OURS, "sync_open")), 11),
            _fmt_ratio(ratio(med(row, "async_open"), med(OURS, "async_open")), 12),
        ]
        print(f"{row:<22}" + "".join(cols))
    print()
    worst = max(((spread(c.row, c.column) or 0.0), c.row, c.column) for c in setup.cells)
    print(f"noise: largest interquartile spread {worst[0]:.1f}% of the median ({worst[1]}, {worst[2]})")
    for (row, column), why in sorted(setup.na.items()):
        if row in PEERS and row in versions:
            print(f"n/a: {row} {COLUMN_TITLES[column]}: {why}")
    for note in setup.notes:
        print(f"note: {note}")

    # ---- verdicts (issue 2, "Done when"), with a per-round count as a noise check
    print()
    all_ok = True
    verdicts: dict[str, Any] = {}

    def per_round_wins(column: str, peers: list[str]) -> int:
        ours = by[(OURS, column)].samples
        others = [by[(p, column)].samples for p in peers]
        return sum(1 for i, v in enumerate(ours) if all(v < o[i] for o in others))

    for column, what in (
        ("sync_closed", "closed overhead, sync "),
        ("async_closed", "closed overhead, async"),
        ("sync_open", "open rejection, sync  "),
        ("async_open", "open rejection, async "),
    ):
        peers = [p for p in PEERS if (p, column) in by]
        if (OURS, column) not in by or not peers:
            print(f"VERDICT {what}: cannot judge (no peers measured)")
            all_ok = False
            continue
        closed = column.endswith("closed")
        value = (lambda r, c=column: overhead(r, c)) if closed else (lambda r, c=column: med(r, c))
        ours = value(OURS)
        best_peer = min(peers, key=lambda p: value(p) or float("inf"))
        best = value(best_peer)
        assert ours is not None and best is not None
        ok = ours < best
        all_ok &= ok
        wins = per_round_wins(column, peers)
        target = "below the fastest peer's" if closed else "cheaper than every peer's"
        print(
            f"VERDICT {what}: {'PASS' if ok else 'FAIL'}  ours {ours:.0f} ns vs {best_peer} {best:.0f} ns "
            f"({target}; ours / best = {ours / best:.2f}; ours ahead in {wins}/{rounds} rounds)"
        )
        verdicts[column] = {
            "pass": ok,
            "ours_ns": round(ours, 1),
            "best_peer": best_peer,
            "best_peer_ns": round(best, 1),
            "rounds_ahead": wins,
            "metric": "overhead" if closed else "per_call",
        }
    print(f"TARGETS {'MET' if all_ok else 'NOT MET'}")

    problems = [f"{c.row} {COLUMN_TITLES[c.column]}: {p}" for c in setup.cells if (p := c.check()) is not None]
    for problem in problems:
        print(f"INVALID: {problem}")

    result: dict[str, Any] = {
        "bench": "breakers",
        "unit": "ns_per_call_median",
        "python": versions["python"],
        "versions": {k: v for k, v in versions.items() if k != "python"},
        "rounds": rounds,
        "target_ms": target_ms,
        "rows": {},
        "na": {f"{r}/{c}": why for (r, c), why in sorted(setup.na.items())},
        "verdict": verdicts,
        "targets_met": all_ok,
        "valid": not problems,
        "notes": setup.notes,
    }
    for row in ROWS:
        entry: dict[str, Any] = {}
        for column in COLUMNS:
            m = med(row, column)
            if m is None:
                continue
            entry[column] = round(m, 1)
            entry[column + "_samples"] = [round(s, 1) for s in by[(row, column)].samples]
            if column.endswith("closed") and row != UNDECORATED:
                o = overhead(row, column)
                entry[column.replace("closed", "overhead")] = None if o is None else round(o, 1)
        if entry:
            result["rows"][row] = entry
    return result, all_ok and not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=13, help="measurement rounds per cell (default 13)")
    parser.add_argument("--target-ms", type=float, default=60.0, help="duration of one measurement (default 60)")
    parser.add_argument("--quick", action="store_true", help="5 rounds x 15 ms: a smoke run, not for numbers")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    parser.add_argument("--progress", action="store_true", help="print a line per round on stderr")
    args = parser.parse_args(argv)
    rounds, target_ms = (5, 15.0) if args.quick else (args.rounds, args.target_ms)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        setup = build(loop)
        measure(setup.cells, rounds, target_ms, args.progress)
        result, ok = report(setup, rounds, target_ms)
    finally:
        loop.close()
    print()
    print("RESULT_JSON " + json.dumps(result, separators=(",", ":")), flush=True)
    if not result["valid"]:
        return 2
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
