"""Integration fixtures: a private ``redis-server`` on a free loopback port (never a system Redis).

``redis_server`` is shared by the session (tests isolate themselves with a unique key prefix, never
FLUSHDB); ``own_redis`` is a server of the test's own, for tests that stop and restart it. Both run
with persistence off, so a restart loses every key, as a crashed cache would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resilience._redis_store import RedisStore
from resilience.clock import Clock

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout_s: float = 3.0, what: str = "condition") -> None:
    """Poll ``predicate`` every millisecond until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.001)


class RedisServer:
    """One ``redis-server`` process on a fixed port that tests may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (run `make sysdeps`)")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (persistence off) and wait until it answers PING."""
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", str(self.workdir), "--logfile", "", *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the server (SIGKILL: clients see their connections drop, as in a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        """Kill and start again on the same port, with no data."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole session; isolate keys with the ``prefix`` fixture."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test only, which it may stop and restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return f"t{uuid.uuid4().hex[:12]}"


StoreFactory = Callable[..., RedisStore]


@pytest.fixture
def make_store(prefix: str) -> Iterator[StoreFactory]:
    """Build RedisStores (closed at teardown); each call is a separate 'instance' of the app."""
    stores: list[RedisStore] = []

    def make(url: str, clock: Clock | None = None, *, connect: bool = True, **kwargs: object) -> RedisStore:
        kwargs.setdefault("min_backoff_s", 0.02)
        kwargs.setdefault("max_backoff_s", 0.2)
        store = RedisStore(url, prefix=prefix, clock=clock, **kwargs)  # type: ignore[arg-type]
        stores.append(store)
        if connect:
            assert store.wait_connected(5.0), f"store did not connect to {url}"
        return store

    yield make
    for store in stores:
        store.close()
