"""RedisStore: breaker state shared by every app instance through one Redis (the only module importing redis).

What is shared, and what is not
    The breaker decides every call from its local view of the shared :class:`Snapshot`; the store is
    only asked when state may change (a trip, OPEN -> HALF_OPEN, a trial permit, a trial outcome, a
    manual override). So the closed-state success path never waits on Redis. Each instance counts its
    own outcomes: "N consecutive failures" and "failure rate over the window" are judged **per
    instance** over the calls that instance made; the resulting trip is fleet-wide (every instance
    rejects). With k instances behind a balancer, a dependency that fails every call trips the fleet
    as soon as the first instance has seen its own N failures. Outcome counts are also flushed in
    batches (one pipeline per ``flush_interval_s`` per active breaker) into fleet-wide totals
    (:meth:`RedisStore.fleet_counts`): observability only, they never decide a trip.

Freshness (staleness bound)
    Every applied change is PUBLISHed by the same Lua script that writes it, tagged with the writer's
    instance id; a subscriber thread (own connection, blocking reads) delivers snapshots of *other*
    instances to the attached breakers, typically within a millisecond (about one 5 ms GIL switch
    interval when the receiving process is CPU-bound in Python). Pub/sub over one TCP connection
    loses nothing while the connection lives, and a dropped connection triggers a full reconcile;
    as a further safety net a ticker thread re-reads the state of every attached breaker each
    ``refresh_interval_s`` (default 5 s). While Redis is reachable a local view is therefore at most
    ``refresh_interval_s`` + ``socket_timeout_s`` stale even if a message were lost. The ticker wakes
    only when that re-read or a count flush is due (or a call path saw Redis fail): every wake-up
    competes for the GIL with the subscriber. A breaker also never trusts a stale view for a
    decision that matters: a stale transition loses the compare-and-set and adopts the winner.

Atomic decisions (Lua, text defined once, registered once per client)
    - transition: applied iff the stored version is <= the caller's expected version (an absent key
      is version 0; a stored version below the caller's means Redis lost or missed newer state, which
      the caller's view supersedes). Otherwise the stored (newer) snapshot is returned and adopted.
      Versions only: no client timestamp is compared.
    - trial permits: at most ``max_calls`` live leases per half-open period (= snapshot version),
      fleet-wide; a lease expires ``lease_ms`` after it was taken **by Redis's clock** (``TIME`` in
      the script), so a dead holder's permit frees itself and a skewed client can neither steal nor
      extend one. The ``now_ms`` argument is used only by the local fallback.

Clock model
    Redis's clock is the fleet clock. Deadlines in a snapshot (``opened_until_ms``, ``changed_at_ms``)
    are stored in Redis server milliseconds and translated at the store boundary into the local
    clock: at every (re)connect the store measures the offset between its clock's ``monotonic()``
    and Redis ``TIME`` (midpoint of the round trip), so a process whose wall clock is seconds off
    still agrees with the fleet, to within a round trip, on when an open period ends. (Monotonic time
    does not step, so the offset survives wall-clock corrections until the next reconnect.)

Redis unavailable (at start or mid-run)
    Store methods never raise. A failed command or a lost subscriber connection marks the store down:
    one warning per outage (``resilience.redis_unavailable``), and from then on every call path goes
    straight to local state (no connection attempt per call): transitions are a compare-and-set on
    the last known snapshots, trial permits come from an in-process :class:`MemoryStore` (their
    tokens are negative, so they are returned where they came from). The background thread retries
    with exponential backoff (``min_backoff_s`` .. ``max_backoff_s``, default 0.05 .. 1 s).

Recovery and reconcile rule
    On reconnect the thread resubscribes, then reconciles every attached breaker atomically (Lua)
    before marking the store up and logging one ``resilience.redis_recovered`` line. A breaker whose
    local view did not change since it last agreed with Redis (it merely missed messages) adopts
    what Redis holds, so a stale view never undoes what the fleet did meanwhile. Otherwise: the more
    restrictive state wins (FORCED_OPEN > OPEN > HALF_OPEN > CLOSED > DISABLED); for the same state,
    the higher version wins (the stored one on a tie). The winner is written with a version above
    both sides and published, so every instance adopts it; so a breaker that opened locally during
    the outage opens the fleet, and a manual reset made during the outage must be repeated. A later
    refresh that finds the stored state missing (Redis restarted without persistence, key expired)
    or older than the local view runs the same reconcile, which restores the shared state.

Key layout (one Redis Cluster hash slot per breaker: the name is the hash tag)
    ``{prefix}:cb:{<name>}``          hash: v (version), s (snapshot JSON, server time), r (rank), w (writer)
    ``{prefix}:cb:{<name>}:trials``   hash: v (half-open version), n (token counter), ok (successes),
                                      t:<token> (lease expiry, Redis ms)
    ``{prefix}:cb:{<name>}:counts``   hash: successes, failures, rejections (fleet totals, observability)
    ``{prefix}:cb:events``            pub/sub channel: ``<version>\\n<instance>\\n<name>\\n<snapshot JSON>``
    Every write sets a TTL of ``ttl_s`` (default one day), refreshed by each write and by each flush
    of an active breaker's counts, so the keys of a breaker nobody uses any more expire.

Threads: call paths run in the callers' threads/tasks (sync client, or one redis.asyncio client per
event loop); the background thread owns the subscriber connection, the refresh, the flush and the
reconnects. ``_lock`` guards the known snapshots, listeners and health fields, never I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._state import CircuitState, Snapshot
from ._store import MemoryStore, RemoteListener, StoreHealth
from .clock import Clock, SystemClock

__all__ = ["RedisStore"]

logger = logging.getLogger("resilience")

DEFAULT_SOCKET_TIMEOUT_S: Final = 0.25
DEFAULT_REFRESH_INTERVAL_S: Final = 5.0
DEFAULT_FLUSH_INTERVAL_S: Final = 5.0
DEFAULT_TTL_S: Final = 86_400.0
DEFAULT_MIN_BACKOFF_S: Final = 0.05
DEFAULT_MAX_BACKOFF_S: Final = 1.0
_TICK_S: Final = 0.05  # how often the ticker looks while the subscriber is reconnecting

# Restrictiveness used by the reconcile rule: the more restrictive state wins.
_RANK: Final = {
    CircuitState.DISABLED: 0,
    CircuitState.CLOSED: 1,
    CircuitState.HALF_OPEN: 2,
    CircuitState.OPEN: 3,
    CircuitState.FORCED_OPEN: 4,
}

# KEYS[1] state hash. ARGV: expected version, new version, snapshot JSON, rank, instance, ttl ms,
# channel, name. Applied iff stored version <= expected (absent = 0); returns {1} or {0, v, s}.
_CAS_LUA: Final = """
local cur = redis.call('HMGET', KEYS[1], 'v', 's')
local v = tonumber(cur[1]) or 0
if v <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'r', ARGV[4], 'w', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PUBLISH', ARGV[7], ARGV[2] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[8] .. '\\n' .. ARGV[3])
  return {1}
end
return {0, cur[1], cur[2]}
"""

# KEYS[1] state hash. ARGV: local version, local JSON, local rank, instance, ttl ms, channel, name.
# The reconcile rule of the module docstring; returns {1, v, s} when it wrote, {0, v, s} otherwise.
_RECONCILE_LUA: Final = """
local cur = redis.call('HMGET', KEYS[1], 'v', 's', 'r')
local lv = tonumber(ARGV[1])
local lr = tonumber(ARGV[3])
local rv = tonumber(cur[1])
local v, s, r
if rv == nil then
  v, s, r = lv, ARGV[2], lr
else
  local rr = tonumber(cur[3]) or 0
  if lr > rr or (lr == rr and lv > rv) then
    v, s, r = math.max(lv, rv + 1), ARGV[2], lr
  elseif rv > lv or lr == rr then
    return {0, cur[1], cur[2]}
  else
    v, s, r = lv + 1, cur[2], rr
  end
end
redis.call('HSET', KEYS[1], 'v', v, 's', s, 'r', r, 'w', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], v .. '\\n' .. ARGV[4] .. '\\n' .. ARGV[7] .. '\\n' .. s)
return {1, tostring(v), s}
"""

# KEYS[1] trials hash. ARGV: half-open version, max calls, lease ms, ttl ms. Returns a token (> 0),
# or 0 when every permit is taken or the period is already over (a newer version holds the key).
_ACQUIRE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ver = tonumber(ARGV[1])
local sv = tonumber(redis.call('HGET', KEYS[1], 'v'))
if sv ~= nil and sv > ver then return 0 end
if sv == nil or sv < ver then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'v', ver, 'n', 0, 'ok', 0)
end
local live = 0
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if string.sub(h[i], 1, 2) == 't:' then
    if tonumber(h[i + 1]) <= now then redis.call('HDEL', KEYS[1], h[i]) else live = live + 1 end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if live >= tonumber(ARGV[2]) then return 0 end
local tok = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 't:' .. tok, math.floor(now + tonumber(ARGV[3])))
return tok
"""

# KEYS[1] trials hash. ARGV: version, token, outcome (1 success, 0 failure, -1 nothing). A success
# counts only if the lease was still live by Redis's clock. Returns the successes of that period.
_FINISH_LUA: Final = """
if tonumber(redis.call('HGET', KEYS[1], 'v')) ~= tonumber(ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = 't:' .. ARGV[2]
local exp = tonumber(redis.call('HGET', KEYS[1], f))
if exp ~= nil then redis.call('HDEL', KEYS[1], f) end
if exp ~= nil and exp > now and ARGV[3] == '1' then return redis.call('HINCRBY', KEYS[1], 'ok', 1) end
return tonumber(redis.call('HGET', KEYS[1], 'ok')) or 0
"""

_OUTCOME_ARG: Final = {True: 1, False: 0, None: -1}


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and status pages).

    redis-py also reads a ``?password=`` query parameter, so that one is hidden too.
    """
    parts = urlsplit(url)
    pairs = parts.query.split("&") if parts.query else []
    secret = [p.partition("=")[0].lower() == "password" for p in pairs]
    if parts.password is None and not any(secret):
        return url  # untouched (urlunsplit would also rewrite unix:///path as unix:/path)
    if any(secret):
        hidden = [f"{p.partition('=')[0]}=***" if s else p for p, s in zip(pairs, secret, strict=True)]
        parts = parts._replace(query="&".join(hidden))
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return urlunsplit(parts)


@dataclass(slots=True)
class _Tracked:
    """Where a breaker's cumulative outcome counts are read from, and what was flushed already."""

    listener: RemoteListener
    metrics: Callable[[], dict[str, Any]]
    flushed: tuple[int, int, int] = (0, 0, 0)


class _RespReader:
    """Incremental parser of the pub/sub frames of RESP2 (arrays) and RESP3 (pushes).

    ``feed`` yields ``(kind, payload)`` for every complete ``[kind, channel, payload]`` frame, e.g.
    ``(b"message", data)`` or ``(b"subscribe", b"1")``; incomplete frames wait for more bytes.
    """

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        frames: list[tuple[bytes, bytes]] = []
        while self.buf:
            parsed = self._parse(0)
            if parsed is None:
                break
            item, end = parsed
            del self.buf[:end]
            if isinstance(item, list) and len(item) == 3:
                kind, payload = item[0], item[2]
                frames.append((bytes(kind), payload if isinstance(payload, bytes) else str(payload).encode()))
        return frames

    def _parse(self, pos: int) -> tuple[Any, int] | None:
        buf = self.buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        kind, line, pos = bytes(buf[pos : pos + 1]), bytes(buf[pos + 1 : end]), end + 2
        if kind in (b"*", b">"):
            items = []
            for _ in range(int(line)):
                parsed = self._parse(pos)
                if parsed is None:
                    return None
                item, pos = parsed
                items.append(item)
            return items, pos
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                return None
            return bytes(buf[pos : pos + size]), pos + size + 2
        if kind == b"-":
            raise redis.ResponseError(line.decode(errors="replace"))
        return line, pos  # ':' integer, '+' simple string: kept as bytes


class RedisStore:
    """Breaker state shared through Redis; see the module docstring for the semantics.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix:///path?db=N``.
        prefix: key namespace (``{prefix}:cb:{name}``).
        clock: the breakers' clock (deadline translation, local fallback); default SystemClock.
        socket_timeout_s: connect and command timeout of every Redis call.
        refresh_interval_s: bounded-staleness re-read of every attached breaker's state.
        flush_interval_s: how often outcome counts are added to the fleet totals.
        ttl_s: expiry of every key, refreshed by writes and by activity.
        min_backoff_s, max_backoff_s: reconnect backoff while Redis is down.
        instance_id: tag of this instance's published changes (default: host-pid-random).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "resilience",
        clock: Clock | None = None,
        socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        ttl_s: float = DEFAULT_TTL_S,
        min_backoff_s: float = DEFAULT_MIN_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        instance_id: str | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.instance_id = instance_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._timeout_s = socket_timeout_s
        self._refresh_s = refresh_interval_s
        self._flush_s = flush_interval_s
        self._ttl_ms = int(ttl_s * 1000)
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._channel = f"{prefix}:cb:events"
        self._client_kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s,
            "health_check_interval": 0,
        }
        # No retries inside redis-py: a failed command marks the store down at once instead of
        # making the caller wait for reconnect attempts with backoff.
        self._client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._client_kwargs)
        # The subscriber reads with a blocking socket (no timeout): one GIL hand-off per message
        # instead of two (poll, then recv) when the app's threads keep the interpreter busy. A dead
        # peer is noticed by TCP (keepalive, reset) or by the ticker's commands failing. The timeout
        # holds for the handshake (HELLO, AUTH, SELECT) only, where no socket is there to wake yet.
        self._sub_client = redis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=0,
            **({} if url.startswith("unix:") else {"socket_keepalive": True}),  # TCP only
        )
        self._sub_sock: socket.socket | None = None
        self._cas = self._client.register_script(_CAS_LUA)
        self._reconcile = self._client.register_script(_RECONCILE_LUA)
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._finish = self._client.register_script(_FINISH_LUA)

        self._lock = threading.Lock()
        self._known: dict[str, Snapshot] = {}  # newest snapshot seen per name, in local time
        # Version of the last snapshot taken from Redis per name: a known version above it is a change made
        # locally while Redis was out of reach; one at or below it is merely what Redis said last.
        self._synced: dict[str, int] = {}
        self._listeners: dict[str, list[RemoteListener]] = {}
        self._tracked: dict[str, list[_Tracked]] = {}
        self._fallback = MemoryStore()  # trial permits while Redis is down
        self._offset_ms: float | None = None  # Redis ms - local monotonic ms, measured at connect
        self._up = False
        self._ever_up = False
        self._down_since: float | None = None
        self._outages = 0
        self._last_error = ""
        self._recheck = threading.Event()  # set by a call path that saw Redis fail
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"resilience-redis-sub-{prefix}", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name=f"resilience-redis-tick-{prefix}", daemon=True)
        self._thread.start()
        self._ticker.start()

    def __repr__(self) -> str:
        return f"<RedisStore {redact_url(self.url)} prefix={self.prefix!r} {'up' if self._up else 'down'}>"

    # ------------------------------------------------------------------ keys and codecs

    def _key(self, name: str) -> str:
        return f"{self.prefix}:cb:{{{name}}}"

    def _to_server(self, snap: Snapshot) -> str:
        """Snapshot JSON with its deadlines in Redis time (the version lives in the hash field ``v``)."""
        data = snap.to_dict()
        offset = self._offset_ms
        if offset is not None:
            shift = self._clock.monotonic() * 1000.0 + offset - self._clock.now_ms()
            for field in ("opened_until_ms", "changed_at_ms"):
                if data[field]:
                    data[field] = float(data[field]) + shift  # type: ignore[arg-type]
        del data["version"]
        return json.dumps(data, separators=(",", ":"))

    def _to_local(self, version: object, raw: object) -> Snapshot:
        data = json.loads(str(raw))
        data["version"] = int(str(version))
        snap = Snapshot.from_dict(data)
        offset = self._offset_ms
        if offset is None:
            return snap
        shift = self._clock.now_ms() - (self._clock.monotonic() * 1000.0 + offset)
        return replace(
            snap,
            opened_until_ms=snap.opened_until_ms + shift if snap.opened_until_ms else 0.0,
            changed_at_ms=snap.changed_at_ms + shift if snap.changed_at_ms else 0.0,
        )

    def _remember(self, name: str, snap: Snapshot) -> bool:
        """Keep ``snap`` (read from or written to Redis) if it is newer than the known one; True when it was."""
        with self._lock:
            known = self._known.get(name)
            if known is not None and known.version >= snap.version:
                return False
            self._known[name] = snap
            self._synced[name] = snap.version
            return True

    def _notify(self, name: str, snap: Snapshot) -> None:
        with self._lock:
            listeners = list(self._listeners.get(name, ()))
        for listener in listeners:
            try:
                listener(snap)
            except Exception:
                logger.exception("resilience.redis_listener_failed breaker=%s", name)

    # ------------------------------------------------------------------ health bookkeeping

    def _mark_down(self, exc: BaseException) -> None:
        """Record a failure; the first one of an outage logs one line and wakes the reconnect loop."""
        with self._lock:
            self._last_error = f"{type(exc).__name__}: {exc}"
            was_up = self._up
            first = was_up or self._down_since is None
            self._up = False
            if first:
                self._outages += 1
                self._down_since = time.monotonic()
        if first:
            logger.warning(
                "resilience.redis_unavailable url=%s error=%s: breakers use local state until Redis is back",
                redact_url(self.url),
                self._last_error,
                extra={"redis_url": redact_url(self.url)},
            )
        self._recheck.set()

    def _mark_up(self, reconciled: int) -> None:
        with self._lock:
            since = self._down_since
            self._down_since = None
            self._up = True
            self._ever_up = True
        if since is not None:
            logger.warning(
                "resilience.redis_recovered url=%s outage_s=%.1f reconciled=%d",
                redact_url(self.url),
                time.monotonic() - since,
                reconciled,
                extra={"redis_url": redact_url(self.url)},
            )

    def health(self) -> StoreHealth:
        """Backend health for status pages (URL with the password redacted)."""
        with self._lock:
            up, since, outages, error = self._up, self._down_since, self._outages, self._last_error
            attached = len(self._listeners)
        if up:
            detail = "connected; shared state"
        elif since is None:
            detail = "connecting; breakers use local state"
        else:
            detail = f"unreachable for {time.monotonic() - since:.1f}s; breakers use local state"
        return StoreHealth(
            kind="redis",
            healthy=up,
            detail=detail,
            extra={
                "url": redact_url(self.url),
                "prefix": self.prefix,
                "instance_id": self.instance_id,
                "outages": outages,
                "last_error": error,
                "attached_breakers": attached,
                "staleness_bound_s": self._refresh_s + self._timeout_s,
            },
        )

    def wait_connected(self, timeout_s: float = 5.0) -> bool:
        """Block until the store is up (connected, subscribed, reconciled) or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while not self._up:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    @property
    def connected(self) -> bool:
        """True while Redis is reachable and the local view is being kept fresh."""
        return self._up

    # ------------------------------------------------------------------ attach / detach

    def attach(self, name: str, listener: RemoteListener) -> Snapshot | None:
        """Register ``listener`` for changes by other instances; return the stored (or last known) snapshot.

        Reads Redis once when it is up (breakers are built once per name and process).
        """
        owner = getattr(listener, "__self__", None)
        metrics = getattr(owner, "metrics", None)
        with self._lock:
            self._listeners.setdefault(name, []).append(listener)
            if callable(metrics):
                self._tracked.setdefault(name, []).append(_Tracked(listener, metrics))
        if self._up:
            try:
                version, raw = self._client.hmget(self._key(name), ["v", "s"])
            except Exception as exc:
                self._mark_down(exc)
            else:
                if version is not None and raw is not None:
                    self._remember(name, self._to_local(version, raw))
        with self._lock:
            return self._known.get(name)

    def detach(self, name: str, listener: RemoteListener) -> None:
        """Stop sending changes of ``name`` to ``listener``."""
        with self._lock:
            listeners = self._listeners.get(name, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(name, None)
            tracked = [t for t in self._tracked.get(name, []) if t.listener != listener]
            if tracked:
                self._tracked[name] = tracked
            else:
                self._tracked.pop(name, None)

    # ------------------------------------------------------------------ transition

    def _cas_args(self, name: str, expected_version: int, new: Snapshot) -> list[Any]:
        return [
            expected_version,
            new.version,
            self._to_server(new),
            _RANK[new.state],
            self.instance_id,
            self._ttl_ms,
            self._channel,
            name,
        ]

    def _cas_result(self, name: str, new: Snapshot, result: list[Any]) -> Snapshot:
        if int(result[0]) == 1:
            self._remember(name, new)
            return new
        winner = self._to_local(result[1], result[2])
        self._remember(name, winner)
        return winner

    def _local_transition(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """The Lua rule on the last known snapshots (Redis down); reconciled when Redis is back."""
        with self._lock:
            known = self._known.get(name)
            if known is not None and known.version > expected_version:
                return known
            self._known[name] = new
            return new

    def transition_sync(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """Compare-and-set ``new`` on version in Redis (Lua) and publish it; locally while Redis is down."""
        if self._up:
            try:
                result = self._cas(keys=[self._key(name)], args=self._cas_args(name, expected_version, new))
                return self._cas_result(name, new, result)
            except Exception as exc:  # any Redis trouble: decide locally, never raise to the caller
                self._mark_down(exc)
        return self._local_transition(name, expected_version, new)

    async def transition(self, name: str, expected_version: int, new: Snapshot) -> Snapshot:
        """Async twin of :meth:`transition_sync` (redis.asyncio)."""
        if self._up:
            try:
                result = await self._eval_async(
                    _CAS_LUA, [self._key(name)], self._cas_args(name, expected_version, new)
                )
                return self._cas_result(name, new, result)
            except Exception as exc:
                self._mark_down(exc)
        return self._local_transition(name, expected_version, new)

    # ------------------------------------------------------------------ trial permits

    def acquire_trial_sync(self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float) -> int | None:
        """Take a fleet-wide trial permit leased by Redis's clock (``now_ms`` is for the local fallback)."""
        if self._up:
            try:
                token = self._acquire(
                    keys=[self._key(name) + ":trials"], args=[version, max_calls, lease_ms, self._ttl_ms]
                )
                return int(token) or None
            except Exception as exc:
                self._mark_down(exc)
        return self._local_acquire(name, version, max_calls, lease_ms, now_ms)

    async def acquire_trial(
        self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float
    ) -> int | None:
        """Async twin of :meth:`acquire_trial_sync`."""
        if self._up:
            try:
                token = await self._eval_async(
                    _ACQUIRE_LUA, [self._key(name) + ":trials"], [version, max_calls, lease_ms, self._ttl_ms]
                )
                return int(token) or None
            except Exception as exc:
                self._mark_down(exc)
        return self._local_acquire(name, version, max_calls, lease_ms, now_ms)

    def _local_acquire(self, name: str, version: int, max_calls: int, lease_ms: float, now_ms: float) -> int | None:
        token = self._fallback.acquire_trial_sync(name, version, max_calls, lease_ms, now_ms)
        return None if token is None else -token

    def finish_trial_sync(self, name: str, version: int, token: int, success: bool | None) -> int:
        """Free a permit; one taken while Redis was down (negative token) is freed locally."""
        if token < 0:
            return self._fallback.finish_trial_sync(name, version, -token, success)
        if self._up:
            try:
                return int(
                    self._finish(keys=[self._key(name) + ":trials"], args=[version, token, _OUTCOME_ARG[success]])
                )
            except Exception as exc:
                self._mark_down(exc)
        return 0  # Redis holds the permit; its lease frees it

    async def finish_trial(self, name: str, version: int, token: int, success: bool | None) -> int:
        """Async twin of :meth:`finish_trial_sync`."""
        if token < 0:
            return self._fallback.finish_trial_sync(name, version, -token, success)
        if self._up:
            try:
                result = await self._eval_async(
                    _FINISH_LUA, [self._key(name) + ":trials"], [version, token, _OUTCOME_ARG[success]]
                )
                return int(result)
            except Exception as exc:
                self._mark_down(exc)
        return 0

    # ------------------------------------------------------------------ observability

    def fleet_counts(self, name: str) -> dict[str, int]:
        """Fleet-wide outcome totals of ``name`` flushed so far (observability only; {} when unknown or down)."""
        if not self._up:
            return {}
        try:
            raw = self._client.hgetall(self._key(name) + ":counts")
        except Exception as exc:
            self._mark_down(exc)
            return {}
        return {str(field): int(value) for field, value in raw.items()}

    # ------------------------------------------------------------------ async path

    async def _eval_async(self, lua: str, keys: list[str], args: list[Any]) -> Any:
        """Run one script over a redis.asyncio connection of its own, closed right after.

        Only state changes come here (trips, trial permits), so a connection per operation costs
        nothing that matters; a client kept per event loop would instead pin every loop a library
        user ever ran, since its connections reference their loop.
        """
        client = aioredis.Redis.from_url(self.url, retry=AsyncRetry(NoBackoff(), 0), **self._client_kwargs)
        try:
            return await client.register_script(lua)(keys=keys, args=args)
        finally:
            await client.aclose()

    # ------------------------------------------------------------------ background thread

    def _run(self) -> None:
        """Subscriber thread: (re)subscribe, reconcile, then block on messages; back off while down.

        redis-py opens the connection (TLS, AUTH, unix sockets), but the messages are read from its
        socket here, one ``recv`` and a small RESP parse per message: redis-py's reader can take a
        second GIL hand-off per message, which doubles delivery time in a CPU-bound process.
        """
        backoff = self._min_backoff_s
        while not self._stop.is_set():
            connection: Any = None  # redis-py's connection classes are untyped
            try:
                connection = self._sub_client.connection_pool.make_connection()
                connection.connect()
                connection.send_command("SUBSCRIBE", self._channel)
                sock = connection._sock
                sock.settimeout(None)  # handshake done: block until a message arrives
                self._sub_sock = sock
                reader = _RespReader()
                while not self._stop.is_set():
                    data = sock.recv(65536)  # blocking: the GIL is released while nothing arrives
                    if not data:
                        raise ConnectionError("subscriber connection closed by the server")
                    for kind, payload in reader.feed(data):
                        if kind == b"message":
                            self._on_message({"type": "message", "data": payload.decode(errors="replace")})
                        elif kind == b"subscribe":
                            self._connected()  # subscribed: nothing published from now on is missed
                            backoff = self._min_backoff_s
            except Exception as exc:
                if not self._stop.is_set():
                    self._mark_down(exc)
            finally:
                self._sub_sock = None
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.disconnect()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self._max_backoff_s)

    def _wake_subscriber(self) -> None:
        """Break the subscriber's blocking read (shutdown or a suspected dead connection)."""
        sock = self._sub_sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _tick(self) -> None:
        """Ticker thread: re-check after a failed call, bounded-staleness refresh, batched count flush.

        It sleeps until the next refresh or flush is due, or until a call path reports a Redis
        failure: waking more often would make it compete for the GIL with the subscriber, which is
        what delivers trips from other instances (each extra contender can cost a 5 ms switch).
        """
        mono = time.monotonic
        next_refresh = mono() + self._refresh_s
        next_flush = mono() + self._flush_s
        while not self._stop.is_set():
            woken = self._recheck.wait(max(0.0, min(next_refresh, next_flush) - mono()))
            if self._stop.is_set():
                break
            try:
                if woken:
                    if self._sub_sock is None:
                        # The subscriber is reconnecting (with backoff) and reconciles itself.
                        self._stop.wait(_TICK_S)
                        continue
                    # A call path saw Redis fail: prove the connection works again before going up.
                    self._client.ping()
                    self._connected()
                if not self._up:
                    # Due while down with nothing reported (say, the subscriber still waits for its
                    # confirmation): check like a failed call would, instead of spinning on a past deadline.
                    self._recheck.set()
                    continue
                now = mono()
                if now >= next_refresh:
                    next_refresh = now + self._refresh_s
                    self._refresh()
                if now >= next_flush:
                    next_flush = now + self._flush_s
                    self._flush()
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._mark_down(exc)
                self._wake_subscriber()  # a partition without a reset would leave it blocked forever
        with contextlib.suppress(Exception):
            if self._up:
                self._flush()

    def _connected(self) -> None:
        """Subscribed: measure the clock offset, reconcile every attached breaker, then go up."""
        mono = self._clock.monotonic
        t0 = mono()
        seconds, micros = self._client.time()
        t1 = mono()
        self._offset_ms = seconds * 1000.0 + micros / 1000.0 - (t0 + t1) * 500.0
        self._recheck.clear()
        with self._lock:
            names = list(self._listeners.keys() | self._known.keys())
        reconciled = sum(self._reconcile_one(name) for name in names)
        self._mark_up(reconciled)

    def _reconcile_one(self, name: str) -> int:
        """Apply the reconcile rule between the local view and Redis; 1 when Redis was written."""
        with self._lock:
            local = self._known.get(name)
            synced = self._synced.get(name, 0)
        key = self._key(name)
        unknown = local is None or local.version == 0
        if local is None or local.version == 0 or local.version <= synced:
            # Nothing changed here since this instance last agreed with Redis: a stale view (missed
            # messages while disconnected) must not override what the fleet did meanwhile (say, an
            # operator's reset). Redis's view is adopted; only state Redis lost goes through the rule.
            version, raw = self._client.hmget(key, ["v", "s"])
            if version is not None and raw is not None:
                stored = self._to_local(version, raw)
                if unknown or stored.version >= synced:
                    if self._remember(name, stored):
                        self._notify(name, stored)
                    return 0
            elif unknown:
                return 0
        assert local is not None
        args: list[Any] = [local.version, self._to_server(local), _RANK[local.state], self.instance_id, self._ttl_ms]
        wrote, version, raw = self._reconcile(keys=[key], args=[*args, self._channel, name])
        snap = self._to_local(version, raw)
        if self._remember(name, snap):
            self._notify(name, snap)
        return int(wrote)

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            version, source, rest = str(message["data"]).split("\n", 2)
            name, raw = rest.rsplit("\n", 1)
            if source == self.instance_id:
                return
            snap = self._to_local(version, raw)
        except ValueError:
            logger.warning("resilience.redis_bad_message data=%r", message.get("data"))
            return
        if self._remember(name, snap):
            self._notify(name, snap)

    def _refresh(self) -> None:
        """Safety net for lost messages; restores state Redis lost (restart, expiry) via reconcile."""
        with self._lock:
            names = list(self._listeners)
        if not names:
            return
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self._key(name), ["v", "s"])
        for name, (version, raw) in zip(names, pipe.execute(), strict=True):
            with self._lock:
                known = self._known.get(name)
            stored_version = int(version) if version is not None and raw is not None else 0
            if known is not None and known.version > stored_version:
                self._reconcile_one(name)
            elif version is not None and raw is not None:
                snap = self._to_local(version, raw)
                if self._remember(name, snap):
                    self._notify(name, snap)

    def _flush(self) -> None:
        """Add each active breaker's new outcomes to the fleet totals; refresh its TTLs."""
        with self._lock:
            tracked = [(name, t) for name, items in self._tracked.items() for t in items]
        pipe = self._client.pipeline(transaction=False)
        pending: list[tuple[_Tracked, tuple[int, int, int]]] = []
        for name, item in tracked:
            metrics = item.metrics()
            now = (int(metrics["successes"]), int(metrics["failures"]), int(metrics["rejections"]))
            delta = [a - b for a, b in zip(now, item.flushed, strict=True)]
            if not any(delta):
                continue
            key = self._key(name)
            for field, value in zip(("successes", "failures", "rejections"), delta, strict=True):
                if value:
                    pipe.hincrby(key + ":counts", field, value)
            pipe.pexpire(key + ":counts", self._ttl_ms)
            pipe.pexpire(key, self._ttl_ms)
            pending.append((item, now))
        if pending:
            pipe.execute()
            for item, now in pending:
                item.flushed = now

    # ------------------------------------------------------------------ closing

    def _stop_thread(self) -> None:
        self._stop.set()
        self._recheck.set()  # wakes the ticker
        self._wake_subscriber()
        for thread in (self._ticker, self._thread):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=2.0)

    def close(self) -> None:
        """Stop the background thread (flushing counts once more) and close the sync connections."""
        if self._closed:
            return
        self._closed = True
        self._stop_thread()
        with self._lock:
            self._up = False
        self._client.close()
        self._sub_client.close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close` (the async path keeps no connection open)."""
        if self._closed:
            return
        await asyncio.to_thread(self.close)
