"""Two OS processes sharing one breaker through Redis: trips propagate both ways, dead trials expire."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience import BreakerConfig, CircuitOpenError, CircuitState
from resilience._breaker import PersistentCircuitBreaker
from resilience.testing import FakeClock

from .conftest import RedisServer, StoreFactory, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

CFG = BreakerConfig(failure_threshold=3, failure_rate_threshold=None, reset_timeout_s=30.0, trial_lease_s=0.3)

# The other instance: reads one command per line on stdin, answers one line on stdout.
CHILD = r"""
import sys, threading, time
from resilience import BreakerConfig, CircuitOpenError
from resilience._breaker import PersistentCircuitBreaker
from resilience._redis_store import RedisStore
from resilience.testing import FakeClock

url, prefix = sys.argv[1], sys.argv[2]
clock = FakeClock()
store = RedisStore(url, prefix=prefix, clock=clock)
assert store.wait_connected(5)
cfg = BreakerConfig(failure_threshold=3, failure_rate_threshold=None, reset_timeout_s=30.0, trial_lease_s=0.3)
breaker = PersistentCircuitBreaker("shared", cfg, store, clock)

def fail():
    raise ValueError("down")

def hang():
    print("in_trial", flush=True)
    threading.Event().wait()

print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "trip":
        for _ in range(3):
            try:
                breaker.call_sync(fail)
            except ValueError:
                pass
        print(breaker.state.value, flush=True)
    elif cmd == "wait_open":
        deadline = time.monotonic() + 3
        while breaker.state.value != "open" and time.monotonic() < deadline:
            time.sleep(0.001)
        try:
            breaker.call_sync(lambda: None)
            print("passed", flush=True)
        except CircuitOpenError:
            print("rejected", flush=True)
    elif cmd == "advance":
        clock.advance(float(args[0]))
        print("ok", flush=True)
    elif cmd == "hang_in_trial":
        breaker.call_sync(hang)
"""


class Child:
    """The other app instance, driven line by line."""

    def __init__(self, url: str, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def child(redis_server: RedisServer, prefix: str) -> Iterator[Child]:
    """A second process attached to the same breaker."""
    proc = Child(redis_server.url, prefix)
    yield proc
    proc.kill()


def fail() -> None:
    raise ValueError("down")


def test_trip_here_rejects_there(redis_server: RedisServer, make_store: StoreFactory, child: Child) -> None:
    """This process trips the breaker; the other process then rejects calls."""
    clock = FakeClock()
    breaker = PersistentCircuitBreaker("shared", CFG, make_store(redis_server.url, clock), clock)
    for _ in range(3):
        with pytest.raises(ValueError):
            breaker.call_sync(fail)
    assert child.ask("wait_open") == "rejected"


def test_trip_there_rejects_here(redis_server: RedisServer, make_store: StoreFactory, child: Child) -> None:
    """The other process trips the breaker; this process then rejects calls."""
    clock = FakeClock()
    breaker = PersistentCircuitBreaker("shared", CFG, make_store(redis_server.url, clock), clock)
    assert child.ask("trip") == "open"
    wait_until(lambda: breaker.state is CircuitState.OPEN, what="remote trip")
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: 1)


def test_killed_trial_holder_frees_permit(redis_server: RedisServer, make_store: StoreFactory, child: Child) -> None:
    """A process killed during its half-open trial does not wedge the breaker: its lease expires."""
    clock = FakeClock()
    breaker = PersistentCircuitBreaker("shared", CFG, make_store(redis_server.url, clock), clock)
    assert child.ask("trip") == "open"
    wait_until(lambda: breaker.state is CircuitState.OPEN, what="remote trip")
    clock.advance(30.0)
    assert child.ask("advance 30") == "ok"
    assert child.ask("hang_in_trial") == "in_trial"
    wait_until(lambda: breaker.state is CircuitState.HALF_OPEN, what="remote half-open")
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: 1)  # the only permit is held by the other process
    child.kill()
    time.sleep(0.35)  # the 0.3 s lease runs on Redis's clock
    assert breaker.call_sync(lambda: 2) == 2
    assert breaker.state is CircuitState.CLOSED
