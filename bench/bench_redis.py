"""Redis-backed breakers side by side: ours (RedisStore) against pybreaker, aiobreaker and purgatory.

Run from the repo root with the app venv (``bench/run.py`` does this)::

    .venv/bin/python bench/bench_redis.py [--bench-python .venv-bench/bin/python] [--trips 60]

Self-contained: starts its own ``redis-server`` on a free loopback port (persistence off), and runs the
peer libraries in a subprocess with the bench venv's python (``--bench-python``; they need redis<6).
Same run, same Redis. Measures:

- closed state, successful calls: median ns per call over rounds (sync and async);
- Redis commands per successful call, from ``INFO commandstats`` deltas (INFO itself excluded),
  over the whole closed-state measurement (so our background refresh and batched flush are counted);
- trip propagation: another process is polling the breaker with calls; this process trips it; the
  time from just before the tripping call until the other process's first rejection (median, p99);
- Redis down (server stopped): per-call cost and exceptions raised to the caller.

Prints a table, ratios and verdict lines against issue 3's "Done when", then one ``RESULT_JSON {...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESET_S = 3600.0
THRESHOLD = 5


# --------------------------------------------------------------------------- shared helpers


def work() -> int:
    return 1


async def awork() -> int:
    return 1


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


def commands(url: str) -> int:
    """Total commands the server has executed, INFO excluded."""
    import redis

    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_hello"))


def median_ns(run: Callable[[int], None], n: int, rounds: int) -> float:
    samples = []
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            run(n)
            samples.append((time.perf_counter_ns() - t0) / n)
    finally:
        gc.enable()
    return statistics.median(samples)


def sync_loop(call: Callable[..., Any], fn: Callable[[], Any]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            call(fn)

    return run


def async_loop(call: Callable[..., Any], fn: Callable[[], Any]) -> Callable[[int], None]:
    async def body(n: int) -> None:
        for _ in range(n):
            await call(fn)

    return lambda n: asyncio.run(body(n))


def tolerant(run: Callable[[int], None], n: int) -> tuple[float, int]:
    """ns per call and number of exceptions raised to the caller (Redis down)."""
    errors = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        try:
            run(1)
        except Exception:
            errors += 1
    return (time.perf_counter_ns() - t0) / n, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- redis-server


class Server:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server not found (run `make sysdeps`)")
        self.exe = exe
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        sys.exit("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --------------------------------------------------------------------------- ours


def ours(url: str, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from resilience import BreakerConfig, CircuitOpenError, MemoryStore
    from resilience._breaker import PersistentCircuitBreaker
    from resilience._redis_store import RedisStore

    logging.getLogger("resilience").setLevel(logging.ERROR)
    cfg = BreakerConfig(failure_threshold=THRESHOLD, failure_rate_threshold=None, reset_timeout_s=RESET_S)
    out: dict[str, Any] = {}
    memory = PersistentCircuitBreaker("mem", cfg, MemoryStore())
    store = RedisStore(url, prefix="bench-ours")
    assert store.wait_connected(5)
    shared = PersistentCircuitBreaker("shared", cfg, store)
    n, rounds = args.n_ours, args.rounds
    before = commands(url)
    t0 = time.monotonic()
    out["memory_sync_ns"] = median_ns(sync_loop(memory.call_sync, work), n, rounds)
    out["redis_sync_ns"] = median_ns(sync_loop(shared.call_sync, work), n, rounds)
    out["memory_async_ns"] = median_ns(async_loop(memory.call, awork), n, rounds)
    out["redis_async_ns"] = median_ns(async_loop(shared.call, awork), n, rounds)
    # Sustained load long enough for several refresh and flush periods.
    calls = 4 * n * rounds
    while time.monotonic() - t0 < 3.0:
        sync_loop(shared.call_sync, work)(n)
        calls += n
    time.sleep(1.2)  # let the last flush happen
    out["redis_commands"] = commands(url) - before
    out["redis_calls"] = calls - 2 * n * rounds  # memory-store calls do not count
    out["commands_per_call"] = out["redis_commands"] / out["redis_calls"]
    out["trip_ms"] = trip_propagation_ours(url, args.trips, "io")
    out["trip_spin_ms"] = trip_propagation_ours(url, args.trips, "spin")

    # Redis down: stop the server; closed-state successes, and rejections once tripped.
    server.stop()
    deadline = time.monotonic() + 3
    while store.connected and time.monotonic() < deadline:
        try:
            shared.call_sync(boom)
        except Boom:
            pass
        shared.reset_sync()  # a store write: notices the outage
    _, down_errors = tolerant(sync_loop(shared.call_sync, work), n)  # counts exceptions
    out["down_sync_ns"] = median_ns(sync_loop(shared.call_sync, work), n, rounds)
    out["down_memory_sync_ns"] = median_ns(sync_loop(memory.call_sync, work), n, rounds)
    out["down_errors"] = down_errors
    rejected = 0
    for _ in range(THRESHOLD):
        try:
            shared.call_sync(boom)
        except Boom:
            pass
    for _ in range(1000):
        try:
            shared.call_sync(work)
        except CircuitOpenError:
            rejected += 1
    out["down_trip_local"] = rejected == 1000
    server.start()
    t_up = time.monotonic()
    store.wait_connected(5)
    out["recovery_s"] = time.monotonic() - t_up
    store.close()
    return out


LISTENER = r"""
import logging, sys, time
logging.disable(logging.CRITICAL)
sys.path.insert(0, sys.argv[3])
from resilience import BreakerConfig, CircuitOpenError
from resilience._breaker import PersistentCircuitBreaker
from resilience._redis_store import RedisStore
store = RedisStore(sys.argv[1], prefix=sys.argv[2])
assert store.wait_connected(5)
cfg = BreakerConfig(failure_threshold=5, failure_rate_threshold=None, reset_timeout_s=3600.0)
b = PersistentCircuitBreaker("trip", cfg, store)
io = sys.argv[4] == "io"
print("ready", flush=True)
for line in sys.stdin:
    while b.state.value != "closed":
        time.sleep(0.0005)
    print("polling", flush=True)
    while True:
        try:
            b.call_sync(int)
        except CircuitOpenError:
            print(time.time_ns(), flush=True)
            break
        if io:
            time.sleep(0.0002)  # an app serving requests waits on I/O between calls
store.close()
"""


def trip_propagation_ours(url: str, trips: int, mode: str) -> list[float]:
    """Trip here; the other process calls in a busy loop (``spin``) or between 200 us waits (``io``)."""
    from resilience import BreakerConfig
    from resilience._breaker import PersistentCircuitBreaker
    from resilience._redis_store import RedisStore

    child = subprocess.Popen(
        [sys.executable, "-c", LISTENER, url, "bench-trip-" + mode, str(ROOT), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    store = RedisStore(url, prefix="bench-trip-" + mode)
    assert store.wait_connected(5)
    cfg = BreakerConfig(failure_threshold=1, failure_rate_threshold=None, reset_timeout_s=RESET_S)
    breaker = PersistentCircuitBreaker("trip", cfg, store)
    latencies = []
    for _ in range(trips):
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "polling"
        time.sleep(0.002)
        t0 = time.time_ns()
        try:
            breaker.call_sync(boom)
        except Boom:
            pass
        latencies.append((int(child.stdout.readline()) - t0) / 1e6)
        breaker.reset_sync()
    child.stdin.close()
    child.wait(5)
    store.close()
    return latencies


# --------------------------------------------------------------------------- peers (bench venv)


def peers(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the bench venv: pybreaker, aiobreaker and purgatory on the same Redis."""
    import redis

    out: dict[str, Any] = {}
    n, rounds = args.n_peers, args.rounds

    def measure(name: str, run: Callable[[int], None]) -> None:
        before = commands(url)
        ns = median_ns(run, n, rounds)
        out[name] = {"ns": ns, "commands_per_call": (commands(url) - before) / (n * rounds)}

    # pybreaker: CircuitRedisStorage (sync only)
    import pybreaker

    pyb_redis = redis.Redis.from_url(url)
    pyb = pybreaker.CircuitBreaker(
        fail_max=THRESHOLD,
        reset_timeout=RESET_S,
        state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, pyb_redis, namespace="bench-pyb"),
    )
    measure("pybreaker", sync_loop(pyb.call, work))

    # aiobreaker: its CircuitRedisStorage takes a (blocking) redis client, even for call_async
    from datetime import timedelta

    import aiobreaker
    from aiobreaker.state import CircuitBreakerState
    from aiobreaker.storage.redis import CircuitRedisStorage as AioRedisStorage

    aio_redis = redis.Redis.from_url(url)
    aio = aiobreaker.CircuitBreaker(
        fail_max=THRESHOLD,
        timeout_duration=timedelta(seconds=RESET_S),
        state_storage=AioRedisStorage(CircuitBreakerState.CLOSED, aio_redis, namespace="bench-aio"),
    )
    measure("aiobreaker", async_loop(aio.call_async, awork))

    # purgatory: async Redis mode
    import purgatory

    async def purg_run(n: int) -> None:
        factory = purgatory.AsyncCircuitBreakerFactory(
            default_threshold=THRESHOLD, default_ttl=RESET_S, uow=purgatory.AsyncRedisUnitOfWork(url)
        )
        await factory.initialize()
        for _ in range(n):
            async with await factory.get_breaker("bench-purg"):
                await awork()
        await factory.uow.contexts.redis.aclose()

    measure("purgatory", lambda n: asyncio.run(purg_run(n)))
    # pybreaker: trip propagation to another "process" is one storage read away: every call reads Redis.
    return out


def peers_down(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Per-call cost and exceptions to callers with the Redis server gone."""
    import redis

    out: dict[str, Any] = {}
    n = args.n_down
    import pybreaker

    pyb = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=RESET_S)
    try:
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, redis.Redis.from_url(url), namespace="d")
        pyb = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=RESET_S, state_storage=storage)
        ns, errors = tolerant(sync_loop(pyb.call, work), n)
        out["pybreaker"] = {"ns": ns, "errors": errors, "calls": n}
    except Exception as exc:
        out["pybreaker"] = {"construct_error": type(exc).__name__}
    try:
        from datetime import timedelta

        import aiobreaker
        from aiobreaker.state import CircuitBreakerState
        from aiobreaker.storage.redis import CircuitRedisStorage as AioRedisStorage

        storage2 = AioRedisStorage(CircuitBreakerState.CLOSED, redis.Redis.from_url(url), namespace="d")
        aio = aiobreaker.CircuitBreaker(
            fail_max=THRESHOLD, timeout_duration=timedelta(seconds=RESET_S), state_storage=storage2
        )
        ns, errors = tolerant(async_loop(aio.call_async, awork), n)
        out["aiobreaker"] = {"ns": ns, "errors": errors, "calls": n}
    except Exception as exc:
        out["aiobreaker"] = {"construct_error": type(exc).__name__}
    import purgatory

    factory = purgatory.AsyncCircuitBreakerFactory(
        default_threshold=THRESHOLD, default_ttl=RESET_S, uow=purgatory.AsyncRedisUnitOfWork(url)
    )

    async def purg_one(n: int) -> None:
        for _ in range(n):
            async with await factory.get_breaker("d"):
                await awork()

    ns, errors = tolerant(lambda n: asyncio.run(purg_one(n)), n)
    out["purgatory"] = {"ns": ns, "errors": errors, "calls": n}
    return out


def run_peers(args: argparse.Namespace, url: str, down: bool) -> dict[str, Any]:
    python = args.bench_python
    if not Path(python).exists():
        return {"skipped": f"{python} not found (make .venv-bench/.installed)"}
    cmd = [python, str(Path(__file__).resolve()), "--peer", "down" if down else "up", "--url", url]
    cmd += ["--n-peers", str(args.n_peers), "--n-down", str(args.n_down), "--rounds", str(args.rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("PEER_JSON "):
            return dict(json.loads(line[len("PEER_JSON ") :]))
    return {"skipped": f"peer run failed: {proc.stderr.strip().splitlines()[-1:]}"}


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-python", default=str(ROOT / ".venv-bench/bin/python"))
    parser.add_argument("--trips", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-ours", type=int, default=100_000)
    parser.add_argument("--n-peers", type=int, default=1_000)
    parser.add_argument("--n-down", type=int, default=300)
    parser.add_argument("--peer", choices=["up", "down"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        logging.disable(logging.CRITICAL)
        result = peers(args.url, args) if args.peer == "up" else peers_down(args.url, args)
        print("PEER_JSON " + json.dumps(result))
        return

    server = Server()
    server.start()
    try:
        peer = run_peers(args, server.url, down=False)
        mine = ours(server.url, server, args)
        server.stop()
        peer_down = run_peers(args, server.url, down=True)
    finally:
        server.stop()
    report(mine, peer, peer_down)


def report(mine: dict[str, Any], peer: dict[str, Any], peer_down: dict[str, Any]) -> None:
    trips = mine["trip_ms"]
    trip_median, trip_p99 = statistics.median(trips), pct(trips, 0.99)
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}; medians of ns per call")
    print(f"{'library':<28}{'closed ns/call':>16}{'Redis cmds/call':>18}")
    print(f"{'ours in-memory (sync)':<28}{mine['memory_sync_ns']:>16.0f}{'-':>18}")
    print(f"{'ours Redis (sync)':<28}{mine['redis_sync_ns']:>16.0f}{mine['commands_per_call']:>18.5f}")
    print(f"{'ours in-memory (async)':<28}{mine['memory_async_ns']:>16.0f}{'-':>18}")
    print(f"{'ours Redis (async)':<28}{mine['redis_async_ns']:>16.0f}{'(same store)':>18}")
    for name in ("pybreaker", "aiobreaker", "purgatory"):
        cell = peer.get(name)
        if isinstance(cell, dict):
            ratio = cell["ns"] / mine["redis_sync_ns" if name == "pybreaker" else "redis_async_ns"]
            print(f"{name + ' Redis':<28}{cell['ns']:>16.0f}{cell['commands_per_call']:>18.2f}   {ratio:.0f}x ours")
    if "skipped" in peer:
        print(f"peers skipped: {peer['skipped']}")
    spin = mine["trip_spin_ms"]
    spin_median, spin_p99 = statistics.median(spin), pct(spin, 0.99)
    print(
        f"trip propagation to another process serving calls between I/O waits, {len(trips)} trips: "
        f"median {trip_median:.2f} ms, p99 {trip_p99:.2f} ms"
    )
    print(
        f"trip propagation to another process busy-looping on calls (GIL-bound), {len(spin)} trips: "
        f"median {spin_median:.2f} ms, p99 {spin_p99:.2f} ms"
    )
    print(
        f"Redis down: ours {mine['down_sync_ns']:.0f} ns/call vs in-memory {mine['down_memory_sync_ns']:.0f} "
        f"({mine['down_sync_ns'] / mine['down_memory_sync_ns']:.2f}x), exceptions {mine['down_errors']}, "
        f"local trip works: {mine['down_trip_local']}; shared state back {mine['recovery_s']:.2f} s after restart"
    )
    for name, cell in peer_down.items():
        if isinstance(cell, dict) and "ns" in cell:
            print(
                f"Redis down: {name} {cell['ns']:.0f} ns/call, exceptions to callers {cell['errors']}/{cell['calls']}"
            )
        else:
            print(f"Redis down: {name} {cell}")
    sync_ratio = mine["redis_sync_ns"] / mine["memory_sync_ns"]
    async_ratio = mine["redis_async_ns"] / mine["memory_async_ns"]
    down_ratio = mine["down_sync_ns"] / mine["down_memory_sync_ns"]
    verdicts = {
        "commands_per_call<=0.05": mine["commands_per_call"] <= 0.05,
        "cost<=2x_in_memory": max(sync_ratio, async_ratio) <= 2.0,
        "trip_p99<=10ms (I/O-bound peer)": trip_p99 <= 10.0,
        "trip_p99<=10ms (busy-looping peer)": spin_p99 <= 10.0,
        "down_cost<=2x_and_no_exceptions": down_ratio <= 2.0 and mine["down_errors"] == 0,
        "state_back<=2s": mine["recovery_s"] <= 2.0,
    }
    for target, ok in verdicts.items():
        print(f"VERDICT {target}: {'PASS' if ok else 'FAIL'}")
    result = {
        "bench": "redis",
        "ours": {k: v for k, v in mine.items() if k not in ("trip_ms", "trip_spin_ms")},
        "ratios": {
            "redis_vs_memory_sync": sync_ratio,
            "redis_vs_memory_async": async_ratio,
            "down_vs_memory": down_ratio,
        },
        "trip_ms": {"median": trip_median, "p99": trip_p99, "n": len(trips)},
        "trip_spin_ms": {"median": spin_median, "p99": spin_p99, "n": len(spin)},
        "peers": peer,
        "peers_down": peer_down,
        "verdicts": verdicts,
    }
    print("RESULT_JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
